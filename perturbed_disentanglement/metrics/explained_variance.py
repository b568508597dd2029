"""Explained global variance of a generative factor: ``sum_pixels Var_{w_j} E[x | w_j]``.

Paper §5.2 and Fig. 4b: "we approximate the explained global variance of a generating factor by
extensively sampling ``var_{w_j} E[x | w_j]``". On a full factorial grid no sampling is needed:
the conditional mean image ``E[x | w_j = v]`` is the mean over every grid point with that value,
and the variance over ``v`` is weighted by how often each value occurs (uniform for a factor).
The result is summed over pixels and channels, pixel values scaled to [0, 1]. By the law of total
variance it is at most the total pixel variance of the dataset.

For ``s`` (a float per grid point, not a grid axis) the values are grouped: exactly by value
when ``s`` takes at most ``num_bins`` distinct values, otherwise into ``num_bins`` bins of equal
mass by rank (ties split by grid order). Binning can only lower the estimate (a coarser
conditioning explains less variance); for a uniform ``s`` acting linearly, 20 bins recover all
but 1/400 of it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError


def between_group_variance(sums: np.ndarray, counts: np.ndarray) -> float:
    """``sum_pixels sum_v p_v (m_v - m)^2`` from per-group pixel sums ``[G, P]`` and counts ``[G]``.

    ``sums`` are in uint8 units (0..255 per pixel); the result is in [0, 1] pixel units.
    """
    counts = np.asarray(counts, dtype=np.float64)
    keep = counts > 0
    if not keep.any():
        raise InvalidArgumentError("no images were accumulated; expected at least one group")
    sums = np.asarray(sums, dtype=np.float64)[keep] / 255.0
    counts = counts[keep]
    means = sums / counts[:, None]
    p = counts / counts.sum()
    overall = p @ means
    return float(p @ ((means - overall) ** 2).sum(axis=1))


def s_groups(s_values: np.ndarray, num_bins: int) -> tuple[np.ndarray, int]:
    """Group id per grid point ``[N]`` and the number of groups for a float ``s``.

    At most ``num_bins`` distinct values: one group per value. Otherwise equal-mass bins by rank
    (stable sort, so equal values split by grid order at a bin edge).
    """
    if num_bins < 2:
        raise InvalidArgumentError(f"num_bins must be at least 2, got {num_bins}")
    s = np.asarray(s_values, dtype=np.float64).reshape(-1)
    unique, inverse = np.unique(s, return_inverse=True)
    if len(unique) <= num_bins:
        return inverse.astype(np.int64).reshape(-1), len(unique)
    order = np.argsort(s, kind="stable")
    groups = np.empty(len(s), dtype=np.int64)
    groups[order] = np.arange(len(s), dtype=np.int64) * num_bins // len(s)
    return groups, num_bins


class ConditionalSums:
    """Per-group pixel sums (uint8 units, exact integers in float64) and counts, chunk by chunk."""

    def __init__(self, num_groups: int, pixels: int) -> None:
        self.sums = np.zeros((num_groups, pixels), dtype=np.float64)
        self.counts = np.zeros(num_groups, dtype=np.int64)

    def add_lines(self, block: np.ndarray) -> None:
        """Add a scan chunk ``[L, n, ...]`` (uint8 values, any dtype) whose axis 1 is the value."""
        flat = block.reshape(block.shape[0], block.shape[1], -1)
        # up to 65,793 lines of uint8 values sum to integers below 2^24: exact in float32
        exact32 = flat.shape[0] * 255 < 2**24
        self.sums += flat.sum(axis=0, dtype=np.float32 if exact32 else np.float64)
        self.counts += flat.shape[0]

    def add_grouped(self, images: np.ndarray, groups: np.ndarray) -> None:
        """Add images ``[m, ...]`` with group ids ``[m]`` (sorted and reduced, no one-hot)."""
        flat = images.reshape(len(images), -1)
        order = np.argsort(groups, kind="stable")
        g = groups[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        self.sums[g[starts]] += np.add.reduceat(flat[order], starts, axis=0, dtype=np.float64)
        self.counts += np.bincount(groups, minlength=len(self.counts))

    def explained_variance(self) -> float:
        """``sum_pixels Var_v E[x | v]`` of what was added (:func:`between_group_variance`)."""
        return between_group_variance(self.sums, self.counts)


class PixelMoments:
    """Per-pixel sum and sum of squares for the total variance ``sum_p Var(x_p)``.

    Exact: uint8 values and their squares are integers below 2^16 (exact in float32), summed in
    float64 (exact below 2^53, far above any grid here).
    """

    def __init__(self, pixels: int) -> None:
        self.total = np.zeros(pixels, dtype=np.float64)
        self.squares = np.zeros(pixels, dtype=np.float64)
        self.count = 0

    def add(self, images: np.ndarray) -> None:
        """Add images holding uint8 values (any dtype); the trailing axes are the pixels."""
        flat = np.asarray(images, dtype=np.float32).reshape(-1, len(self.total))
        self.total += flat.sum(axis=0, dtype=np.float64)
        self.squares += np.square(flat).sum(axis=0, dtype=np.float64)
        self.count += flat.shape[0]

    def total_variance(self) -> float:
        """``sum_pixels Var(x)`` in [0, 1] pixel units (population variance); NaN if empty."""
        if self.count == 0:
            return float("nan")
        mean = self.total / (255.0 * self.count)
        return float((self.squares / (255.0**2 * self.count) - mean**2).sum())
