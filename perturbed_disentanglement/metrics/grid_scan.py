"""Walking a factorial grid along one factor axis, in chunks of bounded memory.

The grid is row-major over the factor sizes (last factor fastest), so the images of one *line*
along factor ``j`` (every value of ``j``, all other factors fixed) sit ``stride_j`` apart, with
``stride_j = prod(sizes[j+1:])``. A scan along ``j`` visits every line once, several lines per
chunk, and yields the chunk shaped ``[lines, n_j, H, W, C]``: differences along axis 1 are the
one-step neighbours of Fig. 4a, sums over axis 0 the conditional sums of Fig. 4b. Every image is
read exactly once per scan; nothing the size of the dataset is ever held (dSprites is 3 GB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError

ImageSource = Callable[[np.ndarray], np.ndarray]


def line_indices(sizes: Sequence[int], axis: int, start: int, stop: int) -> np.ndarray:
    """Grid indices ``[stop - start, sizes[axis]]`` of lines ``start..stop-1`` along ``axis``.

    Lines are numbered in grid order: line ``l`` has outer part ``l // stride`` (the factors
    before ``axis``) and inner part ``l % stride`` (the factors after it).
    """
    sizes = tuple(int(s) for s in sizes)
    if not 0 <= axis < len(sizes):
        raise InvalidArgumentError(f"axis {axis} is out of range for {len(sizes)} factors")
    n = sizes[axis]
    stride = int(np.prod(sizes[axis + 1 :], dtype=np.int64))
    lines = np.arange(start, stop, dtype=np.int64)
    base = (lines // stride) * (n * stride) + lines % stride
    return base[:, None] + np.arange(n, dtype=np.int64)[None, :] * stride


def num_lines(sizes: Sequence[int], axis: int) -> int:
    """How many lines run along ``axis``: the product of the other factor sizes."""
    return int(np.prod(sizes, dtype=np.int64)) // int(sizes[axis])


def iter_lines(
    images: ImageSource,
    sizes: Sequence[int],
    axis: int,
    chunk_images: int,
    *,
    progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices [L, n], images [L, n, H, W, C])`` covering every line along ``axis``.

    ``images(indices_1d)`` serves the uint8 images; ``L`` is about ``chunk_images / n`` (at
    least one whole line).
    """
    n = int(sizes[axis])
    total = num_lines(sizes, axis)
    per_chunk = max(1, int(chunk_images) // n)
    for start in tqdm(range(0, total, per_chunk), desc=desc, unit="chunk", disable=not progress):
        idx = line_indices(sizes, axis, start, min(start + per_chunk, total))
        block = images(idx.reshape(-1))
        yield idx, block.reshape(idx.shape + block.shape[1:])


def iter_contiguous(
    total: int, chunk_images: int, *, progress: bool = False, desc: str = ""
) -> Iterator[np.ndarray]:
    """Consecutive index ranges ``[a, b)`` of at most ``chunk_images`` covering ``0..total-1``."""
    step = max(1, int(chunk_images))
    for start in tqdm(range(0, total, step), desc=desc, unit="chunk", disable=not progress):
        yield np.arange(start, min(start + step, total), dtype=np.int64)
