"""Known-answer and reference tests of the array metrics (MIG, DCI, SAP, modularity/explicitness).

The references are straightforward re-statements of disentanglement_lib's definitions written
here with sklearn / scipy (one ``mutual_info_score`` call per pair, ``scipy.stats.entropy``), plus
hand-computed values and the known answers of dlib's own unit tests on importance matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import mutual_info_score

from perturbed_disentanglement.errors import InvalidArgumentError
from perturbed_disentanglement.metrics import (
    completeness_from_importance,
    completeness_per_factor,
    dci,
    discrete_entropy,
    discrete_mutual_information,
    disentanglement_from_importance,
    disentanglement_per_code,
    histogram_discretize,
    mig,
    modularity_explicitness,
    modularity_from_mutual_information,
    modularity_per_code,
    mutual_information_matrix,
    sap,
    sap_from_score_matrix,
    split_train_test,
)

# --------------------------------------------------------------------------------------------
# helpers


def random_factors(n: int, sizes: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def mixed_codes(factors: np.ndarray, seed: int, num_codes: int = 6, noise: float = 0.3):
    """A noisy linear mix of the factors, float32 like an encoder's output."""
    rng = np.random.default_rng(seed)
    scaled = factors / factors.max(axis=0)
    mix = rng.normal(size=(factors.shape[1], num_codes))
    return (scaled @ mix + noise * rng.normal(size=(len(factors), num_codes))).astype(np.float32)


def reference_mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """MIG per factor, the straightforward way: digitize per dimension, one sklearn call per pair."""
    d, k = codes.shape[1], factors.shape[1]
    binned = [
        np.digitize(codes[:, i], np.histogram(codes[:, i], num_bins)[1][:-1]) for i in range(d)
    ]
    mi = np.array(
        [[mutual_info_score(factors[:, j], binned[i]) for j in range(k)] for i in range(d)]
    )
    entropy = np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(k)])
    ordered = np.sort(mi, axis=0)
    return (ordered[-1] - ordered[-2]) / entropy


# --------------------------------------------------------------------------------------------
# discretisation and mutual information


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_discretize_is_numpy_digitize_of_histogram_edges(dtype):
    codes = np.random.default_rng(0).normal(size=(500, 4)).astype(dtype)
    binned = histogram_discretize(codes, 20)
    for i in range(4):
        expected = np.digitize(codes[:, i], np.histogram(codes[:, i], 20)[1][:-1])
        np.testing.assert_array_equal(binned[:, i], expected)
    assert binned.min() == 1 and binned.max() == 20
    assert np.all(binned[np.argmax(codes, axis=0), np.arange(4)] == 20)


def test_constant_code_dimension_is_one_bin_with_zero_mi():
    factors = random_factors(400, (3, 5), seed=1)
    codes = np.column_stack([factors[:, 0] + 0.0, np.full(400, 2.5)])
    binned = histogram_discretize(codes)
    assert len(np.unique(binned[:, 1])) == 1
    mi = mutual_information_matrix(binned, factors)
    assert np.all(mi[1] == 0.0)


def test_mi_of_tiny_tables_by_hand():
    assert discrete_mutual_information([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(math.log(2))
    assert discrete_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    # counts [[2, 1], [0, 1]], N = 4: rows (3/4, 1/4), columns (1/2, 1/2)
    by_hand = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5))
    by_hand += 0.25 * math.log(0.25 / (0.25 * 0.5))
    got = discrete_mutual_information([0, 0, 0, 1], [0, 0, 1, 1])
    assert got == pytest.approx(by_hand, abs=1e-15)
    assert got == pytest.approx(mutual_info_score([0, 0, 0, 1], [0, 0, 1, 1]), abs=1e-15)


