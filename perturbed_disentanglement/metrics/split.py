"""Splitting sampled (codes, factors) into the training and test parts of the classifier metrics."""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import InvalidArgumentError
from ._checks import check_pair


def split_train_test(
    codes: object, factors: object, train_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split points into the first ``ceil(N * train_fraction)`` and the rest.

    disentanglement_lib's ``utils.split_train_test`` (Locatello et al., "Challenging Common
    Assumptions in the Unsupervised Learning of Disentangled Representations", ICML 2019) keeps
    order (the points are already i.i.d. samples), so this does too. Both parts must be non-empty.
    Returns ``(codes_train, factors_train, codes_test, factors_test)``.
    """
    c, f = check_pair(codes, factors, allow_constant=True)
    if not isinstance(train_fraction, numbers.Real) or not 0.0 < float(train_fraction) < 1.0:
        raise InvalidArgumentError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    n = c.shape[0]
    n_train = int(np.ceil(n * float(train_fraction)))
    if n_train >= n or n_train < 1:
        raise InvalidArgumentError(
            f"{n} points are too few for train_fraction={train_fraction}: the split would leave "
            f"{n_train} training and {n - n_train} test points; both must be at least 1"
        )
    return c[:n_train], f[:n_train], c[n_train:], f[n_train:]
