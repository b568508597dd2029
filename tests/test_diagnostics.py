"""The diagnostics that explain a result (s entanglement, pattern uptake, s-alignment) and the rules
that pick s, on constructed cases whose answers the maths fixes."""

from __future__ import annotations

import numpy as np
import pytest

from perturbed_disentanglement.errors import InvalidArgumentError
from perturbed_disentanglement.metrics.diagnostics import (
    DOMINANCE_THRESHOLD,
    explained_variance_fractions,
    pattern_uptake,
    s_alignment,
    s_entanglement,
)
from perturbed_disentanglement.perturbation import Pattern, perturb, uniform_noise
from perturbed_disentanglement.reference import S_RULES, choose_s

NAMES = ["a", "b", "c"]


def _grid() -> np.ndarray:
    """Every combination of three independent factors (10, 10 and 5 values)."""
    return np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(5), indexing="ij"), -1)


FACTORS = _grid().reshape(-1, 3)


def test_a_pure_factor_is_all_of_s():
    out = s_entanglement(FACTORS[:, 0] * 0.3 - 1.0, FACTORS, NAMES)
    assert out["variance_fraction"]["a"] == pytest.approx(1.0)
    assert out["variance_fraction"]["b"] == pytest.approx(0.0, abs=1e-12)
    assert out["nmi"]["a"] == pytest.approx(1.0) and out["nmi"]["c"] == pytest.approx(0.0)
    assert out["dominant"] == "a" and out["dominated"]


