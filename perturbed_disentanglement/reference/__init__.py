"""What defines the perturbation of a dataset: the reference ``s`` and its strength (κ, ε).

- :mod:`.stage`: the reference stage (paper §4.1): R restarts of a β-VAE, the chosen one, ``s``
  over the whole grid, the artifact (``model.safetensors``, ``s.npy``, ``reference.json``) and
  :func:`load_reference`; the shipped artifacts are in ``shipped/<dataset>/``;
- :mod:`.s_rules`: the rules that pick ``s`` from a reference's latents (the paper's, and rules
  entangled by construction);
- :mod:`.strength`: the Fig. 4 quantities on sampled pairs and the choice of (κ, ε) from them.
"""

from .s_rules import DEFAULT_S_RULE, S_RULES, SChoice, choose_s
from .stage import (
    PRESETS,
    SHIPPED_DIR,
    Preset,
    Reference,
    grid_identity,
    leading_latent,
    load_reference,
    preset_ground_truth,
    run_reference,
    s_sha256,
    select_restart,
    standardise,
    train_restart,
)

__all__ = [
    "DEFAULT_S_RULE",
    "PRESETS",
    "SHIPPED_DIR",
    "S_RULES",
    "Preset",
    "Reference",
    "SChoice",
    "choose_s",
    "grid_identity",
    "leading_latent",
    "load_reference",
    "preset_ground_truth",
    "run_reference",
    "s_sha256",
    "select_restart",
    "standardise",
    "train_restart",
]
