"""The model zoo: one table of models, their hyperparameters and literature grids, and the objective.

The harness and the generation pipeline read defaults from :data:`MODELS` only, so there is one
place where a default changes. Sources: disentanglement_lib's unsupervised study (the grids) and the
values a third-party reproduction attributes to the paper (the per-dataset defaults; unverified,
SPEC §5). DIP-VAE defaults are our decision: λ_od = 10, the middle of dlib's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InvalidArgumentError
from . import losses
from .models import VAE, Discriminator


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: its hyperparameters, per-dataset defaults and literature grid."""

    name: str
    title: str
    defaults: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset → {hp: value}
    grid_parameter: str | None = None
    grid: tuple[float, ...] = ()
    deterministic: bool = False
    uses_discriminator: bool = False

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        names: set[str] = set()
        for values in self.defaults.values():
            names.update(values)
        return tuple(sorted(names))


def _same(values: dict[str, float]) -> dict[str, dict[str, float]]:
    return {"dsprites": dict(values), "shapes3d": dict(values)}


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("ae", "AE", _same({}), deterministic=True),
        ModelSpec(
            "beta_vae",
            "β-VAE",
            {"dsprites": {"beta": 8.0}, "shapes3d": {"beta": 32.0}},
            "beta",
            (1, 2, 4, 6, 8, 16),
        ),
        ModelSpec(
            "beta_tcvae",
            "β-TCVAE",
            {"dsprites": {"beta": 6.0}, "shapes3d": {"beta": 32.0}},
            "beta",
            (1, 2, 4, 6, 8, 10),
        ),
        ModelSpec(
            "factor_vae",
            "FactorVAE",
            {"dsprites": {"gamma": 35.0}, "shapes3d": {"gamma": 7.0}},
            "gamma",
            (10, 20, 30, 40, 50, 100),
            uses_discriminator=True,
        ),
        ModelSpec(
            "dip_vae_i",
            "DIP-VAE-I",
            _same({"lambda_od": 10.0, "lambda_d_factor": 10.0}),
            "lambda_od",
            (1, 2, 5, 10, 20, 50),
        ),
        ModelSpec(
            "dip_vae_ii",
            "DIP-VAE-II",
            _same({"lambda_od": 10.0, "lambda_d_factor": 1.0}),
            "lambda_od",
            (1, 2, 5, 10, 20, 50),
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The zoo entry ``name``, or a clear error listing the known models."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise InvalidArgumentError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[key]


def check_weight(model: str, key: str, value: object) -> float:
    """A loss weight as a float, or a clear error unless it is a finite number ≥ 0."""
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{model}: {key} must be a number, got {value!r}") from None
    if not 0 <= weight < float("inf"):
        raise InvalidArgumentError(f"{model}: {key} must be finite and ≥ 0, got {value!r}")
    return weight


def hyperparameters(model: str, dataset: str = "dsprites", **overrides: float) -> dict[str, float]:
    """The default hyperparameters of ``model`` for ``dataset``, with ``overrides`` checked."""
    spec = model_spec(model)
    if dataset not in spec.defaults:
        raise InvalidArgumentError(
            f"no defaults for dataset {dataset!r}; expected one of {', '.join(spec.defaults)}"
        )
    hp = dict(spec.defaults[dataset])
    for key, value in overrides.items():
        if key not in hp:
            known = ", ".join(hp) or "none"
            raise InvalidArgumentError(
                f"{spec.name} has no hyperparameter {key!r}; its hyperparameters: {known}"
            )
        value = check_weight(spec.name, key, value)
        hp[key] = value
    return hp


class Objective(nn.Module):
    """A zoo model with its loss: ``forward(x, noise, permutations)`` returns the loss terms.

    ``x`` is float ``[B, C, 64, 64]`` in [0, 1]; ``noise`` ``[B, d]`` standard normal (unused by the
    AE); ``permutations`` ``[d, B]`` long (FactorVAE only; others ignore it). The result maps term
    names to scalars: ``loss`` is what the VAE minimises, ``discriminator_loss`` (FactorVAE) what
    its discriminator minimises; both come from the same forward pass, as in dlib, so the caller
    must route each loss's gradient to its own parameters (``backward(inputs=...)``, keeping the
    graph after the first).
    """

    def __init__(
        self, model: str, hparams: dict[str, float], channels: int, latent_dim: int
    ) -> None:
        super().__init__()
        self.spec = model_spec(model)
        expected = set(self.spec.hyperparameter_names)
        if set(hparams) != expected:
            raise InvalidArgumentError(
                f"{self.spec.name} takes hyperparameters {sorted(expected)}, got {sorted(hparams)}"
            )
        self.hparams = {k: check_weight(self.spec.name, k, v) for k, v in hparams.items()}
        self.vae = VAE(channels, latent_dim)
        self.discriminator = Discriminator(latent_dim) if self.spec.uses_discriminator else None

    def forward(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        permutations: torch.Tensor | None = None,
        hparams: dict[str, torch.Tensor | float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms; ``hparams`` overrides ``self.hparams`` (stacked models pass tensors)."""
        mu, logvar = self.vae(x)
        name = self.spec.name
        hp = self.hparams if hparams is None else hparams
        if self.spec.deterministic:
            recon = losses.bernoulli_reconstruction(self.vae.decode(mu), x)
            return {"loss": recon, "reconstruction": recon}
        z = losses.sample_latent(mu, logvar, noise)
        recon = losses.bernoulli_reconstruction(self.vae.decode(z), x)
        kl = losses.gaussian_kl(mu, logvar)
        terms = {"reconstruction": recon, "kl": kl}
        if name == "beta_vae":
            regularizer = hp["beta"] * kl
        elif name == "beta_tcvae":
            tc = losses.total_correlation(z, mu, logvar)
            terms["tc"] = tc
            regularizer = kl + (hp["beta"] - 1.0) * tc
        elif name in ("dip_vae_i", "dip_vae_ii"):
            cov = losses.dip_covariance(mu, logvar, "i" if name == "dip_vae_i" else "ii")
            lambda_od = hp["lambda_od"]
            dip = losses.dip_regularizer(cov, lambda_od, hp["lambda_d_factor"] * lambda_od)
            terms["dip"] = dip
            regularizer = kl + dip
        elif name == "factor_vae":
            if permutations is None:
                raise InvalidArgumentError("factor_vae needs permutations [d, B] for the shuffle")
            # one discriminator pass over [z; shuffled z]: the real half serves both the VAE's TC
            # term and the discriminator's loss (training routes each loss's gradient to its own
            # parameters); the shuffled codes are detached, as the VAE is not trained through them
            z_shuffled = losses.shuffle_codes(z.detach(), permutations)
            logits = self.discriminator(torch.cat([z, z_shuffled]))
            logits_real, logits_shuffled = logits[: z.shape[0]], logits[z.shape[0] :]
            tc = losses.factorvae_tc(logits_real)
            terms["tc"] = tc
            regularizer = kl + hp["gamma"] * tc
            terms["discriminator_loss"] = losses.discriminator_loss(logits_real, logits_shuffled)
        else:  # pragma: no cover - MODELS and this switch are kept in step
            raise AssertionError(name)
        terms["loss"] = recon + regularizer
        return terms

    def vae_parameters(self) -> list[nn.Parameter]:
        return list(self.vae.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [] if self.discriminator is None else list(self.discriminator.parameters())


def build_objective(
    model: str, hparams: dict[str, float], channels: int, latent_dim: int, seed: int
) -> Objective:
    """An :class:`Objective` whose initial weights depend on ``seed`` only.

    The global torch RNG is forked, so building a model neither consumes nor depends on it: a model
    built alone and the same model built inside a stack start from identical weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return Objective(model, hparams, channels, latent_dim)