def test_mi_matrix_equals_sklearn_per_pair_with_arbitrary_labels():
    rng = np.random.default_rng(3)
    codes = rng.integers(-3, 9, size=(700, 5)) * 3  # gaps and negative labels
    factors = np.column_stack([rng.integers(0, 4, 700), rng.integers(10, 50, 700) * -1])
    factors[:, 0] = (factors[:, 0] + codes[:, 2]) % 4  # some dependence
    mi = mutual_information_matrix(codes, factors)
    for i in range(5):
        for j in range(2):
            assert abs(mi[i, j] - mutual_info_score(factors[:, j], codes[:, i])) < 1e-12
    h = discrete_entropy(factors)
    for j in range(2):
        assert abs(h[j] - mutual_info_score(factors[:, j], factors[:, j])) < 1e-12


def test_mi_matrix_sparse_path_for_many_labels_equals_sklearn(monkeypatch):
    import perturbed_disentanglement.metrics.discretize as discretize

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 300, size=(2000, 3))
    factors = np.column_stack([rng.integers(0, 500, 2000), codes[:, 0] // 3])
    dense = mutual_information_matrix(codes, factors)
    monkeypatch.setattr(discretize, "_MAX_DENSE_CELLS", 10)
    sparse = mutual_information_matrix(codes, factors)
    for i in range(3):
        for j in range(2):
            expected = mutual_info_score(factors[:, j], codes[:, i])
            assert abs(dense[i, j] - expected) < 1e-12
            assert abs(sparse[i, j] - expected) < 1e-12


def test_entropy_of_uniform_factor_is_log_k():
    factors = np.tile(np.arange(8), 50)[:, None]
    assert discrete_entropy(factors)[0] == pytest.approx(math.log(8), abs=1e-14)


# --------------------------------------------------------------------------------------------
# MIG


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mig_equals_straightforward_sklearn_loop(seed, dtype):
    factors = random_factors(3000, (3, 6, 40, 32), seed=seed)
    codes = mixed_codes(factors, seed=seed + 10).astype(dtype)
    codes[:, 4] = codes[:, 1]
    expected = reference_mig(codes, factors)
    out = mig(codes, factors)
    np.testing.assert_allclose(out["mig_per_factor"], expected, rtol=0, atol=1e-12)
    assert abs(out["mig"] - float(np.mean(expected))) < 1e-12
    assert out["mutual_information"].shape == (6, 4)
    assert isinstance(out["mig"], float)


def test_mig_codes_copying_the_factors_is_near_one():
    factors = random_factors(5000, (3, 6, 10, 20), seed=4)
    out = mig(factors.astype(np.float32), factors)
    assert out["mig"] > 0.97
    assert np.all(out["mig_per_factor"] > 0.95)


def test_mig_of_noise_codes_is_near_zero():
    factors = random_factors(5000, (3, 6, 10, 20), seed=5)
    codes = np.random.default_rng(6).normal(size=(5000, 8))
    assert mig(codes, factors)["mig"] < 0.03


def test_mig_duplicated_dimension_gives_zero_for_that_factor():
    factors = random_factors(4000, (4, 5, 6), seed=7)
    codes = np.column_stack([factors, factors[:, 1]]).astype(np.float64)
    per_factor = mig(codes, factors)["mig_per_factor"]
    assert per_factor[1] == pytest.approx(0.0, abs=1e-15)
    assert per_factor[0] > 0.95 and per_factor[2] > 0.95


def test_mig_is_invariant_to_permuting_code_dimensions():
    factors = random_factors(3000, (3, 6, 8), seed=8)
    codes = mixed_codes(factors, seed=9)
    perm = np.array([3, 0, 5, 1, 4, 2])
    a, b = mig(codes, factors), mig(codes[:, perm], factors)
    assert a["mig"] == pytest.approx(b["mig"], abs=1e-15)
    np.testing.assert_allclose(a["mutual_information"][perm], b["mutual_information"], atol=1e-15)
    # permuting factors permutes the per-factor result
    c = mig(codes, factors[:, [2, 0, 1]])
    np.testing.assert_allclose(c["mig_per_factor"], a["mig_per_factor"][[2, 0, 1]], atol=1e-15)


def test_mig_drops_when_one_code_mixes_two_factors():
    factors = random_factors(5000, (8, 8, 5), seed=10)
    clean = factors.astype(np.float64)
    mixed = clean.copy()
    mixed[:, 0] = clean[:, 0] + 8.0 * clean[:, 1] * np.random.default_rng(11).uniform(size=5000)
    a, b = mig(clean, factors), mig(mixed, factors)
    assert b["mig_per_factor"][0] < a["mig_per_factor"][0] - 0.3
    assert b["mig"] < a["mig"] - 0.1
    # factor 2 is untouched: only the small estimation bias of its second-best MI moves
    assert b["mig_per_factor"][2] == pytest.approx(a["mig_per_factor"][2], abs=0.01)


def test_mig_accepts_a_constant_code_dimension():
    factors = random_factors(2000, (3, 4), seed=12)
    codes = np.column_stack([factors, np.zeros(2000)]).astype(np.float32)
    out = mig(codes, factors)
    assert np.all(np.isfinite(out["mig_per_factor"]))
    assert np.all(out["mutual_information"][2] == 0.0)


@pytest.mark.parametrize(
    ("codes", "factors", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([[0], [1]]), "NaN or infinite"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), np.array([[0], [1]]), "NaN or infinite"),
        (np.zeros((5, 2)), np.arange(4)[:, None], "rows"),
        (np.zeros(5), np.zeros((5, 1), dtype=int), "2-D"),
        (np.zeros((6, 1)), np.arange(6)[:, None], "at least 2"),
        (np.random.default_rng(0).normal(size=(6, 2)), np.zeros((6, 1), dtype=int), "single"),
        (np.zeros((4, 2)), np.array([[0.5], [1], [0], [1]]), "integer"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([[0], [1]]), "real-valued"),
        (np.array([[-3e38, 0], [3e38, 1]], np.float32), np.array([[0], [1]]), "cannot be binned"),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_mig_bad_input_raises_clear_error(codes, factors, match):
    with pytest.raises(InvalidArgumentError, match=match):
        mig(codes, factors)


def test_mig_constant_factor_error_names_the_column():
    factors = random_factors(100, (3, 4), seed=0)
    factors = np.column_stack([factors, np.full(100, 7)])
    with pytest.raises(InvalidArgumentError, match=r"\[2\]"):
        mig(np.random.default_rng(0).normal(size=(100, 3)), factors)


def test_mig_num_bins_validated():
    with pytest.raises(InvalidArgumentError, match="num_bins"):
        mig(np.zeros((4, 2)), np.array([[0], [1], [0], [1]]), num_bins=0)


# --------------------------------------------------------------------------------------------
# DCI: importance-matrix algebra (known answers of dlib's own tests) and the full metric

DIAG = np.diag(5.0 * np.ones(5))


@pytest.mark.parametrize(
    ("matrix", "disentanglement", "completeness"),
    [
        (DIAG, 1.0, 1.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 1.0, 1.0),
        (np.zeros((10, 10)), 0.0, 0.0),
        (np.vstack([DIAG, DIAG]), 1.0, 1.0 - math.log(2) / math.log(10)),
        (DIAG[:2, :], 1.0, 1.0),
        (np.hstack([DIAG, DIAG]), 1.0 - math.log(2) / math.log(10), 1.0),
    ],
)
def test_dci_from_importance_known_answers(matrix, disentanglement, completeness):
    assert disentanglement_from_importance(matrix) == pytest.approx(disentanglement, abs=1e-7)
    assert completeness_from_importance(matrix) == pytest.approx(completeness, abs=1e-7)


def test_dci_entropies_match_scipy():
    r = np.random.default_rng(0).random((7, 4))
    expected_d = 1 - scipy.stats.entropy(r.T + 1e-11, base=4)
    expected_c = 1 - scipy.stats.entropy(r + 1e-11, base=7)
    np.testing.assert_allclose(disentanglement_per_code(r), expected_d, atol=1e-14)
    np.testing.assert_allclose(completeness_per_factor(r), expected_c, atol=1e-14)
    weights = r.sum(axis=1) / r.sum()
    assert disentanglement_from_importance(r) == pytest.approx(np.sum(expected_d * weights))


def test_importance_matrix_validated():
    with pytest.raises(InvalidArgumentError, match="d >= 2"):
        disentanglement_from_importance(np.ones((1, 3)))
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        completeness_from_importance(-np.ones((3, 3)))


def _split(codes, factors, n_train):
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


def test_dci_on_codes_copying_the_factors():
    factors = random_factors(500, (2, 3, 4), seed=1)
    codes = factors + 0.01 * np.random.default_rng(2).normal(size=factors.shape)
    out = dci(*_split(codes, factors, 300), random_state=0)
    assert out["disentanglement"] > 0.9
    assert out["completeness"] > 0.9
    assert out["informativeness_test"] > 0.95
    assert out["importance_matrix"].shape == (3, 3)
    assert np.argmax(out["importance_matrix"], axis=0).tolist() == [0, 1, 2]


def test_dci_of_noise_codes_is_low():
    factors = random_factors(500, (2, 3, 4), seed=3)
    codes = np.random.default_rng(4).normal(size=(500, 3))
    out = dci(*_split(codes, factors, 300), random_state=0)
    assert out["disentanglement"] < 0.3
    assert out["informativeness_test"] < 0.6


@pytest.mark.slow  # starts worker processes (seconds on a loaded machine)
def test_dci_is_seeded_and_invariant_to_code_permutation_and_n_jobs():
    factors = random_factors(400, (2, 3), seed=5)
    codes = factors + 0.3 * np.random.default_rng(6).normal(size=(400, 2))
    codes = np.column_stack([codes, np.random.default_rng(7).normal(size=400)])
    a = dci(*_split(codes, factors, 250), random_state=3)
    b = dci(*_split(codes, factors, 250), random_state=3, n_jobs=2)
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert a[key] == b[key]
    c = dci(*_split(codes[:, [2, 0, 1]], factors, 250), random_state=3)
    assert c["disentanglement"] == pytest.approx(a["disentanglement"], abs=0.02)
    assert c["completeness"] == pytest.approx(a["completeness"], abs=0.02)


def test_dci_accepts_a_constant_code_dimension():
    factors = random_factors(300, (2, 3), seed=8)
    codes = np.column_stack([factors + 0.01, np.ones(300)])
    out = dci(*_split(codes, factors, 200))
    assert out["importance_matrix"][2].sum() == 0.0
    assert np.isfinite(out["disentanglement"]) and np.isfinite(out["completeness"])


def test_dci_bad_input():
    factors = random_factors(100, (2, 3), seed=9)
    codes = np.random.default_rng(0).normal(size=(100, 3))
    one_valued = factors.copy()
    one_valued[:, 1] = 0
    with pytest.raises(InvalidArgumentError, match="single value"):
        dci(*_split(codes, one_valued, 60))
    with pytest.raises(InvalidArgumentError, match="dimensions"):
        dci(codes[:60], factors[:60], codes[60:, :2], factors[60:])
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        dci(*_split(codes, factors[:, :1], 60))
    with pytest.raises(InvalidArgumentError, match="n_jobs"):
        dci(*_split(codes, factors, 60), n_jobs=0)
    with pytest.raises(InvalidArgumentError, match="random_state"):
        dci(*_split(codes, factors, 60), random_state="seed")


# --------------------------------------------------------------------------------------------
# SAP


def test_sap_from_score_matrix_is_mean_gap_of_top_two():
    score = np.array([[0.9, 0.2], [0.5, 0.6], [0.1, 0.7]])
    np.testing.assert_allclose(sap_from_score_matrix(score), [0.4, 0.1])


def test_sap_on_binary_factors_copied_and_noise():
    factors = random_factors(2000, (2, 2, 2), seed=11)
    codes = factors + 0.05 * np.random.default_rng(12).normal(size=factors.shape)
    good = sap(*_split(codes, factors, 1200))
    # each factor: its own code predicts it perfectly, the others are at chance (0.5)
    assert good["sap"] > 0.4
    assert np.all(np.diag(good["score_matrix"]) > 0.99)
    noise = sap(*_split(np.random.default_rng(13).normal(size=(2000, 3)), factors, 1200))
    assert noise["sap"] < 0.1


def test_sap_duplicated_dimension_and_score_matrix_entry():
    factors = random_factors(1500, (2, 3), seed=14)
    codes = np.column_stack([factors, factors[:, 0]]) + 0.05 * np.random.default_rng(15).normal(
        size=(1500, 3)
    )
    out = sap(*_split(codes, factors, 1000))
    assert out["sap_per_factor"][0] == pytest.approx(0.0, abs=0.01)
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=0.01, class_weight="balanced", dual=False).fit(
        codes[:1000, 1:2], factors[:1000, 1]
    )
    expected = np.mean(clf.predict(codes[1000:, 1:2]) == factors[1000:, 1])
    assert out["score_matrix"][1, 1] == pytest.approx(expected, abs=1e-12)
    same = sap(*_split(codes, factors, 1000), n_jobs=2)
    np.testing.assert_array_equal(same["score_matrix"], out["score_matrix"])


# --------------------------------------------------------------------------------------------
# modularity and explicitness


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (DIAG, 1.0),
        (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2.0 / 3.0),
        (np.zeros((10, 10)), 0.0),
        (np.vstack([DIAG, DIAG]), 1.0),
        (DIAG[:2, :], 1.0),
        (np.hstack([DIAG, DIAG]), 1.0 - 1.0 / 9.0),
    ],
)
def test_modularity_known_answers(matrix, expected):
    assert modularity_from_mutual_information(matrix) == pytest.approx(expected, abs=1e-12)


