"""Disentanglement, Completeness and Informativeness (DCI), as computed by disentanglement_lib.

Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
Representations", ICLR 2018. One regressor per factor predicts it from the whole code; its
feature importances form the matrix R ``[d, k]``. Disentanglement of code i is
``1 - H_k(P_i.)`` (entropy with log base k of row i normalised to sum 1), weighted by the
code's share of total importance; completeness of factor j is ``1 - H_d(P_.j)``, weighted by the
factor's share; informativeness is the predictor's accuracy. dlib
(``evaluation/metrics/dci.py``) uses ``GradientBoostingClassifier()`` with default settings per
factor, 10,000 train / 5,000 test points, ``|feature_importances_|``, a 1e-11 smoothing of R before
the entropies, and uniform weights when R is all zero.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from ..errors import InvalidArgumentError
from ._checks import check_train_test
from ._parallel import run_jobs
from ._random import RandomState, seed_from


def _normalised_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy along axis 0 of the columns of ``p`` (each normalised to sum 1), log base ``base``.

    Same as ``scipy.stats.entropy(p, base=base)``, which dlib calls.
    """
    q = p / p.sum(axis=0, keepdims=True)
    logs = np.log(q, out=np.zeros_like(q), where=q > 0)
    return -(q * logs).sum(axis=0) / np.log(base)


def _check_importance(importance_matrix: np.ndarray) -> np.ndarray:
    """``importance_matrix`` as a finite non-negative float64 ``[d, k]``, d, k >= 2."""
    r = np.asarray(importance_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise InvalidArgumentError(
            "importance_matrix must be [d, k] with d >= 2 codes and k >= 2 factors (the entropy "
            f"bases are k and d), got shape {r.shape}"
        )
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InvalidArgumentError("importance_matrix must be finite and non-negative")
    return r


def disentanglement_per_code(importance_matrix: np.ndarray) -> np.ndarray:
    """``1 - H_k(R[i] + 1e-11)`` for each code i: ``[d]`` (1: the code serves one factor).

    Eastwood & Williams (ICLR 2018) disentanglement of one code, with dlib's smoothing.
    """
    r = _check_importance(importance_matrix)
    return 1.0 - _normalised_entropy(r.T + 1e-11, base=r.shape[1])


def completeness_per_factor(importance_matrix: np.ndarray) -> np.ndarray:
    """``1 - H_d(R[:, j] + 1e-11)`` for each factor j: ``[k]`` (1: one code captures it).

    Eastwood & Williams (ICLR 2018) completeness of one factor, with dlib's smoothing.
    """
    r = _check_importance(importance_matrix)
    return 1.0 - _normalised_entropy(r + 1e-11, base=r.shape[0])


def _weights(r: np.ndarray, axis: int) -> np.ndarray:
    """Each row's (``axis=1``) or column's share of the total importance; uniform if all 0."""
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return r.sum(axis=axis) / r.sum()


def disentanglement_from_importance(importance_matrix: np.ndarray) -> float:
    """``sum_i rho_i D_i``, ``rho_i = sum_j R_ij / sum R`` (Eastwood & Williams, ICLR 2018).

    The importance-weighted mean of :func:`disentanglement_per_code` (dlib ``disentanglement``).
    """
    r = _check_importance(importance_matrix)
    return float(np.sum(disentanglement_per_code(r) * _weights(r, axis=1)))


def completeness_from_importance(importance_matrix: np.ndarray) -> float:
    """``sum_j rho_j C_j``, ``rho_j = sum_i R_ij / sum R`` (Eastwood & Williams, ICLR 2018).

    The importance-weighted mean of :func:`completeness_per_factor` (dlib ``completeness``).
    """
    r = _check_importance(importance_matrix)
    return float(np.sum(completeness_per_factor(r) * _weights(r, axis=0)))


def _fit_one_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> tuple[np.ndarray, float, float]:
    """Importances ``[d]``, train and test accuracy of one factor's gradient-boosted trees."""
    model = GradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    importance = np.abs(model.feature_importances_)
    train_acc = float(np.mean(model.predict(x_train) == y_train))
    test_acc = float(np.mean(model.predict(x_test) == y_test))
    return importance, train_acc, test_acc


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    random_state: RandomState = 0,
    n_jobs: int = 1,
) -> dict[str, object]:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams, ICLR 2018).

    R is the ``|feature_importances_|`` of one gradient-boosted tree classifier per factor;
    see the module docstring for the definitions.

    Args:
        codes_train, factors_train: float ``[N_train, d]`` and int ``[N_train, k]`` (dlib:
            10,000 points); d >= 2, k >= 2 (the entropies use log base k and d).
        codes_test, factors_test: ``[N_test, d]``, ``[N_test, k]`` (dlib: 5,000 points).
        random_state: seed of every factor's ``GradientBoostingClassifier`` (dlib leaves it
            unseeded; the trees' only randomness is tie-breaking between equally good splits).
        n_jobs: factors fitted in parallel processes; the values do not depend on it.

    Returns:
        ``{"disentanglement", "completeness", "informativeness_train", "informativeness_test"}``
        as floats (informativeness = mean accuracy over factors, as dlib), plus
        ``"importance_matrix" [d, k]``, ``"disentanglement_per_code" [d]``,
        ``"completeness_per_factor" [k]`` and ``"informativeness_{train,test}_per_factor" [k]``.

    Bad input raises :class:`InvalidArgumentError`: NaN/inf codes, mismatched lengths or widths,
    a one-valued training factor (the classifier cannot be fitted). A constant code dimension
    is valid: it gets zero importance.
    """
    ctr, ftr, cte, fte = check_train_test(
        codes_train, factors_train, codes_test, factors_test, min_dims=2, min_factors=2
    )
    seed = seed_from(random_state)
    k = ftr.shape[1]
    args = [(ctr, ftr[:, j], cte, fte[:, j], seed) for j in range(k)]
    # Cost grows with the number of classes (one tree per class per stage).
    cost = [len(np.unique(ftr[:, j])) for j in range(k)]
    results = run_jobs(_fit_one_factor, args, n_jobs, cost=cost)
    importance = np.stack([r[0] for r in results], axis=1)
    train_acc = np.array([r[1] for r in results])
    test_acc = np.array([r[2] for r in results])
    return {
        "disentanglement": disentanglement_from_importance(importance),
        "completeness": completeness_from_importance(importance),
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
        "importance_matrix": importance,
        "disentanglement_per_code": disentanglement_per_code(importance),
        "completeness_per_factor": completeness_per_factor(importance),
        "informativeness_train_per_factor": train_acc,
        "informativeness_test_per_factor": test_acc,
    }
