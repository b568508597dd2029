"""The loss terms of the model zoo as small pure tensor functions.

Each follows disentanglement_lib (``methods/unsupervised/vae.py`` and ``losses.py``) term by term.
Randomness (reparameterisation noise, the FactorVAE shuffles) is passed in explicitly, so that the
functions are deterministic, testable by hand and usable under ``torch.func.vmap`` for stacked models.
Batch reductions are means; sums run over pixels and latent dimensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy summed over pixels, averaged over the batch (dlib's bernoulli_loss)."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return per_pixel.flatten(1).sum(1).mean()


def sample_latent(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Reparameterised sample z = μ + σ·ε with the standard-normal ``noise`` ε given."""
    return mu + torch.exp(0.5 * logvar) * noise


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over dimensions, averaged over the batch."""
    return (0.5 * (mu.square() + logvar.exp() - logvar - 1.0)).sum(1).mean()


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; μ, σ²) (broadcasting)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI)


def total_correlation(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """β-TCVAE's minibatch-weighted-sampling estimate of TC(z), as disentanglement_lib computes it.

    log q(z_i) ≈ logsumexp_j log q(z_i | x_j) and log Π_d q(z_id) ≈ Σ_d logsumexp_j log q(z_id | x_j);
    the constants −log(N·M) of Chen et al. are omitted as in dlib (they shift the value by
    (d − 1)·log(N·M) and leave the gradient unchanged).
    """
    log_q = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # [B, B, d]
    log_qz_product = torch.logsumexp(log_q, dim=1).sum(1)
    log_qz = torch.logsumexp(log_q.sum(2), dim=1)
    return (log_qz - log_qz_product).mean()


def covariance(mu: torch.Tensor) -> torch.Tensor:
    """Biased (1/B) covariance of the batch of means, ``[d, d]``."""
    centred = mu - mu.mean(0, keepdim=True)
    return centred.T @ centred / mu.shape[0]


def dip_regularizer(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)² (Kumar et al. 2018)."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag_embed(diag)
    return lambda_od * off.square().sum() + lambda_d * (diag - 1.0).square().sum()


def dip_covariance(mu: torch.Tensor, logvar: torch.Tensor, kind: str) -> torch.Tensor:
    """The covariance DIP-VAE regularises: Cov(μ) for "i", E[diag σ²] + Cov(μ) for "ii"."""
    cov = covariance(mu)
    if kind == "ii":
        cov = cov + torch.diag_embed(logvar.exp().mean(0))
    return cov


def shuffle_codes(z: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Permute each latent dimension independently over the batch: ``permutations`` is ``[d, B]``."""
    return torch.gather(z, 0, permutations.T)


def factorvae_tc(logits_real: torch.Tensor) -> torch.Tensor:
    """Density-ratio TC estimate E[logit_real − logit_shuffled] of the discriminator on q(z)."""
    return (logits_real[:, 0] - logits_real[:, 1]).mean()


def discriminator_loss(logits_real: torch.Tensor, logits_shuffled: torch.Tensor) -> torch.Tensor:
    """−(½ E log D(z) + ½ E log(1 − D(z̃))), probabilities clipped to [1e-6, 1 − 1e-6] as dlib."""
    p_real = torch.softmax(logits_real, 1).clamp(1e-6, 1 - 1e-6)
    p_shuf = torch.softmax(logits_shuffled, 1).clamp(1e-6, 1 - 1e-6)
    return -(0.5 * p_real[:, 0].log().mean() + 0.5 * p_shuf[:, 1].log().mean())
