"""What makes a training run that run: one frozen value, stored in every checkpoint, matched on resume.

A run is fixed by its model, dataset (which picks the default hyperparameters), hyperparameters,
channels, latent size, seed, batch size, precision and images (their count and a fingerprint of a
sample of rows, :func:`data_fingerprint`). :meth:`RunIdentity.state` is what a checkpoint's JSON holds
under these names (format 1: the keys are part of the on-disk format), and
:meth:`RunIdentity.check_checkpoint` refuses a checkpoint of another run, naming the first field
that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError, InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from .inputs import check_int
from .precision import arithmetic
from .zoo import hyperparameters, model_spec

# Number of generative factors, the default latent size when the images are a bare array.
DATASET_FACTORS = {"dsprites": 5, "shapes3d": 6}

# Seeds go to ``torch.Generator.manual_seed`` (64-bit); non-negative signed 64-bit is portable.
SEED_MAX = 2**63 - 1

# Rows of the image array hashed by :func:`data_fingerprint`.
FINGERPRINT_ROWS = 4096


#: ``transform(images uint8 [n, H, W, C], indices int64 [n]) -> images``: what a run applies to
#: each gathered batch (e.g. a perturbation computed on the fly instead of held in memory).
BatchTransform = Callable[[np.ndarray, np.ndarray], np.ndarray]


def apply_transform(
    transform: BatchTransform, images: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """``transform(images, indices)``, checked to return uint8 images of the input's shape."""
    out = transform(images, indices)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != images.shape:
        got = (
            f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        )
        raise InvalidArgumentError(
            f"transform must return uint8 images {list(images.shape)} like its input, got {got}"
        )
    return out


def data_fingerprint(
    array: np.ndarray, rows: int = FINGERPRINT_ROWS, transform: BatchTransform | None = None
) -> str:
    """A blake2b hex digest of ``array``'s dtype, shape and a strided sample of ≤ ``rows`` rows
    (``transform``ed if given: the same digest as the transformed array held in memory).

    The sample is spread evenly over the whole array (first and last rows included), so it costs
    milliseconds even for a 3–6 GB grid. It is a sample, not a full hash: it tells apart arrays
    whose sampled rows differ (e.g. an image set and its complement, or one dataset and another of
    the same shape), not arrays that differ only in rows it skips.
    """
    n = int(array.shape[0])
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((str(array.dtype), tuple(int(s) for s in array.shape))).encode())
    count = min(n, rows)
    index = np.unique(np.linspace(0, n - 1, count).round().astype(np.int64)) if n else []
    index = np.asarray(index, dtype=np.int64)
    sample = np.asarray(array[index])
    if transform is not None and len(index):
        sample = apply_transform(transform, sample, index)
    for row in sample:
        h.update(np.ascontiguousarray(row).data)
    return h.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What defines a run, with every default resolved; the fields are compared on resume in this
    order. ``hparams`` is never mutated (a dict so that it reads and serialises as one)."""

    model: str
    channels: int
    dataset: str
    latent_dim: int
    hparams: dict[str, float]
    seed: int
    batch_size: int
    precision: str  # a PrecisionPlan's name, e.g. "fp32" or "bf16+channels_last"
    num_images: int
    data_fingerprint: str

    @classmethod
    def resolve(
        cls,
        model: str,
        images: np.ndarray | GroundTruth,
        array: np.ndarray,
        *,
        dataset: str | None,
        hparams: Mapping[str, float] | None,
        latent_dim: int | None,
        seed: int,
        batch_size: int,
        precision: str,
        transform: BatchTransform | None = None,
    ) -> RunIdentity:
        """The identity of a run of ``model`` on ``images`` (``array`` is them as uint8).

        ``dataset`` defaults to a GroundTruth's name, else to the channels (1 → dsprites, 3 →
        shapes3d) and selects the default hyperparameters, which ``hparams`` overrides;
        ``latent_dim`` defaults to the number of factors. ``seed`` must be an integer in
        [0, 2**63 - 1].
        """
        spec = model_spec(model)
        channels = int(array.shape[3])
        if dataset is None:
            if isinstance(images, GroundTruth) and images.name in DATASET_FACTORS:
                dataset = images.name
            else:
                dataset = "dsprites" if channels == 1 else "shapes3d"
        hp = hyperparameters(spec.name, dataset, **dict(hparams or {}))
        if latent_dim is None:
            latent_dim = (
                images.num_factors if isinstance(images, GroundTruth) else DATASET_FACTORS[dataset]
            )
        return cls(
            model=spec.name,
            channels=channels,
            dataset=dataset,
            latent_dim=check_int("latent_dim", latent_dim),
            hparams=hp,
            seed=check_int("seed", seed, minimum=0, maximum=SEED_MAX),
            batch_size=check_int("batch_size", batch_size, minimum=2),
            precision=precision,
            num_images=int(array.shape[0]),
            data_fingerprint=data_fingerprint(array, transform=transform),
        )

    def state(self) -> dict[str, Any]:
        """The identity as a checkpoint's JSON stores it (one key per field)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "hparams": dict(self.hparams)
        }

    def check_checkpoint(self, state: Mapping[str, Any], path: Any, who: str = "this run") -> None:
        """Refuse a checkpoint (its JSON ``state``) of another run, naming the first field that
        differs. Precisions compare by their arithmetic: the memory layout does not make another
        run."""
        for f in dataclasses.fields(self):
            key, wanted = f.name, getattr(self, f.name)
            if key not in state:
                raise CheckpointError(
                    f"{path}: the checkpoint does not record {key} (an older or foreign format), "
                    f"so it cannot be shown to belong to {who}; use another checkpoint_dir"
                )
            stored = state[key]
            if key == "precision":
                stored, wanted = arithmetic(stored), arithmetic(wanted)
            if stored == wanted:
                continue
            if key == "data_fingerprint":
                raise CheckpointError(
                    f"{path}: the checkpoint was trained on other images than {who} gives (same "
                    f"shape, different content: data_fingerprint {str(stored)[:12]}… vs "
                    f"{str(wanted)[:12]}…); use another checkpoint_dir or the original images"
                )
            raise CheckpointError(
                f"{path}: checkpoint has {key}={stored!r} but {who} asks for {key}={wanted!r}; "
                "use another checkpoint_dir or the checkpoint's settings"
            )
