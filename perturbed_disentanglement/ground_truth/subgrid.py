"""A strided sub-grid of a ground truth: every k-th value of each factor, still a full grid.

The ``smoke`` scale of the pipelines (tests, ``--smoke`` builds) needs a grid of a few thousand
images that is still a real ground truth (full factorial, row-major, same factor names and
categories), so that every stage — training, metrics, ``s``, the perturbation — runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InvalidArgumentError
from .grid import Factor, GroundTruth


class SubGrid(GroundTruth):
    """``parent`` restricted to every ``strides[name]``-th value of each factor (default 1: all).

    Sub-grid index ``i`` shows the parent's image ``parent_indices[i]``; factor values and
    category names are those of the kept parent values.
    """

    def __init__(self, parent: GroundTruth, strides: Mapping[str, int] | Sequence[int]) -> None:
        if isinstance(strides, Mapping):
            unknown = sorted(set(strides) - set(parent.factor_names))
            if unknown:
                raise InvalidArgumentError(
                    f"{parent.name} has no factor(s) {unknown}; its factors are "
                    f"{list(parent.factor_names)}"
                )
            steps = [strides.get(name, 1) for name in parent.factor_names]
        else:
            steps = list(strides)
            if len(steps) != parent.num_factors:
                raise InvalidArgumentError(
                    f"strides must give one step per factor of {parent.name} "
                    f"({parent.num_factors}: {', '.join(parent.factor_names)}), got {len(steps)}"
                )
        for name, step in zip(parent.factor_names, steps):
            if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
                raise InvalidArgumentError(
                    f"stride of factor {name!r} must be an integer >= 1, got {step!r}"
                )
        self.parent = parent
        self.strides = tuple(int(s) for s in steps)
        self.kept = tuple(np.arange(0, n, s) for n, s in zip(parent.factor_sizes, self.strides))
        specs = []
        for spec, kept in zip(parent.factor_specs, self.kept):
            cats = None if spec.categories is None else tuple(spec.categories[i] for i in kept)
            specs.append(Factor(spec.name, spec.values[kept], cats))
        self.name = parent.name
        self.factor_specs = tuple(specs)
        self.image_shape = parent.image_shape
        self.source = parent.source
        grids = np.meshgrid(*self.kept, indexing="ij")
        self.parent_indices = np.ravel_multi_index(
            tuple(g.reshape(-1) for g in grids), parent.factor_sizes
        ).astype(np.int64)

    def __repr__(self) -> str:
        return f"SubGrid({self.parent!r}, strides={self.strides})"

    def _images(self, indices: np.ndarray) -> np.ndarray:
        return self.parent.images(self.parent_indices[indices])
