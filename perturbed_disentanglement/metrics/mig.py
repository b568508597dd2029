"""Mutual Information Gap (MIG), as computed by disentanglement_lib.

Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in Variational Autoencoders",
NeurIPS 2018 (arXiv:1802.04942). For each factor v_k, MIG_k = (I(z_a; v_k) - I(z_b; v_k)) / H(v_k)
where z_a, z_b are the code dimensions with the largest and second-largest mutual information
with v_k; MIG is the mean over factors. dlib's estimator (``evaluation/metrics/mig.py``): each
code dimension is discretised into 20 equal-width bins over its sample range and MI / entropy are
plug-in estimates in nats (``sklearn.metrics.mutual_info_score``).
"""

from __future__ import annotations

import numpy as np

from ._checks import check_pair
from .discretize import discrete_entropy, histogram_discretize, mutual_information_matrix


def mig_from_mutual_information(
    mutual_information: np.ndarray, factor_entropy: np.ndarray
) -> np.ndarray:
    """Per-factor gap ``(top1 - top2) / H`` from an MI matrix ``[d, k]`` and entropies ``[k]``.

    MIG per factor (Chen et al., NeurIPS 2018). Entropies must be positive (the caller excludes
    one-valued factors).
    """
    ordered = np.sort(mutual_information, axis=0)
    return (ordered[-1] - ordered[-2]) / factor_entropy


def mig(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> dict[str, object]:
    """Mutual Information Gap (Chen et al., NeurIPS 2018), as dlib's ``discrete_mig``.

    ``MIG = mean_k (I(z_a; v_k) - I(z_b; v_k)) / H(v_k)``, z_a, z_b the two codes most
    informative about v_k, on histogram-discretised codes.

    Args:
        codes: float ``[N, d]``, the representation (encoder mean), ``d >= 2``; dlib uses
            N = 10,000 random ground-truth samples.
        factors: int ``[N, k]``, the factor indices of the same samples.
        num_bins: equal-width bins per code dimension (dlib: 20).

    Returns:
        ``{"mig": float, "mig_per_factor": [k], "mutual_information": [d, k] (nats),
        "factor_entropy": [k] (nats)}``.

    Bad input: NaN/inf codes, mismatched lengths or fewer than 2 code dimensions raise
    :class:`InvalidArgumentError`. A one-valued factor has zero entropy, for which dlib returns
    NaN (0/0); here it raises :class:`InvalidArgumentError` (drop the column, as dlib's dSprites
    loader drops ``color``). A constant code dimension falls into one bin and has MI 0: valid.
    """
    c, f = check_pair(codes, factors, min_dims=2)
    binned = histogram_discretize(c, num_bins)
    mi = mutual_information_matrix(binned, f)
    entropy = discrete_entropy(f)
    per_factor = mig_from_mutual_information(mi, entropy)
    return {
        "mig": float(np.mean(per_factor)),
        "mig_per_factor": per_factor,
        "mutual_information": mi,
        "factor_entropy": entropy,
    }
