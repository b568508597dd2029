"""What a sweep runs: one :class:`RunSpec` per (model, hyperparameters, config, seed).

Pure functions from the command line's strings to run specs, so the parsing is tested on its own
and a sweep's list of runs is known before anything trains.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError
from ..perturbation.configs import KINDS
from ..training.zoo import MODELS, hyperparameters, model_spec
from .evaluation import EvaluationSizes
from .records import run_id


@dataclass(frozen=True)
class BenchmarkPreset:
    """How much compute a sweep gets: steps per run, default seeds, metric sample sizes."""

    name: str
    steps: int
    seeds: tuple[int, ...]
    sizes: EvaluationSizes = field(default_factory=EvaluationSizes)
    checkpoint_every: int = 2_000


PRESETS: dict[str, BenchmarkPreset] = {
    # seconds: the pipeline end to end in the tests
    "smoke": BenchmarkPreset(
        "smoke",
        steps=30,
        seeds=(0, 1),
        sizes=EvaluationSizes(
            num_train=500,
            num_test=250,
            factor_vae_train=50,
            factor_vae_eval=25,
            factor_vae_variance=500,
        ),
        checkpoint_every=10,
    ),
    # a few hours on 2 CPU cores for β-VAE × 3 configs × 3 seeds (one run ≈ 30–40 min per core);
    # dlib's metric sizes except the FactorVAE score's votes (dlib's 10,000 + 5,000 votes of 64
    # images each encode 960,000 images: 10 minutes per run on one core)
    "cpu": BenchmarkPreset(
        "cpu",
        steps=10_000,
        seeds=(0, 1, 2),
        sizes=EvaluationSizes(factor_vae_train=1_000, factor_vae_eval=500),
    ),
    # the paper's protocol (dlib's 300,000 steps, 10 seeds), for GPUs
    "paper": BenchmarkPreset(
        "paper", steps=300_000, seeds=tuple(range(10)), checkpoint_every=10_000
    ),
}


def benchmark_preset(name: str) -> BenchmarkPreset:
    if name not in PRESETS:
        raise InvalidArgumentError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class RunSpec:
    """One run: a zoo model with all its hyperparameters, on one config, with one seed."""

    model: str
    hparams: Mapping[str, float]
    config: str
    seed: int
    steps: int
    batch_size: int = 64

    @property
    def run_id(self) -> str:
        return run_id(self.model, self.hparams, self.config, self.seed, self.steps)

    @property
    def regulariser(self) -> dict[str, Any] | None:
        """The zoo's grid parameter and its value (Fig. 5's x-axis); None for the AE."""
        name = model_spec(self.model).grid_parameter
        return None if name is None else {"name": name, "value": float(self.hparams[name])}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hparams": dict(self.hparams),
            "config": self.config,
            "seed": self.seed,
            "steps": self.steps,
            "batch_size": self.batch_size,
        }


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InvalidArgumentError(f"no {what} given in {text!r}")
    if len(set(items)) != len(items):
        raise InvalidArgumentError(f"{what} listed twice in {text!r}")
    return items


def parse_models(text: str) -> list[str]:
    """``"beta_vae,ae"`` → zoo names (``all``: every model), each checked."""
    if text.strip() == "all":
        return list(MODELS)
    return [model_spec(m).name for m in parse_list(text, "models")]


def parse_configs(text: str) -> list[str]:
    """``"original,perturbed,noise"``; further ε configs (``perturbed-eps0.05``) are allowed."""
    configs = parse_list(text, "configs")
    for c in configs:
        if c.split("-eps")[0] not in KINDS:
            raise InvalidArgumentError(
                f"unknown config {c!r}; expected one of {', '.join(KINDS)} "
                "(or <kind>-eps<ε> of a build with several ε)"
            )
    return configs


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-2,7"`` → sorted distinct seeds ≥ 0."""
    seeds: list[int] = []
    for part in parse_list(text, "seeds"):
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise InvalidArgumentError(
                f"cannot parse seeds {part!r} in {text!r}; expected N, A-B (A <= B) or a list"
            ) from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InvalidArgumentError(f"seeds must be distinct integers >= 0, got {text!r}")
    return sorted(seeds)


def parse_grid(entries: Sequence[str]) -> dict[str, list[float]]:
    """``["beta=1,2,4", "gamma=10,20"]`` → ``{"beta": [1, 2, 4], "gamma": [10, 20]}``."""
    grid: dict[str, list[float]] = {}
    for entry in entries:
        key, sep, values = str(entry).partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgumentError(
                f"cannot parse --grid {entry!r}; expected NAME=V1,V2,… such as beta=1,2,4,8,16"
            )
        if key in grid:
            raise InvalidArgumentError(f"--grid gives {key!r} twice")
        try:
            grid[key] = [float(v) for v in parse_list(values, f"values of {key}")]
        except ValueError:
            raise InvalidArgumentError(
                f"cannot parse --grid {entry!r}: values must be numbers"
            ) from None
    return grid


def plan_runs(
    models: Sequence[str],
    configs: Sequence[str],
    seeds: Sequence[int],
    *,
    dataset: str,
    steps: int,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> list[RunSpec]:
    """Every run of a sweep, in a stable order (model, hyperparameters, seed, config).

    A grid entry applies to each model that has that hyperparameter (the others keep their
    defaults); an entry no selected model has is an error, not silently ignored.
    """
    if not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError(f"steps must be an integer >= 1, got {steps!r}")
    grid = dict(grid or {})
    used = {k for m in models for k in grid if k in hyperparameters(m, dataset)}
    unused = sorted(set(grid) - used)
    if unused:
        raise InvalidArgumentError(
            f"no selected model has the hyperparameter(s) {unused}; "
            + "; ".join(f"{m}: {', '.join(hyperparameters(m, dataset)) or 'none'}" for m in models)
        )
    specs = []
    for model in models:
        keys = [k for k in grid if k in hyperparameters(model, dataset)]
        for values in itertools.product(*(grid[k] for k in keys)):
            hp = hyperparameters(model, dataset, **dict(zip(keys, values)))
            for seed in seeds:
                for config in configs:
                    specs.append(RunSpec(model, hp, config, int(seed), steps))
    return specs
