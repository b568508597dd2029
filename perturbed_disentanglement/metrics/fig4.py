"""The paper's Fig. 4a/4b quantities on a whole ground-truth grid, optionally perturbed.

For every generative factor, and for the perturbation's scalar ``s`` treated as one more factor:
the local expansiveness (:mod:`.expansiveness`) and the explained global variance
(:mod:`.explained_variance`), both computed exactly from the grid structure (no sampling).

How ``s`` enters (paper §5.2 "by adding an additional generating factor s, a uniform random
variable with zero mean and unit variance, we isolate the effect of the manipulation"):
``s_values`` gives one value per grid point, and ``perturb(images, indices, s)`` (see
:mod:`..perturbed_view`) perturbs with it. Two uses:

- the paper's isolated analysis: ``s_values = rng.uniform(-sqrt(3), sqrt(3), len(gt))``, an
  ``s`` independent of the factors;
- the dataset as built: ``s_values`` = the standardised ``s(x)`` of every grid point (SPEC §3),
  so the factors' numbers include the pattern's motion that follows them.

The factors are measured on the perturbed images ``perturb(x(w), w, s_values[w])``. For ``s``,
the step pairs the same original image perturbed with ``s`` and with ``s + s_delta``; its
explained variance groups the perturbed images by ``s`` (exact values or quantile bins). Without
``perturb`` the images do not depend on ``s`` beyond the grid, so its expansiveness is 0.

Cost: one pass over the grid per factor, plus one for ``s``; memory stays at a few chunks of
``chunk_images`` images (about 100 MB at the default for dSprites).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError
from ..ground_truth import GroundTruth
from ..perturbation.view import (
    Perturbation,
    PerturbedView,
    apply_perturbation,
    check_perturbation,
    check_s_values,
)
from ._checks import check_count, check_real
from .expansiveness import (
    Expansiveness,
    ExpansivenessAccumulator,
    squared_pair_norms,
    squared_step_norms,
    standardized_step,
)
from .explained_variance import ConditionalSums, PixelMoments, s_groups
from .grid_scan import iter_contiguous, iter_lines

#: The name ``s`` is reported under.
S_NAME = "s"


@dataclass(frozen=True)
class Fig4Quantities:
    """Fig. 4a and 4b numbers, keyed by factor name (and ``"s"`` when ``s_values`` was given).

    ``total_variance`` is ``sum_pixels Var(x)`` of the (perturbed) dataset, pixels in [0, 1]: the
    ceiling of every explained variance, handy to report them as fractions.
    """

    expansiveness: dict[str, Expansiveness]
    explained_variance: dict[str, float]
    total_variance: float


def _selected(gt: GroundTruth, factor_names: Sequence[str] | None) -> list[int]:
    if factor_names is None:
        return list(range(gt.num_factors))
    if isinstance(factor_names, str):
        factor_names = [factor_names]
    factor_names = list(dict.fromkeys(factor_names))
    unknown = [n for n in factor_names if n not in gt.factor_names]
    if unknown:
        raise InvalidArgumentError(
            f"{gt.name} has no factor(s) {unknown}; its factors are {list(gt.factor_names)}"
        )
    return [gt.factor_names.index(n) for n in factor_names]


def default_s_delta(gt: GroundTruth) -> float:
    """One step of the position factors in std units (paper §5.2), else the finest factor step.

    The position factors are those whose name starts with ``pos`` (dSprites' posX/posY: 0.108);
    a ground truth without them (Shapes3D) gets the smallest standardised step of any factor.
    """
    positions = [n for name, n in zip(gt.factor_names, gt.factor_sizes) if name.startswith("pos")]
    steps = [standardized_step(n) for n in positions or gt.factor_sizes if n >= 2]
    if not steps:
        raise InvalidArgumentError(f"{gt.name} has no factor with two or more values")
    return min(steps)


def fig4_quantities(
    gt: GroundTruth,
    *,
    perturb: Perturbation | None = None,
    s_values: np.ndarray | None = None,
    s_delta: float | None = None,
    factor_names: Sequence[str] | None = None,
    num_bins: int = 20,
    chunk_images: int = 2048,
    progress: bool = False,
) -> Fig4Quantities:
    """Local expansiveness and explained global variance of each factor (and ``s``).

    The quantities of Fig. 4a/4b of "Clearing the path for truly semantic representation
    learning": ``alpha = E||x(w + e_j) - x(w)|| / delta`` and
    ``sum_pixels Var_{w_j} E[x | w_j]`` (definitions in :mod:`.expansiveness` and
    :mod:`.explained_variance`), computed exactly on the whole grid.

    Args:
        gt: the original ground truth.
        perturb: optional ``perturb(images, indices, s) -> images`` applied to every image.
        s_values: optional float ``[len(gt)]``, the scalar ``s`` of every grid point (assumed
            standardised: ``s_delta`` is in its units).
        s_delta: the step in ``s`` for its expansiveness; default :func:`default_s_delta`, the
            positions' step in std units, as the paper uses "the step size of the position
            generating factors" (the finest factor step when there are no positions).
        factor_names: the factors to analyse (default all); a factor with a single value gets a
            NaN expansiveness and zero explained variance.
        num_bins: groups for the explained variance of ``s`` (see :mod:`.explained_variance`).
        chunk_images: images held per chunk.
        progress: show a tqdm bar per pass.
    """
    axes = _selected(gt, factor_names)
    num_bins = check_count(num_bins, "num_bins", 2)
    chunk_images = check_count(chunk_images, "chunk_images")
    if perturb is not None:
        check_perturbation(perturb)
    s = None if s_values is None else check_s_values(s_values, len(gt))
    if s_delta is None:
        s_delta = default_s_delta(gt) if s is not None else 1.0
    s_delta = check_real(s_delta, "s_delta", strict=True)
    source = gt if perturb is None else PerturbedView(gt, perturb, s)
    sizes = gt.factor_sizes
    pixels = int(np.prod(gt.image_shape))

    expansiveness: dict[str, Expansiveness] = {}
    explained: dict[str, float] = {}
    moments = PixelMoments(pixels)  # filled during the first pass only
    for j in axes:
        name, n = gt.factor_names[j], sizes[j]
        steps = ExpansivenessAccumulator()
        sums = ConditionalSums(n, pixels)
        for _, block in iter_lines(
            source.images, sizes, j, chunk_images, progress=progress, desc=f"fig4 {name}"
        ):
            values = block.astype(np.float32)  # one conversion shared by the three sums
            if n >= 2:
                steps.add(squared_step_norms(values))
            sums.add_lines(values)
            if j == axes[0]:
                moments.add(values)
        expansiveness[name] = steps.result(standardized_step(n) if n >= 2 else 1.0)
        explained[name] = sums.explained_variance()

    if s is not None:
        groups, num_groups = s_groups(s, num_bins)
        steps = ExpansivenessAccumulator()
        sums = ConditionalSums(num_groups, pixels)
        for idx in iter_contiguous(len(gt), chunk_images, progress=progress, desc="fig4 s"):
            original = gt.images(idx)
            if perturb is None:
                shown = original
                steps.add(np.zeros(len(idx)))
            else:
                shown = apply_perturbation(perturb, original, idx, s[idx])
                moved = apply_perturbation(perturb, original, idx, s[idx] + s_delta)
                steps.add(squared_pair_norms(moved, shown))
            sums.add_grouped(shown, groups[idx])
            if not axes:
                moments.add(shown)
        expansiveness[S_NAME] = steps.result(float(s_delta))
        explained[S_NAME] = sums.explained_variance()

    return Fig4Quantities(expansiveness, explained, moments.total_variance())
