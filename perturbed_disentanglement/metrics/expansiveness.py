"""Local expansiveness of a generative factor: how far the image moves per unit of the factor.

The paper (§4.2) asks the perturbation pattern to have a large local expansiveness factor
``alpha_delta(s) = inf_{|d| < delta} ||f(s) - f(s + d)|| / |d|``, and Fig. 4a compares it with
the generating factors' own, computed "for delta equal the step size of the position generating
factors" ("sampled local variance"). On a discrete grid the infimum over ``|d| < delta`` cannot
be taken; we use the one-step difference. Our definitions, for factor ``j`` and its one-step
neighbours ``(w, w + e_j)`` over the whole grid (every pair once):

- ``mean_norm = E ||x(w + e_j) - x(w)||``: L2 norm over all pixels and channels, pixel values
  scaled to [0, 1] (uint8 / 255), the mean over every neighbour pair;
- ``delta``: one step of the factor *in units of its standard deviation*. The paper adds ``s`` as
  a zero-mean, unit-variance variable; measuring every factor per standard deviation too makes
  the numbers comparable. A factor uniform on ``n`` equally spaced values has
  ``delta = sqrt(12 / (n^2 - 1))`` (0.108 for dSprites' positions);
- ``alpha = mean_norm / delta`` (the paper's alpha_delta, a norm per unit of the factor);
- ``local_variance = E ||x(w + e_j) - x(w)||^2 / delta^2`` (Fig. 4a's "local variance").

For ``s`` the step is ``||x~(w; s + delta) - x~(w; s)||``: the same original image perturbed with
``s`` and with ``s`` moved by ``delta`` (see :mod:`.fig4`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class Expansiveness:
    """One factor's local expansiveness (see the module docstring for the definitions)."""

    delta: float
    mean_norm: float
    alpha: float
    local_variance: float
    num_pairs: int


def standardized_step(num_values: int) -> float:
    """One index step of a factor uniform on ``num_values`` equally spaced values, in std units."""
    if num_values < 2:
        raise InvalidArgumentError(
            f"a factor with {num_values} value(s) has no step; expected at least 2 values"
        )
    return math.sqrt(12.0 / (num_values**2 - 1))


def squared_step_norms(block: np.ndarray) -> np.ndarray:
    """``||x[:, a+1] - x[:, a]||^2`` (pixels in [0, 1]) for images ``[L, n, ...]`` → ``[L, n-1]``.

    ``block`` holds uint8 values, as uint8 or already as float32 (the scan converts once and
    shares the copy). Exact: the squared differences are integers below 2^16, exact in float32,
    and are summed in float64.
    """
    x = np.asarray(block, dtype=np.float32)
    if x.ndim < 2:
        raise InvalidArgumentError(f"expected images [L, n, ...], got shape {list(x.shape)}")
    diff = np.diff(x.reshape(x.shape[0], x.shape[1], -1), axis=1)
    np.square(diff, out=diff)
    return diff.sum(axis=-1, dtype=np.float64) / 255.0**2


def squared_pair_norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a_i - b_i||^2`` (pixels in [0, 1]) for two uint8 arrays ``[n, ...]`` → ``[n]``."""
    diff = (a.reshape(len(a), -1).astype(np.int32)) - b.reshape(len(b), -1).astype(np.int32)
    return (diff * diff).sum(axis=-1, dtype=np.int64) / 255.0**2


class ExpansivenessAccumulator:
    """Running sums of ``||dx||`` and ``||dx||^2`` over neighbour pairs, fed chunk by chunk."""

    def __init__(self) -> None:
        self.sum_norm = 0.0
        self.sum_squared = 0.0
        self.count = 0

    def add(self, squared_norms: np.ndarray) -> None:
        """Add the squared norms ``||dx||^2`` of some neighbour pairs (any shape)."""
        sq = np.asarray(squared_norms, dtype=np.float64).reshape(-1)
        self.sum_norm += float(np.sqrt(sq).sum())
        self.sum_squared += float(sq.sum())
        self.count += sq.size

    def result(self, delta: float) -> Expansiveness:
        """The factor's :class:`Expansiveness` for a step ``delta``; NaNs if no pair was added."""
        if not delta > 0:
            raise InvalidArgumentError(f"delta must be a positive step, got {delta}")
        if self.count == 0:
            nan = float("nan")
            return Expansiveness(float(delta), nan, nan, nan, 0)
        mean_norm = self.sum_norm / self.count
        mean_sq = self.sum_squared / self.count
        return Expansiveness(
            delta=float(delta),
            mean_norm=mean_norm,
            alpha=mean_norm / delta,
            local_variance=mean_sq / delta**2,
            num_pairs=self.count,
        )
