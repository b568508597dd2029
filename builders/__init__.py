"""Hugging Face builders of the published datasets: one per dataset, features declared in ``_info``.

``get_builder("dsprites")`` gives :class:`~builders.perturbed_dsprites.PerturbedDSprites`,
``get_builder("shapes3d")`` :class:`~builders.perturbed_shapes3d.PerturbedShapes3D`. The build
(``python -m generation.build``) writes their folders; :mod:`builders.verification` checks one
(``python -m generation.verify`` is its command line); ``python -m builders.publish`` uploads one.
"""

from __future__ import annotations

from perturbed_disentanglement.errors import InvalidArgumentError

from .base import PerturbedBuilder
from .perturbed_dsprites import PerturbedDSprites
from .perturbed_shapes3d import PerturbedShapes3D

BUILDERS: dict[str, type[PerturbedBuilder]] = {
    "dsprites": PerturbedDSprites,
    "shapes3d": PerturbedShapes3D,
}


def get_builder(dataset: str) -> PerturbedBuilder:
    """The builder of ``dataset`` (``dsprites`` or ``shapes3d``)."""
    if dataset not in BUILDERS:
        raise InvalidArgumentError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(BUILDERS)}"
        )
    return BUILDERS[dataset]()


__all__ = ["BUILDERS", "PerturbedBuilder", "PerturbedDSprites", "PerturbedShapes3D", "get_builder"]
