"""Choosing the perturbation's strength (κ, ε) by the paper's Fig. 4 criterion, on sampled pairs.

The paper (§5.2, Fig. 4) picks ε where ``s`` starts to dominate the *local* statistics (its local
expansiveness exceeds every factor's) long before it dominates the *global* ones (its explained
variance stays below the largest factor's). SPEC §3 leaves κ (pattern rows per unit of s) open,
and it decides whether the pattern registers at all, so both are chosen here by measurement.

Every quantity is a mean over random pairs of images (pixels in [0, 1]):

- local expansiveness of factor ``j``: ``E ||x̃(w + e_j) − x̃(w)|| / δ_j``, ``δ_j`` the factor's
  step in standard deviations; of ``s``: ``E ||x̃(w; s + δ) − x̃(w; s)|| / δ`` with ``δ`` the
  position step (the finest factor step without positions), as :mod:`.metrics.fig4` defines them;
- explained global variance ``Σ_pixels Var_g E[x̃ | g]`` = total − within, both from squared
  differences: ``Σ Var x̃ = E ||a − b||² / 2`` over independent pairs and ``E_g Σ Var(x̃ | g) =
  E ||a − b||² / 2`` over pairs that share ``g`` (unbiased, no mean image needed).

Two variants (SPEC §3): ``isolated``, the paper's analysis, where ``s`` is an extra factor uniform
on ``[−√3, √3]`` independent of the others (a factor's step keeps ``s``, so it does not move the
pattern); and ``as_built``, where each image carries its own ``s(w)`` (the reference's), so a
factor's step moves the pattern too. The pairs are drawn once and re-perturbed for every (κ, ε).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError
from ..ground_truth import GroundTruth
from ..metrics.expansiveness import standardized_step
from ..metrics.fig4 import default_s_delta
from ..perturbation.pattern import Pattern, check_epsilon, check_kappa, perturb

VARIANTS = ("isolated", "as_built")
S_NAME = "s"
#: The sweep: issue 7's ε (0.01 … 0.3) plus 0.125, 0.175 (the paper's Shapes3D ε) and 0.25,
#: because the window between local and global dominance is narrow; and its κ.
EPSILONS = (0.01, 0.02, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3)
KAPPAS = (4, 8, 16, 32, 64)
#: Quantile bins of ``s`` that define "the same s" for its explained variance when built.
S_BINS = 100


@dataclass(frozen=True)
class PairSet:
    """Pairs of grid images and the ``s`` each is perturbed with, for one quantity."""

    quantity: str  # "local" (expansiveness), "within" (shared group), "total" (independent)
    name: str  # factor name, "s", or "" for the total
    a: np.ndarray  # grid indices [M]
    b: np.ndarray
    s_a: np.ndarray  # float64 [M]
    s_b: np.ndarray
    delta: float = 1.0  # step in std units (local only)


def _uniform_s(rng: np.random.Generator, m: int) -> np.ndarray:
    return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=m)


#: Keys the isolated s's random stream apart from the build's other streams of the same seed.
ISOLATED_S_STREAM = 0x15_0A7ED


def isolated_s(num_images: int, seed: int) -> np.ndarray:
    """The isolated variant's ``s`` as a dataset column: one value per grid image, uniform on
    ``[−√3, √3]`` (mean 0, variance 1), independent of every factor, fixed by ``seed``. The paper
    trains on such a dataset for its Fig. 4(c): no factor carries ``s``, so a model that draws the
    pattern must give ``s`` a latent of its own."""
    rng = np.random.default_rng([ISOLATED_S_STREAM, seed])
    return _uniform_s(rng, num_images).astype(np.float32)


def draw_pairs(
    gt: GroundTruth,
    variant: str,
    *,
    num_pairs: int = 10_000,
    s_values: np.ndarray | None = None,
    seed: int = 0,
) -> list[PairSet]:
    """All the pairs the Fig. 4 quantities of ``gt`` need, drawn from ``seed``.

    ``isolated`` draws ``s`` uniform on ``[−√3, √3]`` (mean 0, variance 1); ``as_built`` needs
    ``s_values`` (one standardised value per grid point) and uses them.
    """
    if variant not in VARIANTS:
        raise InvalidArgumentError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "as_built":
        if s_values is None:
            raise InvalidArgumentError("the as_built variant needs s_values (the reference's s)")
        s_values = np.asarray(s_values, dtype=np.float64)
        if s_values.shape != (len(gt),) or not np.all(np.isfinite(s_values)):
            raise InvalidArgumentError(
                f"s_values must be finite, one per grid point [{len(gt)}], got {s_values.shape}"
            )
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 2:
        raise InvalidArgumentError(f"num_pairs must be an integer >= 2, got {num_pairs!r}")
    rng = np.random.default_rng(seed)
    m = num_pairs
    built = variant == "as_built"

    def own_s(idx: np.ndarray) -> np.ndarray:
        return s_values[idx]  # type: ignore[index]

    def sample(count: int) -> np.ndarray:
        return gt.sample_factors(count, rng).astype(np.int64)

    sets: list[PairSet] = []
    for j, (name, n) in enumerate(zip(gt.factor_names, gt.factor_sizes)):
        if n < 2:
            continue
        w = sample(m)
        w[:, j] = rng.integers(0, n - 1, size=m)
        w_next = w.copy()
        w_next[:, j] += 1
        a, b = gt.index(w), gt.index(w_next)
        s = _uniform_s(rng, m)
        s_a, s_b = (own_s(a), own_s(b)) if built else (s, s)
        sets.append(PairSet("local", name, a, b, s_a, s_b, standardized_step(n)))
        w, w2 = sample(m), sample(m)  # fresh: the local pairs' w_j stops short of the last value
        w2[:, j] = w[:, j]
        a, b = gt.index(w), gt.index(w2)
        s_a, s_b = (own_s(a), own_s(b)) if built else (_uniform_s(rng, m), _uniform_s(rng, m))
        sets.append(PairSet("within", name, a, b, s_a, s_b))
    delta = default_s_delta(gt)
    a = gt.index(sample(m))
    s = own_s(a) if built else _uniform_s(rng, m)
    sets.append(PairSet("local", S_NAME, a, a, s, s + delta, delta))
    if built:
        order = np.argsort(s_values, kind="stable")  # type: ignore[arg-type]
        rank = np.empty(len(gt), np.int64)
        rank[order] = np.arange(len(gt))
        edges = np.linspace(0, len(gt), S_BINS + 1).round().astype(np.int64)
        bin_of = np.searchsorted(edges, rank[a], side="right") - 1
        b = order[rng.integers(edges[bin_of], edges[bin_of + 1])]
        sets.append(PairSet("within", S_NAME, a, b, own_s(a), own_s(b)))
    else:
        b = gt.index(sample(m))
        sets.append(PairSet("within", S_NAME, a, b, s, s))
    a, b = gt.index(sample(m)), gt.index(sample(m))
    s_a, s_b = (own_s(a), own_s(b)) if built else (_uniform_s(rng, m), _uniform_s(rng, m))
    sets.append(PairSet("total", "", a, b, s_a, s_b))
    return sets


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a − b||²`` per image pair of uint8 images ``[M, ...]``, pixels in [0, 1] (float64)."""
    d = a.astype(np.int16) - b.astype(np.int16)
    d = d.reshape(len(d), -1).astype(np.int32)
    return np.einsum("ij,ij->i", d, d).astype(np.float64) / 255.0**2


