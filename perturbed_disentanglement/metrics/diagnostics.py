"""Why a perturbation did or did not break disentanglement: three diagnostics (SPEC §3).

- :func:`s_entanglement`: how entangled the scalar ``s`` is with the ground-truth factors. The
  paper's method needs ``s`` to be an entangled direction; an ``s`` that is one factor in disguise
  makes that factor's latent sharper and entangles nothing.
- :func:`pattern_uptake`: how much of the perturbation a trained decoder reproduces (1: all of it,
  0: none; the noise control gives about 0). A pattern the decoder ignores is treated as noise.
- :func:`s_alignment`: how much each latent tells about ``s`` (binned mutual information, like
  MIG, because a latent may encode ``s`` non-linearly) and which latent is the least noisy: the
  paper's signature of the effect is that the least-noise latent follows ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidArgumentError
from ._checks import check_codes, check_count, check_factors
from .active_units import mean_posterior_variance
from .discretize import discrete_entropy, histogram_discretize, mutual_information_matrix

#: A factor whose conditional mean explains more than this fraction of Var(s) dominates ``s``:
#: measured, the paper's rule gave 0.91 (floor_hue) on Shapes3D and 0.58 (posX) on dSprites.
DOMINANCE_THRESHOLD = 0.75


def _check_s(s: object, n: int | None = None) -> np.ndarray:
    values = np.asarray(s, dtype=np.float64)
    if values.ndim != 1 or (n is not None and len(values) != n):
        want = "[N]" if n is None else f"[{n}]"
        raise InvalidArgumentError(f"s must be a 1-D array {want}, got shape {list(values.shape)}")
    if len(values) < 2 or not np.isfinite(values).all():
        raise InvalidArgumentError("s must hold at least 2 finite values")
    return values


def explained_variance_fractions(s: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Per factor k, ``Var(E[s | v_k]) / Var(s)``: the share of ``s``'s variance that factor k's
    value alone explains (``[k]`` in [0, 1]; independent factors add up to at most 1)."""
    values = _check_s(s)
    f = check_factors(factors, name="factors")
    if len(f) != len(values):
        raise InvalidArgumentError(f"s has {len(values)} values but factors {len(f)} rows")
    centred = values - values.mean()
    total = float(np.sum(centred * centred))  # numpy's pairwise sum: not BLAS, whose threads
    # split the reduction (records must not depend on the thread count)
    if total <= 0:
        raise InvalidArgumentError("s is constant: its variance has no factor to explain it")
    out = np.empty(f.shape[1])
    for k in range(f.shape[1]):
        _, groups = np.unique(f[:, k], return_inverse=True)
        sums = np.bincount(groups, weights=centred)
        counts = np.bincount(groups)
        out[k] = float((sums**2 / counts).sum()) / total
    return out


def s_entanglement(
    s: np.ndarray,
    factors: np.ndarray,
    factor_names: Sequence[str],
    *,
    num_bins: int = 20,
) -> dict[str, object]:
    """How entangled ``s`` is with the factors, measured two ways, with a verdict.

    ``variance_fraction``: per factor, ``Var(E[s | v_k]) / Var(s)``. ``nmi``: per factor,
    ``I(s_binned; v_k) / H(v_k)`` with ``s`` in ``num_bins`` equal-width bins (MIG's binning): the
    share of the factor's information that ``s`` carries. ``dominant``: the factor with the
    largest variance fraction; ``dominated``: whether that fraction exceeds
    :data:`DOMINANCE_THRESHOLD` (then ``s`` is essentially one factor).
    """
    values = _check_s(s)
    f = check_factors(factors, name="factors")
    names = list(factor_names)
    if len(names) != f.shape[1]:
        raise InvalidArgumentError(f"{len(names)} factor names for {f.shape[1]} factor columns")
    fractions = explained_variance_fractions(values, f)
    binned = histogram_discretize(values[:, None], check_count(num_bins, "num_bins"))
    entropy = discrete_entropy(f)
    mi = mutual_information_matrix(binned, f)[0]
    nmi = np.divide(mi, entropy, out=np.zeros_like(mi), where=entropy > 0)
    top = int(np.argmax(fractions))
    return {
        "variance_fraction": {n: float(v) for n, v in zip(names, fractions)},
        "nmi": {n: float(v) for n, v in zip(names, nmi)},
        "dominant": names[top],
        "dominant_fraction": float(fractions[top]),
        "dominated": bool(fractions[top] > DOMINANCE_THRESHOLD),
        "threshold": DOMINANCE_THRESHOLD,
    }


