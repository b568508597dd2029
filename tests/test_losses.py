"""Every loss term of losses.py against a value computed by hand (Python loops, math, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perturbed_disentanglement.training import losses
from perturbed_disentanglement.training.zoo import MODELS, build_objective, hyperparameters


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _normal_logpdf(z: float, mu: float, logvar: float) -> float:
    var = math.exp(logvar)
    return -0.5 * math.log(2 * math.pi * var) - (z - mu) ** 2 / (2 * var)


@pytest.fixture
def tiny() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    b, d = 5, 3
    return {
        "mu": torch.randn(b, d, generator=g, dtype=torch.float64),
        "logvar": 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64),
        "noise": torch.randn(b, d, generator=g, dtype=torch.float64),
    }


def test_bernoulli_reconstruction_matches_hand_loop() -> None:
    logits = _t([[[[0.3, -2.0], [4.0, 0.0]]], [[[-0.7, 1.5], [-3.0, 2.2]]]])  # [2, 1, 2, 2]
    x = _t([[[[0.0, 1.0], [1.0, 0.3]]], [[[1.0, 0.0], [0.5, 1.0]]]])
    per_image = []
    for b in range(2):
        total = 0.0
        for i in range(2):
            for j in range(2):
                p = 1.0 / (1.0 + math.exp(-float(logits[b, 0, i, j])))
                t = float(x[b, 0, i, j])
                total += -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))
        per_image.append(total)
    expected = sum(per_image) / 2
    assert losses.bernoulli_reconstruction(logits, x).item() == pytest.approx(expected, rel=1e-12)


def test_sample_latent_is_reparameterisation(tiny) -> None:
    z = losses.sample_latent(tiny["mu"], tiny["logvar"], tiny["noise"])
    for (b, k), value in np.ndenumerate(z.numpy()):
        mu, lv, eps = (float(tiny[n][b, k]) for n in ("mu", "logvar", "noise"))
        assert value == pytest.approx(mu + math.exp(0.5 * lv) * eps, rel=1e-12)


def test_gaussian_kl_matches_closed_form(tiny) -> None:
    mu, logvar = tiny["mu"], tiny["logvar"]
    rows = []
    for b in range(mu.shape[0]):
        rows.append(
            sum(
                0.5 * (float(m) ** 2 + math.exp(float(lv)) - float(lv) - 1.0)
                for m, lv in zip(mu[b], logvar[b])
            )
        )
    expected = sum(rows) / len(rows)
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(expected, rel=1e-12)
    # and against torch.distributions' KL between the diagonal Gaussians
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(1).mean().item()
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(ref, rel=1e-10)


def test_gaussian_kl_is_zero_at_the_prior() -> None:
    assert losses.gaussian_kl(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0


def test_gaussian_log_density_matches_formula(tiny) -> None:
    z = losses.sample_latent(tiny["mu"], tiny["logvar"], tiny["noise"])
    out = losses.gaussian_log_density(z, tiny["mu"], tiny["logvar"])
    for (b, k), value in np.ndenumerate(out.numpy()):
        ref = _normal_logpdf(float(z[b, k]), float(tiny["mu"][b, k]), float(tiny["logvar"][b, k]))
        assert value == pytest.approx(ref, rel=1e-12)


def test_total_correlation_matches_double_loop(tiny) -> None:
    mu, logvar = tiny["mu"], tiny["logvar"]
    z = losses.sample_latent(mu, logvar, tiny["noise"])
    b, d = mu.shape
    values = []
    for i in range(b):
        joint = 0.0  # Σ_j q(z_i | x_j)
        marginals = [0.0] * d  # Σ_j q(z_ik | x_j) per dimension
        for j in range(b):
            log_joint = 0.0
            for k in range(d):
                lp = _normal_logpdf(float(z[i, k]), float(mu[j, k]), float(logvar[j, k]))
                log_joint += lp
                marginals[k] += math.exp(lp)
            joint += math.exp(log_joint)
        values.append(math.log(joint) - sum(math.log(m) for m in marginals))
    expected = sum(values) / b
    assert losses.total_correlation(z, mu, logvar).item() == pytest.approx(expected, rel=1e-10)


def test_total_correlation_vanishes_for_a_single_dimension(tiny) -> None:
    mu, logvar = tiny["mu"][:, :1], tiny["logvar"][:, :1]
    z = losses.sample_latent(mu, logvar, tiny["noise"][:, :1])
    assert losses.total_correlation(z, mu, logvar).item() == pytest.approx(0.0, abs=1e-12)


def test_covariance_is_biased_np_cov(tiny) -> None:
    mu = tiny["mu"]
    expected = np.cov(mu.numpy().T, bias=True)
    np.testing.assert_allclose(losses.covariance(mu).numpy(), expected, rtol=1e-12)


def _hand_cov(rows: list[list[float]]) -> list[list[float]]:
    n, d = len(rows), len(rows[0])
    means = [sum(r[k] for r in rows) / n for k in range(d)]
    return [
        [sum((r[a] - means[a]) * (r[c] - means[c]) for r in rows) / n for c in range(d)]
        for a in range(d)
    ]


def _hand_dip(cov: list[list[float]], lambda_od: float, lambda_d: float) -> float:
    d = len(cov)
    off = sum(cov[a][c] ** 2 for a in range(d) for c in range(d) if a != c)
    diag = sum((cov[a][a] - 1.0) ** 2 for a in range(d))
    return lambda_od * off + lambda_d * diag


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_terms_match_hand_covariance(tiny, kind: str) -> None:
    mu, logvar = tiny["mu"], tiny["logvar"]
    cov = _hand_cov(mu.tolist())
    if kind == "ii":
        n = mu.shape[0]
        for k in range(mu.shape[1]):
            cov[k][k] += sum(math.exp(float(logvar[b, k])) for b in range(n)) / n
    got = losses.dip_covariance(mu, logvar, kind)
    np.testing.assert_allclose(got.numpy(), np.array(cov), rtol=1e-12)
    lambda_od, lambda_d = 2.5, 7.0
    reg = losses.dip_regularizer(got, lambda_od, lambda_d).item()
    assert reg == pytest.approx(_hand_dip(cov, lambda_od, lambda_d), rel=1e-12)


def test_dip_regularizer_is_zero_at_identity() -> None:
    assert losses.dip_regularizer(torch.eye(4), 3.0, 30.0).item() == 0.0


def test_shuffle_codes_permutes_each_column_independently() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, generator=g)
    perms = torch.argsort(torch.rand(3, 8, generator=g), dim=1)
    out = losses.shuffle_codes(z, perms)
    for k in range(3):
        assert sorted(out[:, k].tolist()) == sorted(z[:, k].tolist())
        for b in range(8):
            assert out[b, k] == z[perms[k, b], k]
    assert not torch.equal(out, z)


def test_factorvae_tc_is_mean_logit_difference() -> None:
    logits = _t([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]])
    expected = ((2.0 + 1.0) + (0.5 - 0.25) + (-3.0 - 1.0)) / 3
    assert losses.factorvae_tc(logits).item() == pytest.approx(expected, rel=1e-12)


def _softmax2(a: float, b: float) -> tuple[float, float]:
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb), eb / (ea + eb)


def _clip(p: float) -> float:
    return min(max(p, 1e-6), 1 - 1e-6)


def test_discriminator_loss_matches_hand_softmax() -> None:
    real = [[2.0, -1.0], [0.5, 0.25], [30.0, -30.0]]  # the last one hits the 1e-6 clip
    shuffled = [[-1.0, 1.0], [0.0, 3.0], [-40.0, 40.0]]
    log_real = [math.log(_clip(_softmax2(*r)[0])) for r in real]
    log_shuf = [math.log(_clip(_softmax2(*s)[1])) for s in shuffled]
    expected = -(0.5 * sum(log_real) / 3 + 0.5 * sum(log_shuf) / 3)
    got = losses.discriminator_loss(_t(real), _t(shuffled)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    # a confused discriminator (equal logits) scores log 2
    even = torch.zeros(4, 2, dtype=torch.float64)
    assert losses.discriminator_loss(even, even).item() == pytest.approx(math.log(2), rel=1e-12)


# --- the objective's total per model (SPEC §5) ---------------------------------------------------
def _inputs(latent_dim: int = 4, batch: int = 6):
    g = torch.Generator().manual_seed(11)
    x = (torch.rand(batch, 1, 64, 64, generator=g) < 0.3).float()
    noise = torch.randn(batch, latent_dim, generator=g)
    perms = torch.argsort(torch.rand(latent_dim, batch, generator=g), dim=1)
    return x, noise, perms


@pytest.mark.parametrize("model", list(MODELS))
def test_objective_total_is_the_spec_combination(model: str) -> None:
    d = 4
    hp = hyperparameters(model, "dsprites")
    objective = build_objective(model, hp, 1, d, seed=5)
    x, noise, perms = _inputs(d)
    with torch.no_grad():
        terms = objective(x, noise, perms)
        mu, logvar = objective.vae(x)
        if model == "ae":
            recon = losses.bernoulli_reconstruction(objective.vae.decode(mu), x)
            assert set(terms) == {"loss", "reconstruction"}
            torch.testing.assert_close(terms["loss"], recon)
            return
        z = mu + torch.exp(0.5 * logvar) * noise
        recon = losses.bernoulli_reconstruction(objective.vae.decode(z), x)
        kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(1).mean()
        torch.testing.assert_close(terms["reconstruction"], recon)
        torch.testing.assert_close(terms["kl"], kl)
        if model == "beta_vae":
            expected = recon + hp["beta"] * kl
        elif model == "beta_tcvae":
            tc = losses.total_correlation(z, mu, logvar)
            torch.testing.assert_close(terms["tc"], tc)
            expected = recon + kl + (hp["beta"] - 1) * tc
        elif model == "factor_vae":
            logits = objective.discriminator(z)
            tc = (logits[:, 0] - logits[:, 1]).mean()
            torch.testing.assert_close(terms["tc"], tc)
            expected = recon + kl + hp["gamma"] * tc
            shuffled = torch.stack([z[perms[k], k] for k in range(d)], dim=1)
            disc = losses.discriminator_loss(logits, objective.discriminator(shuffled))
            torch.testing.assert_close(terms["discriminator_loss"], disc)
        else:
            cov = _hand_cov(mu.double().tolist())
            if model == "dip_vae_ii":
                var = logvar.double().exp().mean(0).tolist()
                for k in range(d):
                    cov[k][k] += var[k]
            lambda_od = hp["lambda_od"]
            lambda_d = {"dip_vae_i": 10.0, "dip_vae_ii": 1.0}[model] * lambda_od
            dip = _hand_dip(cov, lambda_od, lambda_d)
            assert terms["dip"].item() == pytest.approx(dip, rel=1e-4)
            expected = recon + kl + terms["dip"]
        torch.testing.assert_close(terms["loss"], expected)
