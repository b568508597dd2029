"""Disentanglement metrics on arrays: ``codes`` float ``[N, d]`` and ``factors`` int ``[N, k]``.

Each metric reproduces google-research/disentanglement_lib's definition (dlib stores the same
arrays transposed) and returns a dict of floats plus per-factor / per-code arrays.
"""

from ._checks import split_train_test
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
from .mig import mig, mig_from_mutual_information
from .modularity import (
    modularity_explicitness,
    modularity_from_mutual_information,
    modularity_per_code,
)
from .sap import sap, sap_from_score_matrix

__all__ = [
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