def entanglement_text(entanglement: dict[str, object]) -> str:
    """:func:`s_entanglement`'s result in one line: the factors' shares of Var(s) (from 0.01 up,
    largest first) and the verdict, with a warning when one factor dominates."""
    fractions = dict(entanglement["variance_fraction"])  # type: ignore[arg-type]
    shares = ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(fractions.items(), key=lambda kv: -kv[1]) if v >= 0.01
    )
    verdict = (
        f"WARNING: dominated by {entanglement['dominant']} (> {entanglement['threshold']}): a "
        "pattern keyed to one factor entangles nothing"
        if entanglement["dominated"]
        else "no factor dominates"
    )
    return f"s's variance explained by each factor: {shares}; {verdict}"


def _as_unit(images: object, name: str) -> np.ndarray:
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise InvalidArgumentError(f"{name} must be uint8 or float images, got {a.dtype}")
    return a.astype(np.float64)


def pattern_uptake(
    original: np.ndarray, perturbed: np.ndarray, reconstruction: np.ndarray
) -> float:
    """How much of the perturbation ``d = x̃ − x`` the reconstruction ``x̂`` reproduces.

    ``Σ (x̂ − x − m)(d − m) / Σ (d − m)²`` over all pixels, where ``m`` is the mean of ``d`` over
    the pixels with the same original value (in the batch). Subtracting ``m`` removes what clipping
    to [0, 1] makes systematic (on binary dSprites a background pixel can only brighten, by ε/2 on
    average): a decoder that learns that constant shift learns nothing of the pattern. On pixels
    that no perturbation clips ``m`` is about 0 and this is the plain regression coefficient of
    ``x̂ − x`` on ``d``. 1: the decoder reproduces the perturbation; 0: it reproduces the original
    (or anything uncorrelated with the perturbation, as a decoder of noise does).

    All three are images of one shape, uint8 (0..255) or float in [0, 1].
    """
    x = np.asarray(original)
    if x.dtype != np.uint8:
        raise InvalidArgumentError(f"original must be uint8 images, got {x.dtype}")
    xt, xh = _as_unit(perturbed, "perturbed"), _as_unit(reconstruction, "reconstruction")
    if xt.shape != x.shape or xh.shape != x.shape:
        raise InvalidArgumentError(
            f"original {list(x.shape)}, perturbed {list(xt.shape)} and reconstruction "
            f"{list(xh.shape)} must have one shape"
        )
    flat = x.reshape(-1)
    d = xt.reshape(-1) - flat / 255.0
    r = xh.reshape(-1) - flat / 255.0
    counts = np.bincount(flat, minlength=256)
    mean_d = np.bincount(flat, weights=d, minlength=256) / np.maximum(counts, 1)
    dc = d - mean_d[flat]
    denominator = float(
        np.sum(dc * dc)
    )  # pairwise sums, not BLAS: see explained_variance_fractions
    if denominator <= 0:
        raise InvalidArgumentError("the perturbation is zero on these images: no uptake to measure")
    return float(np.sum((r - mean_d[flat]) * dc)) / denominator


def s_alignment(
    codes: np.ndarray, logvar: np.ndarray, s: np.ndarray, *, num_bins: int = 20
) -> dict[str, object]:
    """The alignment of a code with ``s``: per latent ``I(z_k; s) / H(s)`` and the least-noise latent.

    Both ``z_k`` (the encoder mean) and ``s`` are binned into ``num_bins`` equal-width bins, as MIG
    bins codes. ``least_noise``: ``argmin_k E σ²_k`` (the paper's first principal component);
    ``best``: the latent most informative about ``s``; ``follows_s``: whether they coincide and the
    least-noise latent's NMI exceeds every other latent's.
    """
    z = check_codes(codes, name="codes")
    lv = check_codes(logvar, name="logvar")
    if lv.shape != z.shape:
        raise InvalidArgumentError(f"logvar {list(lv.shape)} must match codes {list(z.shape)}")
    values = _check_s(s, len(z))
    bins = check_count(num_bins, "num_bins")
    s_binned = histogram_discretize(values[:, None], bins)
    entropy = float(discrete_entropy(s_binned)[0])
    if entropy <= 0:
        raise InvalidArgumentError("s falls into a single bin: it has no information to align with")
    nmi = mutual_information_matrix(histogram_discretize(z, bins), s_binned)[:, 0] / entropy
    variance = mean_posterior_variance(lv)
    least = int(np.argmin(variance))
    best = int(np.argmax(nmi))
    return {
        "nmi": [float(v) for v in nmi],
        "mean_variance": [float(v) for v in variance],
        "least_noise": least,
        "least_noise_nmi": float(nmi[least]),
        "best": best,
        "best_nmi": float(nmi[best]),
        "follows_s": bool(best == least),
    }
