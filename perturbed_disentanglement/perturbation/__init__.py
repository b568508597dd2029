"""The perturbation (paper §4.2, SPEC §3): the pattern that follows ``s`` and the noise control.

- :mod:`.pattern`: the fixed random pattern, ``perturb`` and ``uniform_noise`` on uint8 images,
  exact to the byte, and the default strength (κ, ε) per dataset;
- :mod:`.view`: :class:`PerturbedView`, a ground truth seen through a perturbation;
- :mod:`.configs`: which images each published config (``perturbed``, ``noise``, ``original``)
  holds.

How ``s`` and the strength are chosen lives one layer up, in :mod:`perturbed_disentanglement.reference`.
"""

from .configs import DEFAULT_CONFIG, KINDS, DatasetConfig, config_images, plan_configs
from .pattern import (
    DEFAULT_STRENGTH,
    NoisePerturbation,
    Pattern,
    PatternPerturbation,
    Perturbation,
    check_epsilon,
    check_kappa,
    default_strength,
    max_step,
    noise_perturbation,
    pattern_field,
    pattern_perturbation,
    perturb,
    uniform_noise,
)
from .view import PerturbedView

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_STRENGTH",
    "KINDS",
    "DatasetConfig",
    "NoisePerturbation",
    "Pattern",
    "PatternPerturbation",
    "Perturbation",
    "PerturbedView",
    "check_epsilon",
    "check_kappa",
    "config_images",
    "default_strength",
    "max_step",
    "noise_perturbation",
    "pattern_field",
    "pattern_perturbation",
    "perturb",
    "plan_configs",
    "uniform_noise",
]