def test_a_balanced_rotation_of_two_factors_is_half_each():
    s = (FACTORS[:, 0] - 4.5) + (FACTORS[:, 1] - 4.5)  # two independent factors, same variance
    out = s_entanglement(s, FACTORS, NAMES)
    assert out["variance_fraction"]["a"] == pytest.approx(0.5)
    assert out["variance_fraction"]["b"] == pytest.approx(0.5)
    assert out["variance_fraction"]["c"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < out["nmi"]["a"] < 1 and out["nmi"]["a"] == pytest.approx(out["nmi"]["b"])
    assert not out["dominated"] and out["threshold"] == DOMINANCE_THRESHOLD


def test_noise_in_s_is_explained_by_no_factor():
    rng = np.random.default_rng(0)
    fractions = explained_variance_fractions(rng.normal(size=len(FACTORS)), FACTORS)
    assert fractions.sum() < 0.12  # sampling noise only: E = (9 + 9 + 4) / 499 = 0.044


def test_entanglement_refuses_bad_input():
    with pytest.raises(InvalidArgumentError, match="constant"):
        explained_variance_fractions(np.ones(len(FACTORS)), FACTORS)
    with pytest.raises(InvalidArgumentError, match="rows"):
        explained_variance_fractions(np.arange(10.0), FACTORS)
    with pytest.raises(InvalidArgumentError, match="finite"):
        s_entanglement(np.full(len(FACTORS), np.nan), FACTORS, NAMES)
    with pytest.raises(InvalidArgumentError, match="factor names"):
        s_entanglement(FACTORS[:, 0], FACTORS, ["a"])


@pytest.fixture(params=["rgb", "binary"])
def perturbed_pair(request):
    """Originals, their perturbed images (pattern, κ = 4, ε = 0.1) and their noisy ones."""
    rng = np.random.default_rng(1)
    if request.param == "rgb":
        x = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    else:  # dSprites-like: clipping keeps only the inward half of ±ε
        x = (rng.random((40, 64, 64, 1)) < 0.3).astype(np.uint8) * 255
    s = rng.normal(size=len(x))
    xt = perturb(x, s, 0.1, Pattern(seed=0, kappa=4))
    xn = uniform_noise(x, np.arange(len(x)), 0.1, seed=3)
    return x, xt, xn


def test_uptake_is_one_for_the_perturbed_image_and_zero_for_the_original(perturbed_pair):
    x, xt, xn = perturbed_pair
    assert pattern_uptake(x, xt, xt) == pytest.approx(1.0)
    assert pattern_uptake(x, xt, x) == pytest.approx(0.0, abs=1e-12)
    assert pattern_uptake(x, xt, xt.astype(np.float64) / 255) == pytest.approx(1.0)  # floats too
    half = (x.astype(np.float64) + xt) / 2 / 255  # half of the pattern reproduced
    assert pattern_uptake(x, xt, half) == pytest.approx(0.5)


def test_uptake_of_an_unrelated_perturbation_is_about_zero(perturbed_pair):
    x, xt, xn = perturbed_pair
    assert abs(pattern_uptake(x, xt, xn)) < 0.02  # noise is uncorrelated with the pattern


def test_uptake_ignores_the_constant_shift_clipping_makes():
    """On binary images a background pixel can only brighten: a decoder that learns the mean
    shift (x + E[d | x]) and nothing of the pattern scores 0, not the share of the mean."""
    rng = np.random.default_rng(2)
    x = (rng.random((30, 64, 64, 1)) < 0.3).astype(np.uint8) * 255
    xt = perturb(x, rng.normal(size=len(x)), 0.2, Pattern(seed=1, kappa=8))
    d = xt.astype(np.float64) / 255 - x / 255
    shift = np.where(x == 0, d[x == 0].mean(), d[x == 255].mean())
    assert pattern_uptake(x, xt, x / 255 + shift) == pytest.approx(0.0, abs=1e-9)


def test_uptake_refuses_bad_input():
    x = np.zeros((2, 64, 64, 1), np.uint8)
    with pytest.raises(InvalidArgumentError, match="zero"):
        pattern_uptake(x, x, x)
    with pytest.raises(InvalidArgumentError, match="one shape"):
        pattern_uptake(x, x[:1], x)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        pattern_uptake(x.astype(np.float32), x, x)


def test_alignment_finds_the_latent_that_follows_s():
    rng = np.random.default_rng(3)
    s = rng.normal(size=5000)
    codes = np.stack([rng.normal(size=5000), np.tanh(s) * 3, rng.normal(size=5000)], axis=1)
    logvar = np.log(np.tile([0.5, 0.01, 0.9], (5000, 1)))
    out = s_alignment(codes, logvar, s)
    assert out["least_noise"] == 1 and out["best"] == 1 and out["follows_s"]
    assert out["nmi"][1] > 0.6 and max(out["nmi"][0], out["nmi"][2]) < 0.05  # non-linear: found
    out = s_alignment(codes, np.log(np.tile([0.01, 0.5, 0.9], (5000, 1))), s)
    assert out["least_noise"] == 0 and not out["follows_s"]
    with pytest.raises(InvalidArgumentError, match="match"):
        s_alignment(codes, logvar[:, :2], s)
    with pytest.raises(InvalidArgumentError, match="single bin"):
        s_alignment(codes, logvar, np.zeros(5000))


def _encoding() -> tuple[np.ndarray, np.ndarray]:
    """A reference whose latents 0 and 1 each follow one factor (the least noisy two) and whose
    latent 2 mixes a and c (more noisy); latent 3 is inactive."""
    rng = np.random.default_rng(4)
    n = len(FACTORS)
    a, b, c = (FACTORS[:, k] - FACTORS[:, k].mean() for k in range(3))
    mu = np.stack(
        [a + 0.05 * rng.normal(size=n), b, 0.6 * a + 1.2 * c, rng.normal(size=n) * 0.01], axis=1
    )
    variance = np.tile([0.01, 0.02, 0.1, 0.99], (n, 1))
    return mu, np.log(variance)


def test_the_paper_rule_takes_the_least_noise_latent():
    mu, logvar = _encoding()
    choice = choose_s("paper", mu, logvar, FACTORS, NAMES)
    assert choice.latents == (0,) and list(choice.weights) == [1, 0, 0, 0]


def test_the_entangled_latent_rule_skips_pure_and_inactive_latents():
    mu, logvar = _encoding()
    choice = choose_s("entangled-latent", mu, logvar, FACTORS, NAMES)
    assert choice.latents == (2,) and choice.details["max_fraction"] < 0.75


def test_the_balanced_rotation_splits_s_between_two_factors():
    mu, logvar = _encoding()
    choice = choose_s("balanced-rotation", mu, logvar, FACTORS, NAMES)
    assert set(choice.latents) == {0, 1}
    s = choice.direction(mu)
    fractions = explained_variance_fractions(s, FACTORS)
    assert fractions[0] == pytest.approx(0.5, abs=0.01) and fractions[1] == pytest.approx(
        0.5, abs=0.01
    )
    assert choice.details["max_fraction"] == pytest.approx(fractions.max(), abs=1e-9)
    assert np.linalg.norm(choice.weights * mu.std(0)) == pytest.approx(1.0)  # a rotation


def test_every_rule_runs_and_bad_rules_are_refused():
    mu, logvar = _encoding()
    for rule in S_RULES:
        assert choose_s(rule, mu, logvar, FACTORS, NAMES).as_dict()["rule"] == rule
    with pytest.raises(InvalidArgumentError, match="unknown s rule 'best'"):
        choose_s("best", mu, logvar, FACTORS, NAMES)
    with pytest.raises(InvalidArgumentError, match="needs two latents"):
        choose_s("balanced-rotation", mu[:, :1], logvar[:, :1], FACTORS, NAMES)
    with pytest.raises(InvalidArgumentError, match="no active latent"):
        choose_s("entangled-latent", mu[:, 3:], logvar[:, 3:], FACTORS, NAMES)
    with pytest.raises(InvalidArgumentError, match=r"\[N, d\]"):
        choose_s("paper", mu, logvar[:10], FACTORS, NAMES)
