"""Checks of what users hand to training and encoding: image arrays and integer settings."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError, InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from .models import IMAGE_SIZE


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int, or a clear error if it is not an integer in [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgumentError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def as_image_array(images: np.ndarray | GroundTruth, *, name: str = "images") -> np.ndarray:
    """``images`` as a uint8 array ``[N, 64, 64, C]`` (C = 1 or 3), or a clear DataFormatError.

    A :class:`GroundTruth` gives its ``all_images()``. No copy is made unless the array has
    negative strides.
    """
    if isinstance(images, GroundTruth):
        images = images.all_images()
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise DataFormatError(
            f"{name} must be a uint8 numpy array [N, 64, 64, C] or a GroundTruth, "
            f"got {type(images).__name__}"
        )
    if images.dtype != np.uint8:
        hint = (
            " (float images: convert with (x * 255).round().astype(np.uint8))"
            if np.issubdtype(images.dtype, np.floating)
            else ""
        )
        raise DataFormatError(f"{name} must be uint8 in 0..255, got dtype {images.dtype}{hint}")
    shape = images.shape
    if images.ndim == 4 and shape[1] in (1, 3) and shape[2:] == (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{name} look channels-first (NCHW) {list(shape)}; expected channels-last "
            f"[N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] (use images.transpose(0, 2, 3, 1))"
        )
    if images.ndim == 3 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{name} have shape {list(shape)}; expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] "
            "(add the channel axis with images[..., None])"
        )
    if images.ndim != 4 or shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or shape[3] not in (1, 3):
        raise DataFormatError(
            f"{name} must have shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}, C] with C = 1 or 3, "
            f"got {list(shape)}"
        )
    if shape[0] == 0:
        raise DataFormatError(f"{name} is empty (0 images)")
    if any(s < 0 for s in images.strides):
        images = np.ascontiguousarray(images)
    return images


def as_source(images: np.ndarray) -> torch.Tensor:
    """A zero-copy uint8 tensor view of ``images`` (read-only arrays are never written)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)
