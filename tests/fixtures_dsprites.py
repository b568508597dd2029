"""Small files in the official dSprites formats, for testing the readers.

The real file holds 737,280 images; a test file holds a *sub-grid*: for each factor some of the
official value indices, in the official row-major order, with the official class indices and
values, exactly as ``official[mask]`` would give. Images come from the procedural renderer as
0/1 bytes (the official encoding). ``mutate`` edits the arrays before writing to make bad files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from perturbed_disentanglement.ground_truth import dsprites as ds

SUBSET = {"scale": [0, 5], "orientation": [0, 13], "posX": [0, 31], "posY": [3, 17]}


def subset_indices(subset=SUBSET) -> np.ndarray:
    """Full-grid indices of the sub-grid's images, in file order."""
    axes = [
        subset.get(name, range(size)) for name, size in zip(ds.FACTOR_NAMES, (3, 6, 40, 32, 32))
    ]
    mesh = np.meshgrid(*axes, indexing="ij")
    factors = np.stack([m.ravel() for m in mesh], axis=1)
    return ds.ProceduralDSprites().index(factors)


def official_arrays(subset=SUBSET) -> dict[str, np.ndarray]:
    """The arrays an official file restricted to ``subset`` holds (imgs 0/1, six latent columns)."""
    gt = ds.ProceduralDSprites()
    idx = subset_indices(subset)
    f = gt.factors(idx)
    classes = np.concatenate([np.zeros((len(idx), 1), np.int64), f], axis=1)
    values = np.concatenate([np.ones((len(idx), 1)), gt.factor_values_of(idx)], axis=1)
    imgs = (gt.images(idx)[..., 0] // 255).astype(np.uint8)
    metadata = {
        "latents_sizes": np.array([1, 3, 6, 40, 32, 32]),
        "latents_names": ("color", "shape", "scale", "orientation", "posX", "posY"),
        "description": "test sub-grid of dSprites",
    }
    return {
        "imgs": imgs,
        "latents_classes": classes,
        "latents_values": values,
        "metadata": metadata,
    }


Mutate = Callable[[dict], None] | None


def write_npz(path: Path, subset=SUBSET, mutate: Mutate = None) -> Path:
    arrays = official_arrays(subset)
    if mutate is not None:
        mutate(arrays)
    if "metadata" in arrays:
        arrays["metadata"] = np.array(arrays["metadata"], dtype=object)
    np.savez_compressed(path, **arrays)
    return Path(path)


def write_hdf5(path: Path, subset=SUBSET, mutate: Mutate = None) -> Path:
    arrays = official_arrays(subset)
    if mutate is not None:
        mutate(arrays)
    with h5py.File(path, "w") as f:
        if "imgs" in arrays:
            f.create_dataset("imgs", data=arrays["imgs"], chunks=True, compression="gzip")
        if "latents_classes" in arrays:
            f.create_dataset("latents/classes", data=arrays["latents_classes"])
        if "latents_values" in arrays:
            f.create_dataset("latents/values", data=arrays["latents_values"])
    return Path(path)


def truncate(path: Path, keep: float = 0.6) -> Path:
    """Cut a file to ``keep`` of its bytes, as an interrupted download would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)