def test_modularity_per_code_by_hand():
    # code 0: squares (4, 1, 0) -> 1 - 1 / (4 * 2); code 1: silent -> 0
    np.testing.assert_allclose(modularity_per_code([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), [7 / 8, 0])
    with pytest.raises(InvalidArgumentError, match="k >= 2"):
        modularity_per_code(np.ones((3, 1)))


def test_modularity_explicitness_on_copied_and_noise_codes():
    factors = random_factors(1500, (3, 4, 2), seed=16)
    codes = factors + 0.05 * np.random.default_rng(17).normal(size=factors.shape)
    good = modularity_explicitness(*_split(codes, factors, 1000))
    assert good["modularity"] > 0.95
    assert good["explicitness_test"] > 0.9
    mi_train = mig(codes[:1000], factors[:1000])["mutual_information"]
    np.testing.assert_allclose(good["mutual_information"], mi_train, atol=1e-15)
    noise = modularity_explicitness(
        *_split(np.random.default_rng(18).normal(size=(1500, 3)), factors, 1000)
    )
    assert noise["explicitness_test"] < 0.6


def test_explicitness_tolerates_a_constant_code_dimension():
    factors = random_factors(600, (3, 2), seed=19)
    codes = np.column_stack([factors + 0.1, np.full(600, 4.0)]).astype(np.float32)
    out = modularity_explicitness(*_split(codes, factors, 400))
    values = [out["modularity"], out["explicitness_train"], out["explicitness_test"]]
    assert np.all(np.isfinite(values))
    assert out["modularity_per_code"][2] == 0.0


def test_explicitness_needs_the_same_values_in_train_and_test():
    factors = random_factors(300, (3, 2), seed=20)
    factors[200:, 0] = np.where(factors[200:, 0] == 2, 1, factors[200:, 0])
    codes = np.random.default_rng(0).normal(size=(300, 2))
    with pytest.raises(InvalidArgumentError, match="same set"):
        modularity_explicitness(*_split(codes, factors, 200))


# --------------------------------------------------------------------------------------------
# split


def test_split_train_test_uses_ceil_like_dlib_and_rejects_empty_parts():
    codes, factors = np.arange(20.0).reshape(10, 2), np.arange(10)[:, None]
    c_tr, f_tr, c_te, f_te = split_train_test(codes, factors, 0.75)
    assert len(c_tr) == 8 and len(c_te) == 2 and f_tr[-1, 0] == 7 and f_te[0, 0] == 8
    with pytest.raises(InvalidArgumentError, match="too few"):
        split_train_test(codes[:2], factors[:2], 0.9)
    with pytest.raises(InvalidArgumentError, match="train_fraction"):
        split_train_test(codes, factors, 1.0)
