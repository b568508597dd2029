"""Active units and information level, from the posterior log-variances of an encoder.

"The paper" below is the one this package reproduces: "Clearing the path for truly semantic
representation learning".

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
from ._checks import check_codes, check_real

#: The paper's threshold on the mean posterior variance (Fig. 5).
ACTIVE_THRESHOLD = 0.8


def _check_logvar(logvar: object) -> np.ndarray:
    """``logvar`` as a finite float64 ``[N, d]`` (the checks of :func:`check_codes`)."""
    return check_codes(logvar, name="logvar").astype(np.float64, copy=False)


def mean_posterior_variance(logvar: np.ndarray) -> np.ndarray:
    """``E_x sigma^2_i(x)`` per dimension ``[d]`` from log-variances ``[N, d]``.

    The statistic behind the paper's active units and information level (Fig. 4c and 5).
    """
    return np.exp(_check_logvar(logvar)).mean(axis=0)


def active_units(logvar: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> np.ndarray:
    """Boolean mask ``[d]``: ``E_x sigma^2_i(x) < threshold``.

    The paper's active units (Fig. 5: threshold 0.8).
    """
    threshold = check_real(threshold, "threshold", strict=True)
    return mean_posterior_variance(logvar) < threshold


def num_active_units(logvar: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of dimensions with ``E_x sigma^2_i(x) < threshold`` (the paper's Fig. 5 curves)."""
    return int(active_units(logvar, threshold).sum())


def information_level(logvar: np.ndarray) -> np.ndarray:
    """``1 - E_x sigma^2_i(x)`` per dimension ``[d]``; 0 for a pruned one.

    The paper's information level (Fig. 4c).
    """
    return 1.0 - mean_posterior_variance(logvar)


def information_level_by_factor(logvar: np.ndarray, factor_to_dim: np.ndarray) -> np.ndarray:
    """Information level of the dimension that encodes each factor: ``[k]``.

    ``1 - E_x sigma^2_{factor_to_dim[j]}(x)``: ``factor_to_dim[j]`` is the latent dimension
    assigned to factor ``j`` (for instance the argmax over dimensions of the mutual-information
    matrix that MIG computes), as in the paper's Fig. 4c.
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
