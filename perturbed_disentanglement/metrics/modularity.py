"""Modularity and explicitness, as computed by disentanglement_lib.

Ridgeway & Mozer, "Learning Deep Disentangled Embeddings With the F-Statistic Loss", NeurIPS 2018
(arXiv:1802.05312), §3. Modularity of code i: with m_ij the mutual information between code i
and factor j and θ_i = max_j m_ij, ``1 - Σ_{j ≠ argmax} m_ij² / (θ_i² (k - 1))``; a code with
zero MI to every factor scores 0; the score is the mean over codes. Explicitness of factor j:
the macro one-vs-rest ROC-AUC of a logistic regression predicting it from the standardised code;
the score is the mean over factors. dlib (``evaluation/metrics/modularity_explicitness.py``):
MI from the 20-bin histogram discretisation of the training codes (as MIG), codes standardised
with the training mean and standard deviation, ``LogisticRegression()`` with sklearn's defaults,
10,000 train / 5,000 test points.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ..errors import InvalidArgumentError
from ._checks import check_train_test
from ._random import RandomState, seed_from
from .discretize import histogram_discretize, mutual_information_matrix


def modularity_per_code(mutual_information: np.ndarray) -> np.ndarray:
    """Modularity of each code from an MI matrix ``[d, k]`` (k >= 2): ``[d]``, 0 for a silent code.

    ``1 - sum_{j != argmax} m_ij^2 / (theta_i^2 (k - 1))``, ``theta_i = max_j m_ij`` (Ridgeway &
    Mozer, NeurIPS 2018).
    """
    m = np.asarray(mutual_information, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise InvalidArgumentError(
            f"mutual_information must be [d, k] with k >= 2 factors, got shape {m.shape}"
        )
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise InvalidArgumentError("mutual_information must be finite and non-negative")
    sq = np.square(m)
    top = sq.max(axis=1)
    rest = sq.sum(axis=1) - top
    out = np.zeros(m.shape[0])
    active = top > 0
    out[active] = 1.0 - rest[active] / (top[active] * (m.shape[1] - 1.0))
    return out


def modularity_from_mutual_information(mutual_information: np.ndarray) -> float:
    """Mean over codes of :func:`modularity_per_code` (Ridgeway & Mozer, NeurIPS 2018; dlib)."""
    return float(np.mean(modularity_per_code(mutual_information)))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale by the training mean and (population) std, as dlib's ``normalize_data``.

    Computed in the codes' own dtype on the ``[d, N]`` transposed view, the exact operations
    dlib performs on its transposed float32 encoder output (float32 sums are order-sensitive).
    dlib divides by a zero std for a constant code dimension and then crashes on NaN; here such a
    dimension is only centred (it becomes all zeros and carries no information), the convention
    of ``sklearn.preprocessing.StandardScaler``.
    """
    train_t = np.ascontiguousarray(train).T
    test_t = np.ascontiguousarray(test).T
    mean = np.mean(train_t, axis=1)
    std = np.std(train_t, axis=1)
    std = np.where(std > 0, std, np.ones_like(std))
    return ((train_t - mean[:, None]) / std[:, None]).T, ((test_t - mean[:, None]) / std[:, None]).T


def _explicitness_one_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> tuple[float, float]:
    """Train and test macro one-vs-rest ROC-AUC of one factor's logistic regression."""
    clf = LogisticRegression(random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    classes = clf.classes_

    def auc(x: np.ndarray, y: np.ndarray) -> float:
        one_hot = (y[:, None] == classes[None, :]).astype(np.int64)
        return float(roc_auc_score(one_hot, clf.predict_proba(x), average="macro"))

    return auc(x_train, y_train), auc(x_test, y_test)


def modularity_explicitness(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    num_bins: int = 20,
    random_state: RandomState = 0,
) -> dict[str, object]:
    """Modularity and explicitness (Ridgeway & Mozer, NeurIPS 2018), as dlib computes them.

    Modularity from the discretised MI of the training set; explicitness is the mean over
    factors of a logistic regression's macro one-vs-rest ROC-AUC (train and test).

    Args:
        codes_train, factors_train: float ``[N_train, d]``, int ``[N_train, k]``, k >= 2.
        codes_test, factors_test: ``[N_test, d]``, ``[N_test, k]``; each test factor must take
            exactly the values its training factor takes (otherwise a one-vs-rest AUC is
            undefined; dlib crashes on a shape mismatch).
        num_bins: histogram bins per code dimension for the MI (dlib: 20).
        random_state: passed to ``LogisticRegression`` (its default lbfgs solver is
            deterministic, so it does not change the values).

    Returns:
        ``{"modularity", "explicitness_train", "explicitness_test"}`` as floats, plus
        ``"modularity_per_code" [d]``, ``"explicitness_train_per_factor" [k]``,
        ``"explicitness_test_per_factor" [k]`` and ``"mutual_information" [d, k]``.

    ``LogisticRegression()`` is fitted with today's sklearn defaults as dlib's code calls it
    (lbfgs, multinomial, C=1, max_iter=100; the ConvergenceWarning is muted). dlib's published
    runs used sklearn < 0.22, whose default was liblinear one-vs-rest, so explicitness values
    may differ slightly from theirs; the AUC itself is the same macro one-vs-rest ROC-AUC.
    Bad input raises :class:`InvalidArgumentError`; a constant code dimension is valid.
    """
    ctr, ftr, cte, fte = check_train_test(
        codes_train, factors_train, codes_test, factors_test, min_factors=2
    )
    for j in range(ftr.shape[1]):
        train_values, test_values = np.unique(ftr[:, j]), np.unique(fte[:, j])
        if not np.array_equal(train_values, test_values):
            raise InvalidArgumentError(
                f"factor {j} takes {len(train_values)} values in training and "
                f"{len(test_values)} in test, not the same set: explicitness (one-vs-rest AUC) "
                "needs every value in both sets; use more points or drop rare values"
            )
    seed = seed_from(random_state)
    mi = mutual_information_matrix(histogram_discretize(ctr, num_bins), ftr)
    per_code = modularity_per_code(mi)
    x_train, x_test = _standardise(ctr, cte)
    aucs = np.array(
        [
            _explicitness_one_factor(x_train, ftr[:, j], x_test, fte[:, j], seed)
            for j in range(ftr.shape[1])
        ]
    )
    return {
        "modularity": float(np.mean(per_code)),
        "explicitness_train": float(np.mean(aucs[:, 0])),
        "explicitness_test": float(np.mean(aucs[:, 1])),
        "modularity_per_code": per_code,
        "explicitness_train_per_factor": aucs[:, 0],
        "explicitness_test_per_factor": aucs[:, 1],
        "mutual_information": mi,
    }
