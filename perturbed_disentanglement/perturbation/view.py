"""A ground truth seen through a perturbation, so every metric runs on perturbed data unchanged.

A *perturbation* is any callable ``perturb(images, indices, s) -> images``
(:data:`~.perturbation.Perturbation`):

- ``images``: uint8 ``[n, H, W, C]``, the original grid images;
- ``indices``: int64 ``[n]``, their grid indices (a noise control keys its random stream on them);
- ``s``: float64 ``[n]`` or ``None``, the scalar the pattern follows (paper §4.2: the pattern is
  shifted by ``s``); analyses pass shifted values ``s + delta`` to measure how the perturbed
  image moves with ``s`` alone, so the callable must use the ``s`` it is given, not look it up.

It returns uint8 images of the same shape. :func:`~.perturbation.pattern_perturbation` and
:func:`~.perturbation.noise_perturbation` make the real ones. :class:`PerturbedView` turns a ground
truth and a perturbation into a ground truth (FactorVAE score, encoding the grid, Fig. 4, ...).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from .pattern import Perturbation, check_s


def check_s_values(s_values: object, size: int) -> np.ndarray:
    """``s_values`` as a finite float64 array with one value per grid point (``[size]``)."""
    return check_s(s_values, size, name="s_values", per="grid point")


def check_perturbation(perturb: object) -> Perturbation:
    """``perturb`` if it is callable, else an :class:`InvalidArgumentError`."""
    if not callable(perturb):
        raise InvalidArgumentError(f"perturb must be callable, got {type(perturb).__name__}")
    return perturb


def apply_perturbation(
    perturb: Perturbation, images: np.ndarray, indices: np.ndarray, s: np.ndarray | None
) -> np.ndarray:
    """``perturb(images, indices, s)``, checked to return uint8 images of the input's shape."""
    out = perturb(images, indices, s)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != images.shape:
        got = (
            f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
        )
        raise DataFormatError(
            f"the perturbation must return uint8 images {list(images.shape)} like its input, "
            f"got {got}"
        )
    return out


class PerturbedView(GroundTruth):
    """``gt`` with ``perturb`` applied to every image it serves (nothing is precomputed).

    ``s_values`` (one float per grid point) is what ``perturb`` receives as ``s`` for each image;
    without it ``perturb`` receives ``None``.
    """

    def __init__(
        self, gt: GroundTruth, perturb: Perturbation, s_values: np.ndarray | None = None
    ) -> None:
        self.base = gt
        self.perturb = check_perturbation(perturb)
        self.s_values = None if s_values is None else check_s_values(s_values, len(gt))
        self.name = gt.name
        self.factor_specs = gt.factor_specs
        self.image_shape = gt.image_shape
        self.source = gt.source

    def _images(self, indices: np.ndarray) -> np.ndarray:
        s = None if self.s_values is None else self.s_values[indices]
        return apply_perturbation(self.perturb, self.base.images(indices), indices, s)
