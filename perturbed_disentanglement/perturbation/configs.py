"""The published datasets' configs (SPEC §4): which images each config holds, as a pure function.

A config is one kind of image — ``perturbed`` (the paper's pattern), ``noise`` (the uniform-noise
control) or ``original`` — at one ε. The first ε of a build gives the plain names ``perturbed``
and ``noise``; every further ε adds ``perturbed-eps<ε>`` and ``noise-eps<ε>``. The build and the
verifier both call :func:`config_images`, so what is written is, by construction, what is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .pattern import Pattern, check_epsilon, max_step, perturb, uniform_noise

KINDS = ("perturbed", "noise", "original")
DEFAULT_CONFIG = "perturbed"


@dataclass(frozen=True)
class DatasetConfig:
    """One config: its name, kind and ε (0 for ``original``)."""

    name: str
    kind: str
    epsilon: float

    @property
    def max_step(self) -> int:
        """The largest change of any stored byte against the original (0 for ``original``)."""
        return 0 if self.kind == "original" else max_step(self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "epsilon": self.epsilon,
            "max_step": self.max_step,
        }


def epsilon_label(epsilon: float) -> str:
    """``ε`` as written in a config name: ``0.05`` -> ``"0.05"`` (shortest exact-looking form)."""
    text = f"{epsilon:.6g}"
    return text if "e" not in text else repr(float(epsilon))


def plan_configs(kinds: Sequence[str], epsilons: Sequence[float]) -> list[DatasetConfig]:
    """The configs of a build: ``kinds`` (a subset of :data:`KINDS`) × the ε values.

    ``epsilons[0]`` is the main ε (``perturbed``, ``noise``); each further one adds
    ``<kind>-eps<ε>`` for the perturbed and noise kinds requested. ``original`` appears once.
    """
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InvalidArgumentError(
            f"unknown or no config(s) {unknown or kinds!r}; expected a non-empty subset of "
            f"{', '.join(KINDS)}"
        )
    if len(set(kinds)) != len(kinds):
        raise InvalidArgumentError(f"configs listed twice in {kinds!r}")
    if not epsilons:
        raise InvalidArgumentError("at least one epsilon is needed")
    eps = [check_epsilon(e) for e in epsilons]
    labels = [epsilon_label(e) for e in eps]
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError(f"epsilon values must be distinct, got {list(epsilons)!r}")
    configs = []
    for kind in (k for k in KINDS if k in kinds):
        configs.append(DatasetConfig(kind, kind, 0.0 if kind == "original" else eps[0]))
    for e, label in zip(eps[1:], labels[1:]):
        for kind in ("perturbed", "noise"):
            if kind in kinds:
                configs.append(DatasetConfig(f"{kind}-eps{label}", kind, e))
    return configs


def config_images(
    config: DatasetConfig,
    original: np.ndarray,
    indices: np.ndarray,
    s: np.ndarray,
    *,
    pattern: Pattern,
    seed: int,
    threads: int | None = 1,
) -> np.ndarray:
    """The images ``config`` holds for rows whose originals are ``original``.

    ``indices`` are the rows' grid indices (they key the noise), ``s`` their values of s (they
    move the pattern); ``seed`` is the build seed of the noise. ``original`` is not modified.
    """
    if config.kind == "original":
        return original.copy()
    if config.kind == "perturbed":
        return perturb(original, s, config.epsilon, pattern, threads=threads)
    if config.kind == "noise":
        return uniform_noise(original, indices, config.epsilon, seed, threads=threads)
    raise InvalidArgumentError(f"unknown config kind {config.kind!r}; expected one of {KINDS}")