@dataclass(frozen=True)
class Fig4Point:
    """The Fig. 4 quantities at one (variant, κ, ε): per name (factors and ``s``)."""

    variant: str
    kappa: float
    epsilon: float
    expansiveness: dict[str, float]
    explained_variance: dict[str, float]
    total_variance: float

    def dominance(self) -> tuple[float, float]:
        """``(α_s / max_j α_j, EV_s / max_j EV_j)``: s dominates locally, globally when > 1."""
        local = max(v for k, v in self.expansiveness.items() if k != S_NAME)
        glob = max(v for k, v in self.explained_variance.items() if k != S_NAME)
        return (
            self.expansiveness[S_NAME] / local,
            self.explained_variance[S_NAME] / glob,
        )

    def meets_criterion(self) -> bool:
        local, glob = self.dominance()
        return local > 1.0 and glob < 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fig4Point:
        """The point :meth:`as_dict` wrote (its derived fields are recomputed, not read)."""
        return cls(
            variant=str(d["variant"]),
            kappa=float(d["kappa"]),
            epsilon=float(d["epsilon"]),
            expansiveness={k: float(v) for k, v in d["expansiveness"].items()},
            explained_variance={k: float(v) for k, v in d["explained_variance"].items()},
            total_variance=float(d["total_variance"]),
        )

    def as_dict(self) -> dict[str, object]:
        local, glob = self.dominance()
        return {
            "variant": self.variant,
            "kappa": self.kappa,
            "epsilon": self.epsilon,
            "expansiveness": self.expansiveness,
            "explained_variance": self.explained_variance,
            "total_variance": self.total_variance,
            "local_dominance": local,
            "global_dominance": glob,
            "meets_criterion": self.meets_criterion(),
        }


