"""Rules that pick the scalar ``s`` from a reference VAE's whole-grid encoding.

The paper (§4.1) takes the least-noise latent of the lowest-MIG restart, presuming that latent is an
entangled direction. Measured, that presumption fails on Shapes3D (the shipped ``s`` is 0.91
floor_hue by variance: every restart had already separated the hues), so the rule is a parameter:

- ``paper``: the least-noise latent, ``argmin_k E σ²_k`` (the paper's rule);
- ``entangled-latent``: among the active latents whose variance the factors explain (at least
  half of it), the one least dominated by a single factor;
- ``balanced-rotation``: the rotation ``cos θ ẑ_a + sin θ ẑ_b`` of the two least-noise latents
  (each standardised over the grid) whose largest per-factor explained-variance fraction is the
  smallest: entangled by construction when the two latents follow different factors, and still a
  direction the architecture expresses (a rotation of its own code).

Each rule returns a :class:`SChoice`: ``s`` before its standardisation is ``mu @ weights``, one
formula for every rule (a single latent has weight 1), so the same ``s`` can be recomputed from any
encoding of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..metrics.active_units import ACTIVE_THRESHOLD, mean_posterior_variance
from ..metrics.diagnostics import explained_variance_fractions

S_RULES = ("paper", "entangled-latent", "balanced-rotation")
#: The default rule (chosen by the effect on trained models; see the README's Shapes3D screen).
DEFAULT_S_RULE = "paper"
#: ``entangled-latent`` considers a latent only if the factors explain this share of its variance.
INFORMATIVE_FRACTION = 0.5


@dataclass(frozen=True)
class SChoice:
    """``s`` before standardisation is ``mu @ weights``: a direction in the reference's latents."""

    rule: str
    weights: np.ndarray  # [d], on the encoder means as they are
    latents: tuple[int, ...]  # the latents with a non-zero weight
    details: dict[str, Any] = field(default_factory=dict)

    def direction(self, mu: np.ndarray) -> np.ndarray:
        """``s`` before its standardisation, float64 ``[N]``, from an encoding ``mu [N, d]``."""
        return np.asarray(mu, np.float64) @ self.weights

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "weights": [float(w) for w in self.weights],
            "latents": list(self.latents),
            **self.details,
        }


def check_rule(rule: object) -> str:
    """``rule`` if it is one of :data:`S_RULES`, else a clear error listing them."""
    if rule not in S_RULES:
        raise InvalidArgumentError(f"unknown s rule {rule!r}; expected one of {', '.join(S_RULES)}")
    return str(rule)


def latent_moments(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid mean and (population) standard deviation of each latent, float64 ``[d]`` each."""
    x = np.asarray(mu, dtype=np.float64)
    return x.mean(axis=0), x.std(axis=0)


def _unit(d: int, j: int) -> np.ndarray:
    w = np.zeros(d)
    w[j] = 1.0
    return w


def _fractions(z: np.ndarray, factors: np.ndarray) -> np.ndarray:
    return explained_variance_fractions(z, factors)


def _rotation_fractions(
    za: np.ndarray, zb: np.ndarray, factors: np.ndarray, angles: np.ndarray
) -> np.ndarray:
    """``[len(angles), k]`` explained-variance fractions of ``cos θ za + sin θ zb`` (closed form:
    the group means of a linear combination are the combination of the group means)."""
    n = len(za)
    rho = float(za @ zb) / n
    out = np.empty((len(angles), factors.shape[1]))
    c, s = np.cos(angles), np.sin(angles)
    total = c**2 + s**2 + 2 * c * s * rho
    for k in range(factors.shape[1]):
        _, groups = np.unique(factors[:, k], return_inverse=True)
        counts = np.bincount(groups).astype(np.float64)
        ma = np.bincount(groups, weights=za) / counts
        mb = np.bincount(groups, weights=zb) / counts
        p = counts / n
        a, b, cab = p @ ma**2, p @ mb**2, p @ (ma * mb)
        out[:, k] = (c**2 * a + s**2 * b + 2 * c * s * cab) / total
    return out


def choose_s(
    rule: str, mu: np.ndarray, logvar: np.ndarray, factors: np.ndarray, factor_names: list[str]
) -> SChoice:
    """Apply ``rule`` to a reference's whole-grid encoding (``mu``, ``logvar`` float ``[N, d]``;
    ``factors`` int ``[N, k]`` in the same order)."""
    rule = check_rule(rule)
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or np.shape(logvar) != mu.shape or len(factors) != len(mu):
        raise InvalidArgumentError(
            f"mu {list(mu.shape)}, logvar {list(np.shape(logvar))} and factors "
            f"{list(np.shape(factors))} must be [N, d], [N, d] and [N, k]"
        )
    d = mu.shape[1]
    variance = mean_posterior_variance(logvar)
    order = [int(j) for j in np.argsort(variance, kind="stable")]
    mean, std = latent_moments(mu)
    z = np.divide(mu - mean, std, out=np.zeros_like(mu), where=std > 0)
    if rule == "paper":
        j = order[0]
        return SChoice(rule, _unit(d, j), (j,), {"mean_variance": float(variance[j])})
    if rule == "entangled-latent":
        candidates = []
        for j in order:
            if variance[j] >= ACTIVE_THRESHOLD or std[j] <= 0:
                continue
            fractions = _fractions(z[:, j], factors)
            if fractions.sum() >= INFORMATIVE_FRACTION:
                candidates.append((float(fractions.max()), j, fractions))
        if not candidates:
            raise InvalidArgumentError(
                "rule 'entangled-latent' found no active latent whose variance the factors "
                f"explain to at least {INFORMATIVE_FRACTION}: the reference encodes no factor"
            )
        top, j, fractions = min(candidates)
        return SChoice(
            rule,
            _unit(d, j),
            (j,),
            {"max_fraction": top, "mean_variance": float(variance[j])},
        )
    # balanced-rotation
    if d < 2:
        raise InvalidArgumentError(
            f"rule 'balanced-rotation' needs two latents; the reference has {d}"
        )
    a, b = order[0], order[1]
    if std[a] <= 0 or std[b] <= 0:
        raise InvalidArgumentError(
            f"rule 'balanced-rotation': latent {a if std[a] <= 0 else b} is constant over the grid"
        )
    angles = np.deg2rad(np.arange(0.0, 180.0, 0.5))
    fractions = _rotation_fractions(z[:, a], z[:, b], factors, angles)
    i = int(np.argmin(fractions.max(axis=1)))
    theta = float(angles[i])
    weights = np.zeros(d)  # the rotation of the standardised latents, on the raw means
    weights[a], weights[b] = math.cos(theta) / std[a], math.sin(theta) / std[b]
    return SChoice(
        rule,
        weights,
        (a, b),
        {
            "angle_degrees": math.degrees(theta),
            "max_fraction": float(fractions[i].max()),
            "fractions_of_each_latent": {
                str(a): dict(zip(factor_names, map(float, _fractions(z[:, a], factors)))),
                str(b): dict(zip(factor_names, map(float, _fractions(z[:, b], factors)))),
            },
        },
    )
