"""Metrics that need a ground truth and an encoder; active units; the paper's Fig. 4 quantities.

The synthetic grid (factors a: 3, b: 4, c: 2; 8x8 grey images) is drawn so that every Fig. 4
number has a closed form:

- a lights the 2 pixels (rows 0-1, column a): one step turns 2 pixels off and 2 on, so
  ||dx||^2 = 4; E[x | a] is 1 on column a, so each of the 6 pixels varies as Bernoulli(1/3):
  explained variance 6 * 2/9 = 4/3;
- b sets rows 4-7 (32 pixels) to b/3: ||dx||^2 = 32/9; explained variance 32 * Var(b/3) = 40/9;
- c lights row 2, columns 4-7 (4 pixels) when c = 1: ||dx||^2 = 4; explained variance 4 * 1/4;
- row 3 is left free for a test perturbation: a dot at column round(s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from perturbed_disentanglement.errors import DataFormatError, InvalidArgumentError
from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor
from perturbed_disentanglement.metrics.active_units import (
    active_units,
    information_level,
    information_level_by_factor,
    mean_posterior_variance,
    num_active_units,
)
from perturbed_disentanglement.metrics.beta_vae_score import beta_vae_score, paired_batches
from perturbed_disentanglement.metrics.expansiveness import squared_step_norms, standardized_step
from perturbed_disentanglement.metrics.explained_variance import (
    between_group_variance,
    s_groups,
)
from perturbed_disentanglement.metrics.factor_vae_score import (
    factor_vae_score,
    fixed_factor_batches,
)
from perturbed_disentanglement.metrics.fig4 import default_s_delta, fig4_quantities
from perturbed_disentanglement.metrics.grid_scan import iter_lines, line_indices
from perturbed_disentanglement.metrics.sampling import encode_grid, encode_images, sample_codes
from perturbed_disentanglement.perturbation.view import PerturbedView

SIZES = (3, 4, 2)


def _render(a: int, b: int, c: int) -> np.ndarray:
    img = np.zeros((8, 8, 1), dtype=np.uint8)
    img[0:2, a, 0] = 255
    img[2, 4:8, 0] = 255 * c
    img[4:8, :, 0] = 85 * b
    return img


@pytest.fixture(scope="module")
def gt() -> ArrayGroundTruth:
    factors = np.stack(np.unravel_index(np.arange(np.prod(SIZES)), SIZES), axis=1)
    images = np.stack([_render(*row) for row in factors])
    specs = [Factor(n, np.arange(s, dtype=float)) for n, s in zip("abc", SIZES)]
    return ArrayGroundTruth("toy", specs, images)


def oracle(noise: float = 1e-3, seed: int = 0):
    """An encoder that reads the factors back from the pixels (plus a little noise)."""
    rng = np.random.default_rng(seed)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = images[..., 0].astype(float) / 255
        a = np.argmax(x[:, 0, :3], axis=1)
        b = x[:, 4:8, :].mean(axis=(1, 2)) * 3
        c = x[:, 2, 4:8].mean(axis=1)
        mu = np.stack([a, b, c], axis=1) + noise * rng.standard_normal((len(x), 3))
        return mu, np.zeros_like(mu)

    return encode


def noise_encoder(seed: int = 0):
    rng = np.random.default_rng(seed)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = rng.standard_normal((len(images), 3))
        return mu, np.zeros_like(mu)

    return encode


def dot(images: np.ndarray, indices: np.ndarray, s: np.ndarray | None) -> np.ndarray:
    """A test perturbation: one white pixel in row 3 at column round(s)."""
    out = images.copy()
    out[np.arange(len(out)), 3, np.rint(s).astype(int), 0] = 255
    return out


# --- sampling --------------------------------------------------------------------------------
def test_sample_codes_shapes_and_seeding(gt):
    mu, factors = sample_codes(gt, oracle(0.0), 50, 7, batch_size=16)
    assert mu.shape == (50, 3) and factors.shape == (50, 3) and factors.dtype == np.int64
    np.testing.assert_allclose(mu, factors, atol=1e-12)  # the oracle reads the factors back
    again = sample_codes(gt, oracle(0.0), 50, 7, batch_size=7)  # chunking changes nothing
    np.testing.assert_array_equal(factors, again[1])
    np.testing.assert_array_equal(mu, again[0])
    other = sample_codes(gt, oracle(0.0), 50, 8)[1]
    assert not np.array_equal(factors, other)


def test_encode_grid_is_grid_ordered(gt):
    mu, logvar = encode_grid(gt, oracle(0.0), batch_size=5, progress=False)
    assert mu.shape == logvar.shape == (len(gt), 3)
    np.testing.assert_allclose(mu, gt.factors(np.arange(len(gt))), atol=1e-12)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: np.zeros((n, 3)), "pair"),
        (lambda n: (np.zeros((n, 3)), np.zeros((n, 2))), "differ in shape"),
        (lambda n: (np.zeros((n + 1, 3)), np.zeros((n + 1, 3))), "shape"),
        (lambda n: (np.full((n, 3), np.nan), np.zeros((n, 3))), "NaN"),
    ],
)
def test_bad_encoder_output_is_reported(gt, output, message):
    with pytest.raises(DataFormatError, match=message):
        sample_codes(gt, lambda x: output(len(x)), 10, 0)


def test_encoder_changing_dimension_is_reported(gt):
    calls = iter([3, 4])

    def encode(x):
        d = next(calls)
        return np.zeros((len(x), d)), np.zeros((len(x), d))

    with pytest.raises(DataFormatError, match="dimensions"):
        sample_codes(gt, encode, 10, 0, batch_size=5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_counts_are_rejected(gt, bad):
    with pytest.raises(InvalidArgumentError):
        sample_codes(gt, oracle(), bad, 0)


def test_bad_random_state_is_rejected(gt):
    with pytest.raises(InvalidArgumentError, match="random_state"):
        sample_codes(gt, oracle(), 5, "seed")


# --- FactorVAE score -------------------------------------------------------------------------
def test_fixed_factor_batches_fix_exactly_one_factor(gt):
    fixed, rows = fixed_factor_batches(gt, 40, 16, np.random.default_rng(0))
    for f, batch in zip(fixed, rows):
        assert np.all(batch[:, f] == batch[0, f])
    # the other factors still vary in (nearly) every batch
    varying = [(rows[i].std(axis=0) > 0).sum() for i in range(40)]
    assert min(varying) == gt.num_factors - 1


def test_factor_vae_oracle_scores_one(gt):
    kw = dict(num_train=300, num_eval=200, num_variance_estimate=500, batch_size=32)
    out = factor_vae_score(gt, oracle(), 0, **kw)
    assert out == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}
    # the result depends on the seed only, not on the encoding chunk size
    assert factor_vae_score(gt, oracle(), 0, chunk_size=100, **kw) == out


def test_factor_vae_noise_is_near_chance(gt):
    out = factor_vae_score(
        gt, noise_encoder(), 1, num_train=600, num_eval=600, num_variance_estimate=500
    )
    assert out["num_active_dims"] == 3
    assert 0.2 < out["eval_accuracy"] < 0.47  # chance is 1/3; sd of the estimate ~ 0.02


def test_factor_vae_prunes_collapsed_dimensions(gt):
    base = oracle()

    def with_dead_dim(x):
        mu, lv = base(x)
        dead = np.full((len(x), 1), 0.3) + 0.01 * np.random.default_rng(1).standard_normal(
            (len(x), 1)
        )
        return np.hstack([mu, dead]), np.hstack([lv, np.zeros((len(x), 1))])

    out = factor_vae_score(
        gt, with_dead_dim, 0, num_train=100, num_eval=50, num_variance_estimate=300
    )
    assert out["num_active_dims"] == 3 and out["eval_accuracy"] == 1.0
    collapsed = factor_vae_score(
        gt,
        lambda x: (np.zeros((len(x), 2)), np.zeros((len(x), 2))),
        0,
        num_train=10,
        num_eval=10,
        num_variance_estimate=10,
    )
    assert collapsed == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_factor_vae_rejects_too_few_points(gt):
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        factor_vae_score(gt, oracle(), 0, batch_size=1)
    with pytest.raises(InvalidArgumentError, match="num_variance_estimate"):
        factor_vae_score(gt, oracle(), 0, num_variance_estimate=1)


# --- beta-VAE score --------------------------------------------------------------------------
def test_paired_batches_share_the_label_factor(gt):
    labels, first, second = paired_batches(gt, 30, 8, np.random.default_rng(0))
    for y, a, b in zip(labels, first, second):
        np.testing.assert_array_equal(a[:, y], b[:, y])
        assert not np.array_equal(a, b)


def test_beta_vae_oracle_scores_one_and_noise_chance(gt):
    kw = dict(num_train=300, num_eval=300, batch_size=32)
    good = beta_vae_score(gt, oracle(), 0, **kw)
    bad = beta_vae_score(gt, noise_encoder(), 0, **kw)
    assert good["train_accuracy"] >= 0.99 and good["eval_accuracy"] >= 0.99
    assert bad["eval_accuracy"] < 0.47  # chance is 1/3
    assert beta_vae_score(gt, oracle(), 0, chunk_size=50, **kw) == good


# --- active units ----------------------------------------------------------------------------
def test_active_units_on_crafted_logvar():
    # mean variances: [0.01, 0.5, 0.9, 1.0] -> first two active under 0.8
    var = np.array([[0.01, 0.2, 0.9, 1.0], [0.01, 0.8, 0.9, 1.0]])
    logvar = np.log(var)
    np.testing.assert_allclose(mean_posterior_variance(logvar), [0.01, 0.5, 0.9, 1.0])
    np.testing.assert_array_equal(active_units(logvar), [True, True, False, False])
    assert num_active_units(logvar) == 2
    assert num_active_units(logvar, threshold=0.95) == 3
    np.testing.assert_allclose(information_level(logvar), [0.99, 0.5, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(information_level_by_factor(logvar, np.array([1, 0])), [0.5, 0.99])


def test_active_units_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match="NaN"):
        active_units(np.array([[0.0, np.nan]]))
    with pytest.raises(InvalidArgumentError, match="2-D"):
        active_units(np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="dimensions"):
        information_level_by_factor(np.zeros((2, 2)), np.array([2]))


# --- grid scan -------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_lines_cover_the_grid_once_and_step_along_the_axis(gt, axis):
    seen = []
    for idx, block in iter_lines(gt.images, SIZES, axis, chunk_images=5):
        f = gt.factors(idx.reshape(-1)).reshape(*idx.shape, 3)
        np.testing.assert_array_equal(
            f[:, :, axis], np.broadcast_to(np.arange(SIZES[axis]), idx.shape)
        )
        others = np.delete(f, axis, axis=2)
        assert np.all(others == others[:, :1])
        np.testing.assert_array_equal(block, gt.images(idx.reshape(-1)).reshape(block.shape))
        seen.append(idx.reshape(-1))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(len(gt)))
    assert line_indices(SIZES, axis, 0, 0).shape == (0, SIZES[axis])


# --- Fig. 4 ----------------------------------------------------------------------------------
def test_standardized_step_matches_the_factor_std():
    for n in (2, 3, 32):
        assert standardized_step(n) == pytest.approx(1 / np.std(np.arange(n)))
    with pytest.raises(InvalidArgumentError):
        standardized_step(1)


def test_squared_step_norms_by_hand():
    block = np.zeros((1, 3, 2, 2, 1), dtype=np.uint8)
    block[0, 1, 0, 0] = 255
    block[0, 2, :, :] = 51
    np.testing.assert_allclose(squared_step_norms(block), [[1.0, (4 / 5) ** 2 + 3 * (1 / 5) ** 2]])


def test_fig4_factors_by_hand(gt):
    q = fig4_quantities(gt, chunk_images=7)
    da, db, dc = math.sqrt(1.5), math.sqrt(0.8), 2.0
    expected_sq = {"a": 4.0, "b": 32 / 9, "c": 4.0}
    for name, delta in zip("abc", (da, db, dc)):
        e = q.expansiveness[name]
        assert e.delta == pytest.approx(delta)
        assert e.mean_norm == pytest.approx(math.sqrt(expected_sq[name]))
        assert e.alpha == pytest.approx(math.sqrt(expected_sq[name]) / delta)
        assert e.local_variance == pytest.approx(expected_sq[name] / delta**2)
    assert q.expansiveness["a"].num_pairs == 2 * 4 * 2
    assert q.explained_variance == pytest.approx({"a": 4 / 3, "b": 40 / 9, "c": 1.0})
    # independent factors on disjoint pixels: the explained variances add up to the total
    assert q.total_variance == pytest.approx(4 / 3 + 40 / 9 + 1.0)
    assert q.explained_variance == pytest.approx(
        fig4_quantities(gt, chunk_images=1).explained_variance
    )


def test_fig4_with_a_perturbation_and_s_by_hand(gt):
    # s = b: the dot moves with b, so b's step also moves the dot (2 more pixels change)
    s_values = gt.factors(np.arange(len(gt)))[:, 1].astype(float)
    q = fig4_quantities(gt, perturb=dot, s_values=s_values, s_delta=1.0, chunk_images=5)
    db = math.sqrt(0.8)
    assert q.expansiveness["b"].local_variance == pytest.approx((32 / 9 + 2) / db**2)
    assert q.expansiveness["a"].local_variance == pytest.approx(4 / 1.5)
    e = q.expansiveness["s"]
    assert (e.delta, e.num_pairs) == (1.0, len(gt))
    assert e.mean_norm == pytest.approx(math.sqrt(2)) and e.alpha == pytest.approx(math.sqrt(2))
    # the dot is Bernoulli(1/4) on 4 pixels given b: 4 * 3/16 more explained variance
    assert q.explained_variance["b"] == pytest.approx(40 / 9 + 0.75)
    assert q.explained_variance["s"] == pytest.approx(40 / 9 + 0.75)
    assert q.explained_variance["a"] == pytest.approx(4 / 3)


def test_fig4_s_without_perturbation_and_defaults(gt):
    s_values = np.linspace(-1, 1, len(gt))
    q = fig4_quantities(gt, s_values=s_values, factor_names=["c"], num_bins=2)
    assert set(q.expansiveness) == {"c", "s"}
    assert q.expansiveness["s"].mean_norm == 0.0
    assert q.expansiveness["s"].delta == pytest.approx(default_s_delta(gt)) == math.sqrt(0.8)
    # two bins: the first 12 grid points against the last 12; brute force over the images
    x = gt.all_images().reshape(len(gt), -1) / 255
    halves = np.stack([x[:12].mean(axis=0), x[12:].mean(axis=0)])
    assert q.explained_variance["s"] == pytest.approx(
        ((halves - x.mean(axis=0)) ** 2).mean(0).sum()
    )
    assert 0 < q.explained_variance["s"] < q.total_variance


def test_s_groups_exact_and_binned():
    groups, n = s_groups(np.array([2.0, 1.0, 2.0, 1.0]), 20)
    assert n == 2 and list(groups) == [1, 0, 1, 0]
    groups, n = s_groups(np.arange(100.0)[::-1], 4)
    assert n == 4 and np.array_equal(np.bincount(groups), [25] * 4) and groups[0] == 3


def test_between_group_variance_by_hand():
    # two equally likely groups with mean images 0 and 1 on one pixel: variance 1/4
    assert between_group_variance(np.array([[0], [255 * 3]]), np.array([3, 3])) == 0.25
    # groups weighted by size: 1 image at 0, 3 at 1 -> Bernoulli(3/4), variance 3/16
    assert between_group_variance(np.array([[0], [255 * 3]]), np.array([1, 3])) == 0.1875
    # an empty group (a value never seen) is ignored
    assert between_group_variance(np.array([[0], [0], [255]]), np.array([1, 0, 1])) == 0.25


def test_perturbed_view_serves_perturbed_images(gt):
    s_values = np.zeros(len(gt))
    view = PerturbedView(gt, dot, s_values)
    assert view.factor_sizes == gt.factor_sizes and len(view) == len(gt)
    img = view.images([5])
    assert img[0, 3, 0, 0] == 255 and gt.images([5])[0, 3, 0, 0] == 0


def test_fig4_rejects_bad_input(gt):
    with pytest.raises(InvalidArgumentError, match="one value per grid point"):
        fig4_quantities(gt, s_values=np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        fig4_quantities(gt, s_values=np.full(len(gt), np.nan))
    with pytest.raises(InvalidArgumentError, match="no factor"):
        fig4_quantities(gt, factor_names=["posX"])
    with pytest.raises(DataFormatError, match="uint8"):
        fig4_quantities(gt, perturb=lambda x, i, s: x.astype(float))


def test_encode_images_accepts_lists_of_arrays():
    mu, lv = encode_images(
        lambda x: [np.ones((len(x), 2)), np.zeros((len(x), 2))], np.zeros((3, 8, 8, 1), np.uint8)
    )
    assert mu.dtype == np.float64 and mu.shape == (3, 2)


def test_perturbation_keyed_on_indices_does_not_move_with_s(gt):
    # a noise-control-like perturbation: depends on the grid index only, never on s
    def mark(images, indices, s):
        out = images.copy()
        out[:, 3, 7, 0] = (indices * 10).astype(np.uint8)
        return out

    np.testing.assert_array_equal(PerturbedView(gt, mark).images([4])[0, 3, 7, 0], 40)
    q = fig4_quantities(gt, perturb=mark, s_values=np.zeros(len(gt)), factor_names=["c"])
    assert q.expansiveness["s"].mean_norm == 0.0
    # c's step moves the mark by 10 grey levels too (index stride 1 along c)
    assert q.expansiveness["c"].mean_norm == pytest.approx(math.sqrt(4 + (10 / 255) ** 2))


def test_default_s_delta_prefers_the_position_step(gt):
    assert default_s_delta(gt) == pytest.approx(standardized_step(4))  # no positions: finest
    specs = [Factor("orientation", np.arange(8.0)), Factor("posX", np.arange(4.0))]
    pos = ArrayGroundTruth("pos", specs, np.zeros((32, 2, 2, 1), np.uint8))
    assert default_s_delta(pos) == pytest.approx(standardized_step(4))
