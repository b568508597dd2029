"""Active units and information level, from the posterior log-variances of an encoder.

A VAE latent dimension the decoder does not use collapses to the prior, so its posterior
variance sigma^2_i(x) stays near 1 whatever x. The paper (Fig. 5) counts a dimension as *active*
when ``E_x sigma^2_i(x) < 0.8``; fewer active units than generative factors means the model has
over-pruned and cannot recover them all. Its Fig. 4c reports the *information level*
``1 - E_x sigma^2_i(x)``, the lack of noise in a coordinate, which orders the coordinates like
principal components (Rolinek et al. 2019): the least noisy one is the most important to the
reconstruction, and the paper's ``s`` is that coordinate's mean (SPEC §3).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError

#: The paper's threshold on the mean posterior variance (Fig. 5).
ACTIVE_THRESHOLD = 0.8


def _check_logvar(logvar: object) -> np.ndarray:
    try:
        arr = np.asarray(logvar, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"logvar must be a numeric array [N, d]: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidArgumentError(
            f"logvar must be a non-empty 2-D array [N, d] (one row per image), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidArgumentError(
            f"logvar contains NaN or infinite values (first at row {row}, dimension {col})"
        )
    return arr


def mean_posterior_variance(logvar: np.ndarray) -> np.ndarray:
    """``E_x sigma^2_i(x)`` per dimension ``[d]`` from log-variances ``[N, d]``."""
    return np.exp(_check_logvar(logvar)).mean(axis=0)


def active_units(logvar: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> np.ndarray:
    """Boolean mask ``[d]``: ``E_x sigma^2_i(x) < threshold`` (paper Fig. 5, threshold 0.8)."""
    if not np.isfinite(threshold) or threshold <= 0:
        raise InvalidArgumentError(f"threshold must be a positive variance, got {threshold}")
    return mean_posterior_variance(logvar) < threshold


def num_active_units(logvar: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of active dimensions (paper Fig. 5's dashed curves)."""
    return int(active_units(logvar, threshold).sum())


def information_level(logvar: np.ndarray) -> np.ndarray:
    """``1 - E_x sigma^2_i(x)`` per dimension ``[d]`` (paper Fig. 4c); 0 for a pruned one."""
    return 1.0 - mean_posterior_variance(logvar)


def information_level_by_factor(logvar: np.ndarray, factor_to_dim: np.ndarray) -> np.ndarray:
    """Information level of the dimension that encodes each factor: ``[k]``.

    ``factor_to_dim[j]`` is the latent dimension assigned to factor ``j`` (for instance the
    argmax over dimensions of the mutual-information matrix that MIG computes), as in Fig. 4c.
    """
    level = information_level(logvar)
    dims = np.asarray(factor_to_dim)
    if dims.ndim != 1 or not np.issubdtype(dims.dtype, np.integer):
        raise InvalidArgumentError(
            f"factor_to_dim must be a 1-D integer array [k], got {dims.dtype} {list(dims.shape)}"
        )
    if dims.size and (dims.min() < 0 or dims.max() >= len(level)):
        raise InvalidArgumentError(
            f"factor_to_dim holds {dims.min()}..{dims.max()}, but the code has dimensions "
            f"0..{len(level) - 1}"
        )
    return level[dims]
