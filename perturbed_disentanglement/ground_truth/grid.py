"""The one ground-truth API shared by dSprites and Shapes3D, procedural or read from official files.

A ground truth is a full factorial grid: every combination of factor values appears once, in
row-major order (the last factor varies fastest), exactly as in the official files. Images are uint8
``[n, 64, 64, C]`` in 0..255 whatever the source (dSprites' 0/1 bytes are scaled to 0/255).
:func:`~.ground_truth.ground_truth` builds the two datasets' grids.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError


@dataclass(frozen=True)
class Factor:
    """One generative factor: its name, its values in grid order, and category names if discrete."""

    name: str
    values: np.ndarray = field(repr=False)
    categories: tuple[str, ...] | None = None

    @property
    def size(self) -> int:
        return len(self.values)


class GroundTruth(abc.ABC):
    """A full factorial grid of images with its generative factors.

    Subclasses set ``name``, ``factor_specs``, ``image_shape`` and ``source`` and implement
    ``_images``; everything else (index arithmetic, validation, sampling) lives here.
    """

    name: str
    factor_specs: tuple[Factor, ...]
    image_shape: tuple[int, int, int]
    source: str  # "procedural" or the path of the official file

    # --- factor metadata -------------------------------------------------------------------
    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factor_specs)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(f.size for f in self.factor_specs)

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        return tuple(f.values for f in self.factor_specs)

    @property
    def categories(self) -> dict[str, tuple[str, ...]]:
        """Category names of the discrete factors (e.g. ``{"shape": ("square", ...)}``)."""
        return {f.name: f.categories for f in self.factor_specs if f.categories is not None}

    @property
    def num_factors(self) -> int:
        return len(self.factor_specs)

    @property
    def num_channels(self) -> int:
        return self.image_shape[-1]

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"{type(self).__name__}({sizes}; source={self.source!r})"

    # --- index arithmetic ------------------------------------------------------------------
    def check_indices(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Return ``indices`` as a 1-D int64 array, or raise if any is outside ``[0, len)``."""
        arr = np.asarray(indices)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            if arr.size == 0:
                arr = arr.astype(np.int64)
            else:
                raise InvalidArgumentError(
                    f"{self.name}: indices must be integers, got dtype {arr.dtype}"
                )
        arr = arr.astype(np.int64, copy=False).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            bad = arr[(arr < 0) | (arr >= len(self))][0]
            raise InvalidArgumentError(
                f"{self.name}: index {int(bad)} is out of range; valid indices are 0..{len(self) - 1}"
            )
        return arr

    def factors(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Factor indices (int64 ``[n, k]``) of the grid points ``indices``."""
        idx = self.check_indices(indices)
        return np.stack(np.unravel_index(idx, self.factor_sizes), axis=1).astype(np.int64)

    def index(self, factors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Grid indices (int64 ``[n]``) of the factor-index rows ``factors`` (``[n, k]``)."""
        try:
            arr = np.asarray(factors)
        except ValueError:  # ragged rows
            arr = None
        if arr is None or arr.dtype == object:
            raise InvalidArgumentError(
                f"{self.name}: factors must be a rectangular [n, {self.num_factors}] integer array"
            )
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.num_factors:
            raise InvalidArgumentError(
                f"{self.name}: factors must have shape [n, {self.num_factors}] "
                f"({', '.join(self.factor_names)}), got {list(np.shape(factors))}"
            )
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(
                f"{self.name}: factors must be integer indices, got dtype {arr.dtype}"
            )
        arr = arr.astype(np.int64, copy=False)
        for k, (name, size) in enumerate(zip(self.factor_names, self.factor_sizes)):
            col = arr[:, k]
            if col.size and (col.min() < 0 or col.max() >= size):
                bad = col[(col < 0) | (col >= size)][0]
                raise InvalidArgumentError(
                    f"{self.name}: factor {name!r} index {int(bad)} is out of range 0..{size - 1}"
                )
        return np.ravel_multi_index(tuple(arr.T), self.factor_sizes).astype(np.int64)

    def factor_values_of(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Factor values (float64 ``[n, k]``) of the grid points ``indices``."""
        f = self.factors(indices)
        return np.stack([v[f[:, k]] for k, v in enumerate(self.factor_values)], axis=1)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor-index rows drawn uniformly and independently per factor."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1)

    # --- images ----------------------------------------------------------------------------
    def images(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """uint8 images ``[n, H, W, C]`` in 0..255 for the grid points ``indices``."""
        idx = self.check_indices(indices)
        out = self._images(idx)
        assert out.shape == (len(idx), *self.image_shape) and out.dtype == np.uint8
        return out

    def all_images(self) -> np.ndarray:
        """The whole grid as one uint8 array ``[len, H, W, C]`` (fast path; override if faster)."""
        return self.images(np.arange(len(self)))

    @abc.abstractmethod
    def _images(self, indices: np.ndarray) -> np.ndarray:
        """Images for validated int64 ``indices``."""


class ArrayGroundTruth(GroundTruth):
    """A ground truth backed by an in-memory uint8 array ``[len, H, W, C]`` in grid order.

    Used for official files loaded into memory and for small synthetic grids in tests.
    """

    def __init__(
        self,
        name: str,
        factor_specs: Sequence[Factor],
        images: np.ndarray,
        source: str = "array",
    ) -> None:
        self.name = name
        self.factor_specs = tuple(factor_specs)
        self.source = source
        n = int(np.prod([f.size for f in self.factor_specs]))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n:
            raise DataFormatError(
                f"{name}: images must be uint8 [{n}, H, W, C] (one per grid point), "
                f"got {images.dtype} {list(images.shape)}"
            )
        self.image_shape = tuple(images.shape[1:])
        self._array = images

    def _images(self, indices: np.ndarray) -> np.ndarray:
        return self._array[indices]

    def all_images(self) -> np.ndarray:
        return self._array
