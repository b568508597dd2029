"""Histogram discretisation and discrete mutual information, vectorised over (code, factor) pairs.

These are the building blocks of MIG and modularity. They follow disentanglement_lib's
``utils._histogram_discretize`` (each code dimension binned with
``np.digitize(x, np.histogram(x, num_bins)[1][:-1])``, i.e. ``num_bins`` equal-width bins over the
sample range, bin ids 1..num_bins) and ``utils.discrete_mutual_info`` /
``utils.discrete_entropy`` (``sklearn.metrics.mutual_info_score``: natural log, empirical
plug-in estimate, clipped at 0). Instead of one ``mutual_info_score`` call per pair, the joint
counts of every pair come from one ``np.bincount`` per factor.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ._checks import check_codes, check_count, check_factors, check_pair


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Bin each code dimension into ``num_bins`` equal-width bins over its own sample range.

    The discretisation of disentanglement_lib (Locatello et al., ICML 2019) behind MIG and
    modularity.

    Returns int64 ``[N, d]`` bin ids in ``1..num_bins`` (the maximum falls in the last bin). A
    constant dimension lands in a single bin (numpy widens a zero range by ±0.5), so it carries
    zero mutual information with anything: a valid result, not an error. Edges are computed in
    the codes' own precision, exactly like dlib's ``_histogram_discretize``.
    """
    c = check_codes(codes)
    bins = check_count(num_bins, "num_bins")
    out = np.empty(c.shape, dtype=np.int64)
    for i in range(c.shape[1]):
        column = c[:, i]
        try:
            edges = np.histogram_bin_edges(column, bins)
        except ValueError as exc:  # e.g. a range that overflows the dtype (max - min = inf)
            raise InvalidArgumentError(
                f"code dimension {i} cannot be binned into {bins} equal-width bins: {exc}"
            ) from exc
        out[:, i] = np.digitize(column, edges[:-1])
    return out


def _labels_to_indices(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary integer labels of one column to 0..K-1 (order irrelevant to MI)."""
    uniques, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1), len(uniques)


def _mi_from_joint(joint: np.ndarray, n: int) -> np.ndarray:
    """MI in nats of each table in ``joint [..., A, B]`` (counts summing to ``n``), clipped at 0.

    ``n * n_ab / (n_a * n_b)`` is evaluated on exact integer products in float64, so independent
    tables give exactly 0 (e.g. a single-bin code), as ``mutual_info_score`` does.
    """
    joint = joint.astype(np.float64)
    row = joint.sum(axis=-1, keepdims=True)
    col = joint.sum(axis=-2, keepdims=True)
    nz = joint > 0
    ratio = np.ones_like(joint)
    outer = row * col
    np.divide(n * joint, outer, out=ratio, where=nz)
    terms = np.where(nz, joint / n * np.log(ratio), 0.0)
    return np.clip(terms.sum(axis=(-2, -1)), 0.0, None)


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Empirical mutual information (nats) between every code column and every factor: ``[d, k]``.

    ``I(z_i; v_j) = sum p(z, v) log(p(z, v) / (p(z) p(v)))`` with plug-in probabilities, the
    estimator of MIG (Chen et al., NeurIPS 2018) as disentanglement_lib computes it.

    Equal (to rounding, ~1e-15) to ``mutual_info_score(factors[:, j], discrete_codes[:, i])``
    for every pair, dlib's ``discrete_mutual_info``. For factor ``j`` the pair ids
    ``(i * B + bin) * K_j + value`` of all ``d`` code columns are counted by one ``np.bincount``.
    """
    c, f = check_pair(discrete_codes, factors, min_points=1, allow_constant=True)
    if not np.all(c == np.round(c)):
        raise InvalidArgumentError(
            "discrete_codes must hold integer bin ids; discretise with histogram_discretize first"
        )
    n, d = c.shape
    code_idx = np.empty(c.shape, dtype=np.int64)
    code_sizes = np.empty(d, dtype=np.int64)
    for i in range(d):
        code_idx[:, i], code_sizes[i] = _labels_to_indices(c[:, i])
    n_bins = int(code_sizes.max())
    offsets = np.arange(d, dtype=np.int64) * n_bins  # [d]
    mi = np.empty((d, f.shape[1]), dtype=np.float64)
    for j in range(f.shape[1]):
        fac_idx, k_j = _labels_to_indices(f[:, j])
        ids = (code_idx + offsets) * k_j + fac_idx[:, None]  # [N, d]
        if d * n_bins * k_j <= _MAX_DENSE_CELLS:
            joint = np.bincount(ids.ravel(), minlength=d * n_bins * k_j).reshape(d, n_bins, k_j)
            mi[:, j] = _mi_from_joint(joint, n)
        else:
            mi[:, j] = _mi_sparse(ids, code_idx, fac_idx, n_bins, k_j)
    return mi


# Dense joint tables are used up to 2**24 cells (128 MiB of counts); beyond that (e.g. labels
# with thousands of distinct values) only the occupied cells are counted.
_MAX_DENSE_CELLS = 2**24


def _mi_sparse(
    ids: np.ndarray, code_idx: np.ndarray, fac_idx: np.ndarray, n_bins: int, k_j: int
) -> np.ndarray:
    """Same as :func:`_mi_from_joint` on the occupied cells only: ``[d]`` MIs for one factor."""
    n, d = code_idx.shape
    cells, counts = np.unique(ids.ravel(), return_counts=True)
    code_of_cell = cells // k_j  # = i * n_bins + bin
    dim_of_cell = code_of_cell // n_bins
    code_counts = np.bincount(code_of_cell, weights=counts, minlength=d * n_bins)
    fac_counts = np.bincount(fac_idx, minlength=k_j)
    outer = code_counts[code_of_cell] * fac_counts[cells % k_j]
    terms = counts / n * np.log(n * counts.astype(np.float64) / outer)
    return np.clip(np.bincount(dim_of_cell, weights=terms, minlength=d), 0.0, None)


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Empirical entropy (nats) of each factor column: ``[k]``; 0 for a one-valued factor.

    ``H(v_j) = -sum p log p`` with plug-in probabilities, MIG's normaliser (Chen et al., 2018).

    dlib's ``discrete_entropy`` (``mutual_info_score(y, y)``, which equals H(y)).
    """
    f = check_factors(factors, allow_constant=True)
    n = f.shape[0]
    out = np.empty(f.shape[1], dtype=np.float64)
    for j in range(f.shape[1]):
        _, counts = np.unique(f[:, j], return_counts=True)
        p = counts / n
        out[j] = float(-(p * np.log(p)).sum()) if len(counts) > 1 else 0.0
    return out


def discrete_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI (nats) between two 1-D integer label arrays: the single-pair form, for checks and tests.

    The same plug-in estimate as :func:`mutual_information_matrix` (dlib's
    ``discrete_mutual_info``, Locatello et al., ICML 2019).
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim != 1 or b_arr.ndim != 1 or len(a_arr) != len(b_arr) or len(a_arr) == 0:
        raise InvalidArgumentError(
            f"expected two non-empty 1-D label arrays of equal length, got {a_arr.shape} and "
            f"{b_arr.shape}"
        )
    return float(mutual_information_matrix(a_arr[:, None], b_arr[:, None])[0, 0])
