"""Training and encoding for every model of the zoo, with checkpoints and resumption.

One training step (:func:`training_step`) is shared with the stacked trainer: the VAE's Adam
minimises ``loss`` on the VAE's parameters and, for FactorVAE, the discriminator's Adam minimises
``discriminator_loss`` from the same forward pass on the discriminator's parameters only. All the
randomness of a run comes from one :class:`~.batches.BatchStream`, and the initial weights from
:func:`~.zoo.build_objective`, so a run is fixed by (model, hyperparameters, data, seed, batch size)
and a resumed run equals an uninterrupted one bitwise (CPU, fp32).

Precision: ``"fp32"`` is the exact reference; ``"fp64"`` keeps parameters, inputs and optimizer
state in float64 (slow; for checks that must not depend on float32 rounding, e.g. that a stacked
run equals its runs trained one by one on any CPU); ``"bf16"`` runs the networks (not the loss
terms) under bfloat16 autocast; ``"auto"`` picks per device what measured fastest while staying
close to fp32: on the CPU fp32 arithmetic (bf16, channels-last and torch.compile measured no faster
on our CPU), on a GPU bf16 autocast with channels-last (see :data:`AUTO_PRECISION` and
``benchmarks/bench_training.py``).

Threads: CPU results differ in the last bits between thread counts, so a seed fixes the result for
a given thread count: torch's current count, or ``num_threads``. ``probe=True`` instead times 1
thread against torch's count on a throwaway copy and keeps the faster (:func:`probe_threads`): the
probe trades that reproducibility for speed on a shared machine. A resumed run reuses the thread
count its checkpoint stored (unless ``num_threads`` is given), so it continues bitwise.

Resuming checks that the checkpoint belongs to the same run (:data:`RESUME_KEYS`): model, dataset,
hyperparameters, sizes, seed, batch size, precision and a fingerprint of the images
(:func:`data_fingerprint`, a hash of a sample of rows), so a run is never continued on other data.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .batches import Batch, BatchStream, images_to_input
from .errors import CheckpointError, DataFormatError, InvalidArgumentError, TrainingDivergedError
from .ground_truth import GroundTruth
from .models import IMAGE_SIZE, VAE
from .zoo import Objective, build_objective, hyperparameters, model_spec

# Adam settings of disentanglement_lib (SPEC §5); the discriminator's are FactorVAE's.
VAE_ADAM = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}
DISCRIMINATOR_ADAM = {"lr": 1e-4, "betas": (0.5, 0.9), "eps": 1e-8}

# Number of generative factors, the default latent size when the images are a bare array.
DATASET_FACTORS = {"dsprites": 5, "shapes3d": 6}

PRECISIONS = ("auto", "fp32", "bf16", "fp64")
ENCODE_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class PrecisionPlan:
    """How a run computes: autocast dtype for the networks (None = none), memory format, and the
    dtype of parameters, inputs and optimizer state."""

    name: str
    autocast_dtype: torch.dtype | None
    channels_last: bool
    dtype: torch.dtype = torch.float32


# What ``precision="auto"`` means per device type. On our CPU (Xeon, avx512_bf16 but no AMX)
# bf16 autocast, channels-last and torch.compile measured no faster than plain fp32 (see
# benchmarks/bench_training.py and the README), so the CPU keeps exact fp32 arithmetic and gains
# its speed from the thread probe (:func:`probe_threads`); GPUs use bf16 autocast.
AUTO_PRECISION = {
    "cpu": PrecisionPlan("fp32", None, False),
    "cuda": PrecisionPlan("bf16+channels_last", torch.bfloat16, True),
}


def resolve_precision(precision: str, device: torch.device) -> PrecisionPlan:
    """The :class:`PrecisionPlan` for ``precision`` ("auto", "fp32", "bf16", "fp64") on
    ``device``."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp32":
        return PrecisionPlan("fp32", None, False)
    if precision == "fp64":
        return PrecisionPlan("fp64", None, False, torch.float64)
    if precision == "bf16":
        return PrecisionPlan("bf16", torch.bfloat16, device.type == "cuda")
    return AUTO_PRECISION.get(device.type, PrecisionPlan("fp32", None, False))


