"""Separated Attribute Predictability (SAP) for discrete factors, as in disentanglement_lib.

Kumar, Sattigeri, Balakrishnan, "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations", ICLR 2018, §3. Score matrix S ``[d, k]``: S_ij is the test accuracy of a
classifier predicting factor j from code dimension i alone; SAP is the mean over factors of the
gap between the two largest entries of column j. dlib (``evaluation/metrics/sap_score.py``,
``continuous_factors=False``, the setting of all its studies) uses
``LinearSVC(C=0.01, class_weight="balanced")`` on 10,000 train points, accuracy on 5,000 test.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ._checks import check_train_test
from ._parallel import run_jobs
from ._random import RandomState, seed_from


def sap_from_score_matrix(score_matrix: np.ndarray) -> np.ndarray:
    """Per-factor gap between the best and second-best code: ``[k]`` (dlib ``avg_diff_top_two``).

    ``S_(1)j - S_(2)j`` of the score matrix column j (Kumar et al., ICLR 2018).
    """
    ordered = np.sort(score_matrix, axis=0)
    return ordered[-1] - ordered[-2]


def _score_one_code(
    z_train: np.ndarray, f_train: np.ndarray, z_test: np.ndarray, f_test: np.ndarray, seed: int
) -> np.ndarray:
    """Test accuracies of one code dimension for every factor: ``[k]``."""
    out = np.empty(f_train.shape[1])
    for j in range(f_train.shape[1]):
        # dlib ran sklearn < 1.5, whose default was the dual solver (dual=True, stopped at
        # max_iter=1000, seed-dependent when unconverged). The problem is strictly convex, so the
        # primal solver reaches the same optimum exactly, deterministically and ~3x faster.
        clf = LinearSVC(C=0.01, class_weight="balanced", dual=False, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z_train[:, None], f_train[:, j])
        out[j] = np.mean(clf.predict(z_test[:, None]) == f_test[:, j])
    return out


def sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    random_state: RandomState = 0,
    n_jobs: int = 1,
) -> dict[str, object]:
    """SAP score (Kumar et al., ICLR 2018) with per-(code, factor) linear SVMs.

    The mean over factors of :func:`sap_from_score_matrix` on the test accuracies, dlib's
    discrete-factor path.

    Args:
        codes_train, factors_train: float ``[N_train, d]`` (d >= 2), int ``[N_train, k]``.
        codes_test, factors_test: ``[N_test, d]``, ``[N_test, k]``.
        random_state: passed to every ``LinearSVC``; the primal solver used is deterministic, so
            it does not change the values (kept for a uniform API).
        n_jobs: code dimensions fitted in parallel processes; values do not depend on it.

    Returns:
        ``{"sap": float, "sap_per_factor": [k], "score_matrix": [d, k]}``.

    Bad input raises :class:`InvalidArgumentError` (NaN/inf codes, mismatched shapes, a
    one-valued training factor). A constant code dimension is valid: its SVM predicts one class.
    """
    ctr, ftr, cte, fte = check_train_test(
        codes_train, factors_train, codes_test, factors_test, min_dims=2
    )
    seed = seed_from(random_state)
    d = ctr.shape[1]
    args = [(ctr[:, i], ftr, cte[:, i], fte, seed) for i in range(d)]
    score = np.stack(run_jobs(_score_one_code, args, n_jobs), axis=0)
    per_factor = sap_from_score_matrix(score)
    return {"sap": float(np.mean(per_factor)), "sap_per_factor": per_factor, "score_matrix": score}