def sweep(
    gt: GroundTruth,
    pairs: Sequence[PairSet],
    variant: str,
    *,
    kappas: Sequence[float] = KAPPAS,
    epsilons: Sequence[float] = EPSILONS,
    pattern_seed: int = 0,
    progress: bool = True,
) -> list[Fig4Point]:
    """The Fig. 4 quantities for every (κ, ε) on the same pairs (images rendered once per set)."""
    kappas = [check_kappa(k) for k in kappas]
    epsilons = [check_epsilon(e) for e in epsilons]
    patterns = {k: Pattern(seed=pattern_seed, kappa=k) for k in kappas}
    combos = [(k, e) for k in kappas for e in epsilons]
    sq: dict[tuple[float, float], dict[tuple[str, str], np.ndarray]] = {c: {} for c in combos}
    bar = tqdm(
        total=len(pairs) * len(combos), desc=f"fig4 {gt.name} {variant}", disable=not progress
    )
    for p in pairs:
        x_a = gt.images(p.a)
        x_b = x_a if p.b is p.a else gt.images(p.b)
        for k, e in combos:
            sq[(k, e)][(p.quantity, p.name)] = squared_distances(
                perturb(x_a, p.s_a, e, patterns[k]), perturb(x_b, p.s_b, e, patterns[k])
            )
            bar.update(1)
    bar.close()
    deltas = {p.name: p.delta for p in pairs if p.quantity == "local"}
    names = list(deltas)
    points = []
    for k, e in combos:
        d = sq[(k, e)]
        total = float(d[("total", "")].mean() / 2)
        points.append(
            Fig4Point(
                variant=variant,
                kappa=k,
                epsilon=e,
                expansiveness={
                    n: float(np.sqrt(d[("local", n)]).mean() / deltas[n]) for n in names
                },
                explained_variance={n: total - float(d[("within", n)].mean() / 2) for n in names},
                total_variance=total,
            )
        )
    return points


def choose(points: Sequence[Fig4Point]) -> tuple[Fig4Point, bool]:
    """The paper's choice: the smallest ε meeting the criterion (ties: the κ with the largest local
    dominance). If none meets it, the closest: the largest local dominance among the points whose
    global dominance stays below 1 (ties: the smaller ε). Returns ``(point, met)``."""
    if not points:
        raise InvalidArgumentError("no Fig. 4 points to choose from")
    met = [p for p in points if p.meets_criterion()]
    if met:
        return min(met, key=lambda p: (p.epsilon, -p.dominance()[0])), True
    below = [p for p in points if p.dominance()[1] < 1.0] or list(points)
    return min(below, key=lambda p: (-p.dominance()[0], p.epsilon)), False