# --- input validation ------------------------------------------------------------------------
def as_image_array(images: np.ndarray | GroundTruth, *, name: str = "images") -> np.ndarray:
    """``images`` as a uint8 array ``[N, 64, 64, C]`` (C = 1 or 3), or a clear DataFormatError.

    A :class:`GroundTruth` gives its ``all_images()``. No copy is made unless the array has
    negative strides.
    """
    if isinstance(images, GroundTruth):
        images = images.all_images()
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise DataFormatError(
            f"{name} must be a uint8 numpy array [N, 64, 64, C] or a GroundTruth, "
            f"got {type(images).__name__}"
        )
    if images.dtype != np.uint8:
        hint = (
            " (float images: convert with (x * 255).round().astype(np.uint8))"
            if np.issubdtype(images.dtype, np.floating)
            else ""
        )
        raise DataFormatError(f"{name} must be uint8 in 0..255, got dtype {images.dtype}{hint}")
    shape = images.shape
    if images.ndim == 4 and shape[1] in (1, 3) and shape[2:] == (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{name} look channels-first (NCHW) {list(shape)}; expected channels-last "
            f"[N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] (use images.transpose(0, 2, 3, 1))"
        )
    if images.ndim == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{name} have shape {list(shape)}; expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] "
            "(add the channel axis with images[..., None])"
        )
    if images.ndim != 4 or shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or shape[3] not in (1, 3):
        raise DataFormatError(
            f"{name} must have shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] with C = 1 or 3, "
            f"got {list(shape)}"
        )
    if shape[0] == 0:
        raise DataFormatError(f"{name} is empty (0 images)")
    if any(s < 0 for s in images.strides):
        images = np.ascontiguousarray(images)
    return images


def as_source(images: np.ndarray) -> torch.Tensor:
    """A zero-copy uint8 tensor view of ``images`` (read-only arrays are never written)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)


# Rows of the image array hashed by :func:`data_fingerprint`.
FINGERPRINT_ROWS = 4096

# Seeds go to ``torch.Generator.manual_seed`` (64-bit); non-negative signed 64-bit is portable.
SEED_MAX = 2**63 - 1


def data_fingerprint(array: np.ndarray, rows: int = FINGERPRINT_ROWS) -> str:
    """A blake2b hex digest of ``array``'s dtype, shape and a strided sample of ≤ ``rows`` rows.

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
    for i in index:
        h.update(np.ascontiguousarray(array[int(i)]).data)
    return h.hexdigest()


