"""Encoding ground-truth images: random factor samples and the whole grid, in bounded chunks.

An *encoder* is any callable ``encode(images) -> (mu, logvar)`` taking uint8 images
``[n, H, W, C]`` and returning two float arrays ``[n, d]`` (posterior mean and log-variance of a
diagonal Gaussian). A trained model is wrapped by the model code; tests pass hand-made callables.
The representation every metric scores is ``mu``, as in disentanglement_lib.

Factor rows are always drawn in full *before* any image is encoded, so a result depends on the
seed only, never on the chunk size used to encode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataFormatError, InvalidArgumentError
from ..ground_truth import GroundTruth
from ._checks import check_count, check_finite
from ._random import RandomState, as_generator

Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: Default number of images per encoder call (bounded memory, large enough for a GPU).
DEFAULT_CHUNK = 4096


def encode_images(encoder: Encoder, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Call ``encoder`` on one chunk and check its output: two finite float64 arrays ``[n, d]``.

    A wrong shape or a NaN is reported here, naming what the encoder returned, rather than as an
    obscure broadcasting error later inside a metric.
    """
    n = len(images)
    out = encoder(images)
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise DataFormatError(
            "the encoder must return a pair (mu, logvar) of arrays [n, d]; "
            f"got {type(out).__name__}"
            + (f" of length {len(out)}" if hasattr(out, "__len__") else "")
        )
    arrays = []
    for name, value in zip(("mu", "logvar"), out):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"encoder output {name} is not a numeric array: {exc}") from exc
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise DataFormatError(
                f"encoder output {name} must have shape [{n}, d] with d >= 1 for {n} images, "
                f"got {list(arr.shape)}"
            )
        check_finite(
            arr,
            f"encoder output {name}",
            axes=("image of the chunk", "dimension"),
            error=DataFormatError,
        )
        arrays.append(arr)
    mu, logvar = arrays
    if mu.shape != logvar.shape:
        raise DataFormatError(
            f"encoder outputs mu {list(mu.shape)} and logvar {list(logvar.shape)} differ in shape"
        )
    return mu, logvar


def _encoded_chunks(
    gt: GroundTruth,
    encoder: Encoder,
    idx: np.ndarray,
    chunk_size: int,
    dim: int | None = None,
    bar: tqdm | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(mu, logvar)`` for consecutive chunks of the checked grid indices ``idx``.

    The code dimension is checked to stay the same from chunk to chunk, and to equal ``dim``
    (the dimension of an earlier call) when given.
    """
    for start in range(0, len(idx), chunk_size):
        part = idx[start : start + chunk_size]
        mu, logvar = encode_images(encoder, gt.images(part))
        if dim is None:
            dim = mu.shape[1]
        elif mu.shape[1] != dim:
            raise DataFormatError(
                f"the encoder returned {mu.shape[1]} dimensions for one chunk and {dim} "
                "for an earlier one; the code dimension must be fixed"
            )
        if bar is not None:
            bar.update(len(part))
        yield mu, logvar


def encode_indices(
    gt: GroundTruth,
    encoder: Encoder,
    indices: np.ndarray,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    progress: bool = False,
    desc: str = "encoding",
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, logvar)`` float64 ``[n, d]`` of the grid points ``indices``, encoded in chunks.

    The encoder-side step of disentanglement_lib's metrics (Locatello et al., "Challenging Common
    Assumptions in the Unsupervised Learning of Disentangled Representations", ICML 2019), with
    at most ``chunk_size`` images per encoder call; ``progress`` shows a tqdm bar.
    """
    idx = gt.check_indices(indices)
    if len(idx) == 0:
        raise InvalidArgumentError("no indices to encode; expected at least one grid point")
    chunk_size = check_count(chunk_size, "chunk_size")
    with tqdm(total=len(idx), desc=desc, unit="img", disable=not progress) as bar:
        parts = list(_encoded_chunks(gt, encoder, idx, chunk_size, bar=bar))
    return (
        np.concatenate([p[0] for p in parts], axis=0),
        np.concatenate([p[1] for p in parts], axis=0),
    )


def encode_batches(
    gt: GroundTruth,
    encoder: Encoder,
    rows: np.ndarray,
    chunk_size: int,
    reduce: Callable[[np.ndarray], np.ndarray],
    *,
    dim: int | None = None,
) -> np.ndarray:
    """Encode batches of factor rows ``[n, B, k]`` and reduce each batch: ``[n, ...]``.

    Whole batches are encoded together, ``max(1, chunk_size // B)`` per encoder call, and
    ``reduce`` maps the codes ``mu [m, B, d]`` of ``m`` batches to one result per batch. Only the
    reduced results are kept, so memory stays at one chunk of codes. ``dim``: the code dimension
    an earlier call returned, which every chunk must match.
    """
    n, batch, k = rows.shape
    idx = gt.index(rows.reshape(n * batch, k))
    per_call = max(1, chunk_size // batch) * batch
    out = [
        reduce(mu.reshape(-1, batch, mu.shape[1]))
        for mu, _ in _encoded_chunks(gt, encoder, idx, per_call, dim)
    ]
    return np.concatenate(out, axis=0)


def sample_codes(
    gt: GroundTruth,
    encoder: Encoder,
    num_points: int,
    random_state: RandomState,
    batch_size: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and factors of ``num_points`` uniformly random grid points.

    Same semantics as disentanglement_lib's ``utils.generate_batch_factor_code`` (Locatello et
    al., ICML 2019): every factor is drawn uniformly and independently (with replacement), the
    representation is the encoder mean. dlib returns both arrays transposed; here they are
    row-per-sample.

    Returns:
        ``(codes, factors)``: float64 ``mu`` ``[num_points, d]`` and int64 factor indices
        ``[num_points, k]`` in ``gt.factor_names`` order.
    """
    num_points = check_count(num_points, "num_points")
    batch_size = check_count(batch_size, "batch_size")
    rng = as_generator(random_state)
    factors = gt.sample_factors(num_points, rng).astype(np.int64)
    mu, _ = encode_indices(gt, encoder, gt.index(factors), batch_size)
    return mu, factors


def encode_grid(
    gt: GroundTruth,
    encoder: Encoder,
    batch_size: int = DEFAULT_CHUNK,
    *,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, logvar)`` float64 ``[len(gt), d]`` for every grid point, in grid order.

    Needed wherever a statistic of the paper ("Clearing the path for truly semantic
    representation learning") runs over the whole dataset (the perturbation's ``s`` and its
    ``argmin_k mean sigma^2_k``, active units). Encodes ``batch_size`` images at a time behind a
    tqdm bar; ``progress=False`` silences it.
    """
    batch_size = check_count(batch_size, "batch_size")
    return encode_indices(
        gt, encoder, np.arange(len(gt)), batch_size, progress=progress, desc=f"encoding {gt.name}"
    )
