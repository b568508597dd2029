"""Disentanglement metrics and the paper's analysis quantities.

On arrays (``codes`` float ``[N, d]``, ``factors`` int ``[N, k]``): MIG, DCI, SAP, modularity
and explicitness, each reproducing google-research/disentanglement_lib's definition (dlib stores
the same arrays transposed). On a ground truth and an encoder (any callable
``uint8 images -> (mu, logvar)``): the FactorVAE and β-VAE scores, code sampling, active units
and the Fig. 4 quantities.

Shared by all of them: ``_checks`` (argument validation), ``_random`` (the one ``random_state``
rule: ``None`` means seed 0), ``_parallel`` (classifier fits in processes) and ``sampling``
(encoding grid points in bounded chunks).
"""

from ..perturbation.view import (  # re-exported: they live by the perturbation
    Perturbation,
    PerturbedView,
)
from .active_units import (
    active_units,
    information_level,
    information_level_by_factor,
    mean_posterior_variance,
    num_active_units,
)
from .beta_vae_score import beta_vae_score
from .dci import (
    completeness_from_importance,
    completeness_per_factor,
    dci,
    disentanglement_from_importance,
    disentanglement_per_code,
)
from .discretize import (
    discrete_entropy,
    discrete_mutual_information,
    histogram_discretize,
    mutual_information_matrix,
)
from .factor_vae_score import factor_vae_score
from .fig4 import Expansiveness, Fig4Quantities, fig4_quantities
from .mig import mig, mig_from_mutual_information
from .modularity import (
    modularity_explicitness,
    modularity_from_mutual_information,
    modularity_per_code,
)
from .sampling import Encoder, encode_grid, encode_indices, sample_codes
from .sap import sap, sap_from_score_matrix
from .split import split_train_test

__all__ = [
    "Encoder",
    "Expansiveness",
    "Fig4Quantities",
    "Perturbation",
    "PerturbedView",
    "active_units",
    "beta_vae_score",
    "encode_grid",
    "encode_indices",
    "factor_vae_score",
    "fig4_quantities",
    "information_level",
    "information_level_by_factor",
    "mean_posterior_variance",
    "num_active_units",
    "sample_codes",
    "completeness_from_importance",
    "completeness_per_factor",
    "dci",
    "discrete_entropy",
    "discrete_mutual_information",
    "disentanglement_from_importance",
    "disentanglement_per_code",
    "histogram_discretize",
    "mig",
    "mig_from_mutual_information",
    "modularity_explicitness",
    "modularity_from_mutual_information",
    "modularity_per_code",
    "mutual_information_matrix",
    "sap",
    "sap_from_score_matrix",
    "split_train_test",
]