def run_config(
    model: str,
    images: np.ndarray | GroundTruth,
    array: np.ndarray,
    *,
    dataset: str | None,
    hparams: Mapping[str, float] | None,
    latent_dim: int | None,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """What defines a run (and must match on resume), with every default resolved and checked.

    ``dataset`` defaults to a GroundTruth's name, else to the channels (1 → dsprites, 3 →
    shapes3d) and selects the default hyperparameters, which ``hparams`` overrides;
    ``latent_dim`` defaults to the number of factors. ``array`` is ``images`` as a uint8 array;
    its :func:`data_fingerprint` is part of the run. ``seed`` must be an integer in
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
    return {
        "model": spec.name,
        "dataset": dataset,
        "hparams": hp,
        "channels": channels,
        "latent_dim": check_int("latent_dim", latent_dim),
        "seed": check_int("seed", seed, minimum=0, maximum=SEED_MAX),
        "batch_size": check_int("batch_size", batch_size, minimum=2),
        "num_images": int(array.shape[0]),
        "data_fingerprint": data_fingerprint(array),
    }


# --- optimizers and the single step ----------------------------------------------------------
@dataclass
class Optimizers:
    """The VAE's Adam and, for FactorVAE, the discriminator's Adam."""

    vae: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer | None = None

    def as_dict(self) -> dict[str, torch.optim.Optimizer]:
        named = {"vae": self.vae}
        if self.discriminator is not None:
            named["discriminator"] = self.discriminator
        return named


def make_optimizers(objective: Objective) -> Optimizers:
    """dlib's optimizers: Adam(1e-4, (0.9, 0.999), 1e-8) on the VAE, Adam(1e-4, (0.5, 0.9)) on D."""
    vae = torch.optim.Adam(objective.vae_parameters(), **VAE_ADAM)
    disc_params = objective.discriminator_parameters()
    disc = torch.optim.Adam(disc_params, **DISCRIMINATOR_ADAM) if disc_params else None
    return Optimizers(vae, disc)


@contextlib.contextmanager
def network_autocast(
    objective: Objective | VAE, device_type: str, dtype: torch.dtype | None
) -> Iterator[None]:
    """Run the networks' trunks under autocast with fp32 outputs; the loss terms stay fp32.

    Autocasting the whole objective would also compute the Bernoulli cross-entropy, the KL and the
    DIP covariance (a matmul) in low precision. Instead the encoder's conv+dense trunk, the
    decoder and the discriminator run under autocast and hand fp32 tensors to the μ/log σ² heads
    and to the loss code. The forwards are patched on the instances for the duration only.
    """
    if dtype is None:
        yield
        return
    vae = objective.vae if isinstance(objective, Objective) else objective
    modules: list[nn.Module] = [vae.encoder.convs, vae.decoder]
    if isinstance(objective, Objective) and objective.discriminator is not None:
        modules.append(objective.discriminator)
    saved = []
    for module in modules:
        saved.append((module, module.__dict__.get("forward")))
        original = module.forward

        def forward(*args: Any, _original: Callable = original, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device_type, dtype=dtype):
                out = _original(*args, **kwargs)
            return out.float()

        module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                del module.forward
            else:
                module.forward = previous  # type: ignore[method-assign]


def training_step(
    objective: Objective,
    optimizers: Optimizers,
    x: torch.Tensor,
    batch: Batch,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One optimisation step on the float batch ``x``; returns the detached loss terms.

    ``loss`` is backpropagated into the VAE parameters only and ``discriminator_loss`` (FactorVAE)
    into the discriminator's only (``backward(inputs=…)``), then both optimizers step once.
    """
    device = x.device
    noise = batch.noise.to(device, x.dtype, non_blocking=True)
    permutations = batch.permutations.to(device, non_blocking=True)
    optimizers.vae.zero_grad(set_to_none=True)
    if optimizers.discriminator is not None:
        optimizers.discriminator.zero_grad(set_to_none=True)
    with network_autocast(objective, device.type, autocast_dtype):
        terms = objective(x, noise, permutations)
    has_disc = optimizers.discriminator is not None
    # FactorVAE's two losses share the discriminator pass: keep the graph for the second backward
    terms["loss"].backward(inputs=objective.vae_parameters(), retain_graph=has_disc)
    if has_disc:
        terms["discriminator_loss"].backward(inputs=objective.discriminator_parameters())
    optimizers.vae.step()
    if optimizers.discriminator is not None:
        optimizers.discriminator.step()
    return {k: v.detach() for k, v in terms.items()}


# --- CPU thread count ----------------------------------------------------------------------------
def probe_threads(
    objective: Objective,
    source: torch.Tensor,
    plan: PrecisionPlan,
    batch_size: int,
    *,
    rounds: int = 3,
) -> tuple[int, dict[int, float]]:
    """The fastest CPU thread count among {1, torch's current count}, timed on a throwaway copy.

    On a machine shared with other busy processes, OpenMP's threads wait on each other and two
    threads can be several times slower than one (measured on our 2-core box, see
    benchmarks/bench_training.py); on an idle machine all threads win. The probe trains a deep copy
    of the objective on its own batch stream, so the run itself is untouched. Returns the chosen
    count and the median seconds per step of each candidate.
    """
    current = torch.get_num_threads()
    candidates = sorted({1, current})
    if len(candidates) == 1:
        return current, {}
    probe = copy.deepcopy(objective)
    optimizers = make_optimizers(probe)
    stream = BatchStream(0, source.shape[0], batch_size, probe.vae.latent_dim)
    times: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for r in range(rounds + 1):  # round 0 warms each candidate up
            for n in candidates:
                torch.set_num_threads(n)
                batch = stream.next()
                t = time.perf_counter()
                x = images_to_input(source.index_select(0, batch.indices), plan.dtype)
                if plan.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                training_step(probe, optimizers, x, batch, autocast_dtype=plan.autocast_dtype)
                if r:
                    times[n].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(current)
    medians = {n: float(np.median(v)) for n, v in times.items()}
    return min(medians, key=medians.__getitem__), medians


# --- the training loop ----------------------------------------------------------------------
@dataclass
class TrainResult:
    """A finished run: the trained objective, its loss history and how fast it ran.

    ``history`` maps ``"step"`` (1-based) and every loss term to float64 arrays with one entry per
    step since step 1 (a resumed run includes the steps before the checkpoint). ``wall_time``,
    ``images_per_second`` and ``data_fraction`` (share of step time spent gathering and converting
    batches) cover the steps trained in this call only (not the thread probe, see ``extra``).
    ``num_threads`` is the CPU thread count the run used.
    """

    objective: Objective
    history: dict[str, np.ndarray]
    model: str
    hparams: dict[str, float]
    latent_dim: int
    seed: int
    steps: int
    start_step: int
    wall_time: float
    images_per_second: float
    data_fraction: float
    precision: str
    device: str
    checkpoint: str | None = None
    num_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return float(self.history["loss"][-1])


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} requested but CUDA is not available")
    return dev


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int, or a clear error if it is not an integer in [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgumentError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def prepare_checkpoint_dir(checkpoint_dir: str | os.PathLike, what: str = "checkpoint_dir") -> Path:
    """Create ``checkpoint_dir`` (and its parents) now, before any training, or say why not."""
    path = Path(checkpoint_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        kind = "a file, not a directory" if path.is_file() else "not a usable directory"
        raise InvalidArgumentError(
            f"{what} {str(path)!r} is {kind} ({exc.strerror or exc}); give a directory path"
        ) from exc
    return path


class _History:
    """Per-step loss terms, fetched from the device in blocks (one sync per block)."""

    def __init__(self, initial: Mapping[str, np.ndarray] | None = None) -> None:
        self.columns: dict[str, list[float]] = {
            k: list(map(float, v)) for k, v in (initial or {}).items()
        }
        self.pending: list[tuple[int, list[str], torch.Tensor]] = []

    def add(self, step: int, terms: Mapping[str, torch.Tensor]) -> None:
        names = list(terms)
        self.pending.append((step, names, torch.stack([terms[n].double() for n in names])))

    def flush(self) -> dict[str, float] | None:
        """Move pending rows to the host; raise TrainingDivergedError on the first non-finite."""
        if not self.pending:
            return None
        block = torch.stack([row for _, _, row in self.pending]).double().cpu().numpy()
        last: dict[str, float] = {}
        for (step, names, _), values in zip(self.pending, block):
            if not np.isfinite(values).all():
                bad = {n: float(v) for n, v in zip(names, values) if not math.isfinite(v)}
                self.pending.clear()
                raise TrainingDivergedError(
                    f"training diverged at step {step}: non-finite loss terms "
                    + ", ".join(f"{n}={v}" for n, v in bad.items())
                    + f" (all terms: {dict(zip(names, values.tolist()))})"
                )
            self.columns.setdefault("step", []).append(float(step))
            for n, v in zip(names, values):
                self.columns.setdefault(n, []).append(float(v))
            last = dict(zip(names, values.tolist()))
        self.pending.clear()
        return last

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()}


# What a checkpoint must share with the run that resumes it.
RESUME_KEYS = (
    "model",
    "channels",
    "dataset",
    "latent_dim",
    "hparams",
    "seed",
    "batch_size",
    "precision",
    "num_images",
    "data_fingerprint",
)


def _arithmetic(precision: Any) -> Any:
    """The numerics of a stored precision name: the memory layout does not make another run."""
    return precision.removesuffix("+channels_last") if isinstance(precision, str) else precision


def check_resume(
    state: Mapping[str, Any], config: Mapping[str, Any], path: Any, who: str = "this run"
) -> None:
    """A checkpoint must belong to the same run (:data:`RESUME_KEYS`); say which setting differs."""
    for key in RESUME_KEYS:
        stored, wanted = state.get(key), config[key]
        if key == "precision":
            stored, wanted = _arithmetic(stored), _arithmetic(wanted)
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


def train(
    model: str,
    images: np.ndarray | GroundTruth,
    *,
    dataset: str | None = None,
    hparams: Mapping[str, float] | None = None,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    latent_dim: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 5000,
    keep_checkpoints: int = 2,
    resume: bool | None = None,
    precision: str = "auto",
    num_threads: int | None = None,
    probe: bool | None = None,
    progress: bool = True,
    sync_every: int | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one zoo model on uint8 images ``[N, 64, 64, C]`` (or a GroundTruth's grid).

    ``dataset`` selects the default hyperparameters (inferred from a GroundTruth's name, else from
    the channels: 1 → dsprites, 3 → shapes3d); ``hparams`` overrides them (validated by the zoo).
    ``latent_dim`` defaults to the number of factors (a GroundTruth's, else the dataset's).
    With ``checkpoint_dir`` a checkpoint is written every ``checkpoint_every`` steps and at the
    end, and an existing one is resumed (``resume=None``: if present; ``True``: required;
    ``False``: refuse a directory that already holds one, which must be the same run: same
    settings, precision and images, see :func:`check_resume`); the directory is created at once.
    ``num_threads`` sets torch's CPU threads for the run (None: torch's current count, or on
    resume the count the checkpoint stored), so a seed fixes the result for that thread count.
    ``probe=True`` (CPU, fresh runs) instead times 1 thread against torch's count on a throwaway
    copy and keeps the faster: it trades that reproducibility for speed on a shared machine;
    ``probe=None``/``False`` never probes. The count is stored in checkpoints. ``seed`` is an
    integer in [0, 2**63 - 1]; ``keep_checkpoints`` ≥ 1. ``callback(step, terms)`` is called after
    every host sync (every ``sync_every`` steps: 1 on the CPU, 50 on a GPU). Raises
    :class:`TrainingDivergedError` on a NaN/inf loss.
    """
    spec = model_spec(model)
    steps = check_int("steps", steps, minimum=0)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every)
    keep_checkpoints = check_int("keep_checkpoints", keep_checkpoints)
    if num_threads is not None:
        num_threads = check_int("num_threads", num_threads)
    array = as_image_array(images)
    config = run_config(
        spec.name,
        images,
        array,
        dataset=dataset,
        hparams=hparams,
        latent_dim=latent_dim,
        seed=seed,
        batch_size=batch_size,
    )
    hp, channels, latent_dim = config["hparams"], config["channels"], config["latent_dim"]
    seed, batch_size = config["seed"], config["batch_size"]
    dev = resolve_device(device)
    plan = resolve_precision(precision, dev)
    config["precision"] = plan.name
    if sync_every is None:
        sync_every = 1 if dev.type == "cpu" else 50
    sync_every = check_int("sync_every", sync_every)
    if checkpoint_dir is not None:
        checkpoint_dir = prepare_checkpoint_dir(checkpoint_dir)

    objective = build_objective(spec.name, hp, channels, latent_dim, seed)
    stream = BatchStream(seed, array.shape[0], batch_size, latent_dim)
    history = _History()
    start_step = 0
    resumed_from: ckpt.Checkpoint | None = None
    if checkpoint_dir is not None:
        latest = ckpt.latest_checkpoint(checkpoint_dir)
        if latest is not None and resume is False:
            raise CheckpointError(
                f"{checkpoint_dir} already holds a checkpoint ({latest.name}) and resume=False; "
                "pass resume=True (or None) to continue it, or use an empty directory"
            )
        if latest is not None:
            resumed_from = ckpt.read_checkpoint(latest)
            check_resume(resumed_from.state, config, latest)
        elif resume:
            raise CheckpointError(f"resume=True but {checkpoint_dir} holds no checkpoint")
    elif resume:
        raise InvalidArgumentError("resume=True needs a checkpoint_dir")

    objective = objective.to(dev, plan.dtype)
    if plan.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    optimizers = make_optimizers(objective)
    if resumed_from is not None:
        ckpt.load_weights(objective, resumed_from)
        state = resumed_from.state
        for name, optimizer in optimizers.as_dict().items():
            try:
                ckpt.optimizer_from_parts(
                    optimizer, resumed_from.tensors, state["optimizers"][name], f"optimizer/{name}"
                )
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"{resumed_from.path}: optimizer state {name!r} is missing or corrupt: {exc}"
                ) from exc
        stream.load_state(state["batch_stream_state"])
        start_step = resumed_from.step
        history = _History(resumed_from.history())
        if len(history.columns.get("step", [])) != start_step:
            raise CheckpointError(f"{resumed_from.path}: loss history does not match its step")

    source = as_source(array)
    objective.train()
    last_saved: str | None = str(resumed_from.path) if resumed_from is not None else None

    def save(step: int) -> None:
        nonlocal last_saved
        history.flush()  # never write a checkpoint after a diverged step
        path = ckpt.save_checkpoint(
            checkpoint_dir,  # type: ignore[arg-type]
            step=step,
            objective=objective,
            optimizers=optimizers.as_dict(),
            stream_state=stream.state(),
            history=history.arrays(),
            config=config,
            keep=keep_checkpoints,
        )
        last_saved = str(path)

    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    thread_times: dict[int, float] = {}
    probe_seconds = 0.0
    stored = resumed_from.state.get("num_threads") if resumed_from is not None else None
    if num_threads is not None:
        threads = num_threads
    elif isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1:
        threads = stored  # the resumed run keeps its thread count: bitwise continuation
    elif probe and dev.type == "cpu":
        t_probe = time.perf_counter()
        threads, thread_times = probe_threads(objective, source, plan, batch_size)
        probe_seconds = time.perf_counter() - t_probe
    else:
        threads = previous_threads
    config["num_threads"] = threads
    torch.set_num_threads(threads)
    bar = tqdm(
        total=steps,
        initial=min(start_step, steps),
        disable=not progress,
        desc=spec.name,
        unit="step",
        dynamic_ncols=True,
    )
    data_time = 0.0
    t0 = time.perf_counter()
    try:
        for step in range(start_step + 1, steps + 1):
            t_data = time.perf_counter()
            batch = stream.next()
            x = images_to_input(
                source.index_select(0, batch.indices).to(dev, non_blocking=True), plan.dtype
            )
            if plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            data_time += time.perf_counter() - t_data
            terms = training_step(
                objective, optimizers, x, batch, autocast_dtype=plan.autocast_dtype
            )
            history.add(step, terms)
            if step % sync_every == 0 or step == steps:
                last = history.flush()
                if last is not None:
                    if callback is not None:
                        callback(step, last)
                    if progress and (step % max(sync_every, 10) == 0 or step == steps):
                        bar.set_postfix(
                            {k: f"{v:.4g}" for k, v in last.items() if k != "step"}, refresh=False
                        )
            if checkpoint_dir is not None and (step % checkpoint_every == 0 or step == steps):
                save(step)
            bar.update(1)
        history.flush()
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    trained = max(0, steps - start_step)
    if plan.channels_last:
        objective = objective.to(memory_format=torch.contiguous_format)
    objective.eval()
    return TrainResult(
        objective=objective,
        history=history.arrays(),
        model=spec.name,
        hparams=hp,
        latent_dim=latent_dim,
        seed=seed,
        steps=max(steps, start_step),
        start_step=start_step,
        wall_time=wall,
        images_per_second=trained * batch_size / wall if trained and wall > 0 else 0.0,
        data_fraction=data_time / wall if trained and wall > 0 else 0.0,
        precision=plan.name,
        device=str(dev),
        checkpoint=last_saved,
        num_threads=threads,
        extra={"thread_probe_seconds_per_step": thread_times, "probe_seconds": probe_seconds},
    )


# --- encoding --------------------------------------------------------------------------------
def _vae_of(model: Objective | VAE | str | os.PathLike) -> VAE:
    if isinstance(model, (str, os.PathLike)):
        model = ckpt.load_model(model)
    if isinstance(model, Objective):
        return model.vae
    if isinstance(model, VAE):
        return model
    raise InvalidArgumentError(
        f"model must be an Objective, a VAE or a checkpoint directory, got {type(model).__name__}"
    )


def encode(
    model: Objective | VAE | str | os.PathLike,
    images: np.ndarray | GroundTruth,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """μ and log σ² (float32 ``[N, d]``) of q(z|x) for uint8 images ``[N, 64, 64, C]``.

    Batched, without gradients, in eval mode (the model's mode is restored). ``device`` defaults to
    the model's; on a GPU the uint8 batches travel pinned and are converted there. ``precision``:
    "fp32" (default: s and the metrics read μ, so exact by default), "bf16" (autocast trunk, fp32
    heads) or "auto" (bf16 on a GPU, fp32 on the CPU); the arithmetic is otherwise the model's
    own (a model trained in "fp64" encodes in float64). ``num_threads`` sets torch's CPU threads
    for the call (on a machine shared with busy processes one thread can be several times faster
    than two; see benchmarks/bench_training.py).
    """
    vae = _vae_of(model)
    array = as_image_array(images)
    if array.shape[3] != vae.channels:
        raise DataFormatError(
            f"images have {array.shape[3]} channel(s) but the model expects {vae.channels}"
        )
    model_device = next(vae.parameters()).device
    input_dtype = next(vae.parameters()).dtype
    dev = model_device if device is None else resolve_device(device)
    if precision not in ENCODE_PRECISIONS:
        raise InvalidArgumentError(
            f"precision must be one of {', '.join(ENCODE_PRECISIONS)}, got {precision!r}"
        )
    dtype = None
    if precision == "bf16" or (precision == "auto" and dev.type == "cuda"):
        dtype = torch.bfloat16
    if batch_size is None:
        batch_size = 4096 if dev.type == "cuda" else 256
    batch_size = check_int("batch_size", batch_size)
    n, d = array.shape[0], vae.latent_dim
    mu = np.empty((n, d), np.float32)
    logvar = np.empty((n, d), np.float32)
    source = as_source(array)
    was_training = vae.training
    moved = dev != model_device
    net = vae.to(dev) if moved else vae
    net.eval()
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_int("num_threads", num_threads))
    try:
        with torch.inference_mode(), network_autocast(net, dev.type, dtype):
            for start in tqdm(range(0, n, batch_size), disable=not progress, desc="encode"):
                chunk = source[start : start + batch_size]
                if dev.type == "cuda":
                    chunk = chunk.pin_memory().to(dev, non_blocking=True)
                m, lv = net(images_to_input(chunk, input_dtype))
                mu[start : start + len(chunk)] = m.float().cpu().numpy()
                logvar[start : start + len(chunk)] = lv.float().cpu().numpy()
    finally:
        torch.set_num_threads(previous_threads)
        if moved:
            vae.to(model_device)
        vae.train(was_training)
    return mu, logvar


def load_model(checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Objective:
    """The trained :class:`Objective` in ``checkpoint_dir`` (its newest checkpoint), eval mode."""
    return ckpt.load_model(checkpoint_dir, resolve_device(device))


__all__: Sequence[str] = (
    "AUTO_PRECISION",
    "Optimizers",
    "PrecisionPlan",
    "TrainResult",
    "as_image_array",
    "check_resume",
    "data_fingerprint",
    "encode",
    "load_model",
    "make_optimizers",
    "network_autocast",
    "resolve_precision",
    "train",
    "training_step",
)
