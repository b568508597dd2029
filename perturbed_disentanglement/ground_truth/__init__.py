"""The ground truths of the package: :func:`ground_truth` builds dSprites or Shapes3D, procedural or
from the official files. The API they share lives in :mod:`.grid` (re-exported here with the file
checks of :mod:`.official_files`, so ``from perturbed_disentanglement.ground_truth import GroundTruth`` keeps
working); the renderers and readers in :mod:`.dsprites` and :mod:`.shapes3d`, which are imported
when first asked for (Shapes3D's reader needs h5py).
"""

from __future__ import annotations

import os

from ..errors import InvalidArgumentError
from .grid import ArrayGroundTruth, Factor, GroundTruth
from .official_files import existing_file, sha256_of, verify_sha256

DATASETS = ("dsprites", "shapes3d")


def ground_truth(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    verify_checksum: bool = True,
) -> GroundTruth:
    """The ground-truth grid ``name`` ("dsprites" or "shapes3d").

    Without ``path`` the images are rendered procedurally (offline); with ``path`` they are read
    from the official file (dSprites ``.npz`` or ``.hdf5``, Shapes3D ``.h5``), whose structure is
    checked and, where the published sha256 is known, its checksum (``verify_checksum=False``
    accepts a deliberately modified copy).
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key == "dsprites":
        from . import dsprites

        if path is None:
            return dsprites.ProceduralDSprites()
        return dsprites.load_official(path, verify_checksum=verify_checksum)
    if key in ("shapes3d", "3dshapes"):
        from . import shapes3d

        if path is None:
            return shapes3d.ProceduralShapes3D()
        return shapes3d.load_official(path, verify_checksum=verify_checksum)
    raise InvalidArgumentError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "ArrayGroundTruth",
    "Factor",
    "GroundTruth",
    "existing_file",
    "ground_truth",
    "sha256_of",
    "verify_sha256",
]
