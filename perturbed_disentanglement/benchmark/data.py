"""A published config, read through ``datasets.load_dataset``, as a ground truth in memory.

The benchmark evaluates the real artifact, not a regeneration: a config of perturbed-dsprites or
perturbed-shapes3d (a Hub repository id or a local dataset folder) is loaded with
``load_dataset``, its PNGs decoded once on every core into one uint8 array in grid order, and
wrapped as an :class:`~perturbed_disentanglement.ground_truth.grid.ArrayGroundTruth` whose factors come from
the dataset's own columns (class labels and ``<factor>_value``). The metrics sample any grid point,
so a config must hold the whole grid (of the classes that occur: a smoke build's sub-grid is
one); the factor columns put the rows in grid order.

With ``decoded_dir`` a config is decoded once into a ``.npy`` file there and memory-mapped
read-only: processes that train on the same config (two one-thread runs on a 2-core machine)
share one copy in the page cache instead of holding one each (a Shapes3D config is 5.9 GB).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataFormatError, InvalidArgumentError
from ..ground_truth.dsprites import dsprites_factors
from ..ground_truth.grid import ArrayGroundTruth, Factor
from ..ground_truth.shapes3d import FACTORS as SHAPES3D_FACTORS
from ..util.png import decode_png_batch
from ..util.shared_array import shared_array

#: The datasets the benchmark knows, by their factor names (the columns that identify them).
DATASETS = {
    "dsprites": tuple(f.name for f in dsprites_factors()),
    "shapes3d": tuple(f.name for f in SHAPES3D_FACTORS),
}
#: Rows decoded per batch (a few MB of PNG bytes).
DECODE_BATCH = 8192


@dataclass
class ConfigData:
    """One config of a published dataset, decoded: the ground truth and its ``s`` and ε."""

    data: str  # what was loaded: a Hub repository id or a local folder
    config: str
    dataset: str  # "dsprites" or "shapes3d"
    ground_truth: ArrayGroundTruth
    s: np.ndarray  # float32 [N] in grid order
    epsilon: float
    fingerprint: str  # sha256 of the images and s in grid order

    @property
    def num_images(self) -> int:
        return len(self.s)

    def describe(self) -> dict[str, Any]:
        """The ``data`` part of a benchmark record."""
        return {
            "name": self.data,
            "dataset": self.dataset,
            "config": self.config,
            "kind": self.config.split("-eps")[0],
            "epsilon": self.epsilon,
            "num_images": self.num_images,
            "fingerprint": self.fingerprint,
        }


def identify_dataset(columns: list[str]) -> str:
    """``"dsprites"`` or ``"shapes3d"`` from a dataset's columns; a clear error otherwise."""
    for name, factors in DATASETS.items():
        if all(f in columns and f"{f}_value" in columns for f in factors):
            return name
    raise DataFormatError(
        f"the columns {columns} are not those of a perturbed dataset; expected the factor "
        + " or ".join(f"{', '.join(f)} (with <factor>_value)" for f in DATASETS.values())
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def factors_from_columns(
    names: dict[str, list[str]], class_index: dict[str, np.ndarray], values: dict[str, np.ndarray]
) -> tuple[tuple[Factor, ...], np.ndarray]:
    """The grid's factors and each row's factor indices, from the class-label columns.

    ``names[f]`` are factor f's class names, ``class_index[f]`` the rows' class indices and
    ``values[f]`` the rows' ``<f>_value``. The grid is made of the classes that occur (a smoke
    build holds a strided sub-grid), in class order; each class must carry one value.
    """
    factors, columns = [], []
    for f, labels in names.items():
        idx = np.asarray(class_index[f], dtype=np.int64)
        vals = np.asarray(values[f], dtype=np.float64)
        occurring, position = np.unique(idx, return_inverse=True)
        per_class = np.full(len(occurring), np.nan)
        per_class[position] = vals
        if not np.array_equal(per_class[position], vals):
            raise DataFormatError(f"factor {f!r}: one class carries different {f}_value values")
        kept = [labels[c] for c in occurring]
        categorical = not all(_is_number(label) for label in labels)
        factors.append(Factor(f, per_class, tuple(kept) if categorical else None))
        columns.append(position)
    return tuple(factors), np.stack(columns, axis=1)


def grid_order(factor_indices: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Each row's grid position; an error unless the rows are the whole grid, once each."""
    n = int(np.prod(sizes))
    if len(factor_indices) != n:
        raise DataFormatError(
            f"the config holds {len(factor_indices):,} rows but its factors make a grid of "
            f"{n:,}; the benchmark needs the whole grid (the metrics sample any point)"
        )
    position = np.ravel_multi_index(tuple(factor_indices.T), tuple(sizes))
    if len(np.unique(position)) != n:
        raise DataFormatError("some grid points occur twice (and others not at all) in the rows")
    return position


def decode_pngs(pngs: list[bytes], out: np.ndarray, *, threads: int | None = None) -> None:
    """Decode ``pngs`` into ``out`` (uint8 ``[n, H, W, C]``), in slices on ``threads`` threads.

    :func:`~perturbed_disentanglement.util.png.decode_png_batch` spends its time in zlib, which
    releases the GIL, so threads scale with the cores.
    """
    threads = max(1, min(threads or os.cpu_count() or 1, len(pngs)))
    bounds = np.linspace(0, len(pngs), threads + 1).astype(int)

    def one(k: int) -> None:
        lo, hi = bounds[k], bounds[k + 1]
        if hi > lo:
            out[lo:hi] = decode_png_batch(pngs[lo:hi], out.shape[1:])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(threads)))


def fingerprint(images: np.ndarray, s: np.ndarray) -> str:
    """sha256 of the images and s in grid order: what a record's numbers were computed on."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(s, dtype="<f4").data)
    return h.hexdigest()


def _load(
    data: str, config: str, cache_dir: Any, revision: str | None, progress: bool = True
) -> Any:
    """``load_dataset``'s train split, its errors (no such dataset or config) made ours;
    ``progress=False`` silences its bars too."""
    import datasets

    if not isinstance(config, str) or not config:
        raise InvalidArgumentError(f"config must be a config name, got {config!r}")
    silenced = not progress and not datasets.are_progress_bars_disabled()
    if silenced:
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(
            data,
            config,
            split="train",
            cache_dir=str(cache_dir) if cache_dir else None,
            revision=revision,
        )
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise InvalidArgumentError(
            f"cannot load config {config!r} of {data!r} with load_dataset: {exc}"
        ) from exc
    finally:
        if silenced:
            datasets.enable_progress_bars()


def dataset_of(
    data: str,
    config: str = "perturbed",
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> str:
    """Which dataset ``config`` of ``data`` holds, from its columns alone: what a sweep needs to
    plan its runs, without decoding a config (3 GB for dSprites) whose runs may all be finished."""
    return identify_dataset(_load(data, config, cache_dir, revision, progress).column_names)


def numpy_columns(ds: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Whole columns as arrays, read in one batch: in datasets >= 4 ``ds.with_format("numpy")[c]``
    is a lazy Column that ``np.asarray`` formats row by row (~0.3 ms a row: an hour per dSprites
    config)."""
    return ds.select_columns(list(names)).with_format("numpy")[:]


def grid_of(ds: Any) -> tuple[str, tuple[Factor, ...], np.ndarray]:
    """A loaded config's dataset name, factors, and each row's grid position."""
    dataset = identify_dataset(ds.column_names)
    names = DATASETS[dataset]
    columns = numpy_columns(ds, [*names, *(f"{f}_value" for f in names)])
    factors, factor_indices = factors_from_columns(
        {f: list(ds.features[f].names) for f in names},
        {f: np.asarray(columns[f], dtype=np.int64) for f in names},
        {f: np.asarray(columns[f"{f}_value"]) for f in names},
    )
    return dataset, factors, grid_order(factor_indices, [f.size for f in factors])


def _decode_images(
    ds: Any, position: np.ndarray, out: np.ndarray, config: str, threads: int | None, progress: bool
) -> None:
    """Every row's PNG decoded into ``out`` (uint8 ``[n, 64, 64, C]``) at its grid position."""
    import datasets

    n, channels = len(position), out.shape[-1]
    raw = ds.cast_column("image", datasets.Image(decode=False)).with_format("arrow")
    with tqdm(total=n, desc=f"decoding {config}", unit="img", disable=not progress) as bar:
        for start in range(0, n, DECODE_BATCH):
            table = raw[start : start + DECODE_BATCH]
            pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
            block = np.empty((len(pngs), 64, 64, channels), dtype=np.uint8)
            decode_pngs(pngs, block, threads=threads)
            out[position[start : start + len(pngs)]] = block
            bar.update(len(pngs))


def load_config(
    data: str,
    config: str = "perturbed",
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    decoded_dir: str | os.PathLike | None = None,
) -> ConfigData:
    """Load ``config`` of ``data`` (a Hub id or a local folder) with ``load_dataset``, decoded.

    ``decoded_dir``: decode into a file there once and memory-map it (see the module docstring);
    the file is named by the dataset's Arrow fingerprint, so a rebuilt dataset is decoded anew.
    A dataset or config ``load_dataset`` cannot find is an :class:`InvalidArgumentError` with its
    message; a config that is not a perturbed dataset's whole grid a :class:`DataFormatError`.
    """
    ds = _load(data, config, cache_dir, revision, progress)
    dataset, factors, position = grid_of(ds)
    columns = numpy_columns(ds, ["s", "epsilon"])
    n = len(position)
    s = np.empty(n, dtype=np.float32)
    s[position] = np.asarray(columns["s"], dtype=np.float32)
    eps = np.unique(np.asarray(columns["epsilon"], dtype=np.float64))
    if len(eps) != 1:
        raise DataFormatError(f"config {config!r} mixes ε values {eps.tolist()}; expected one")

    mode = ds.features["image"].mode or "L"
    channels = 1 if mode == "L" else 3
    shape = (n, 64, 64, channels)
    if decoded_dir is None:
        images = np.empty(shape, dtype=np.uint8)
        _decode_images(ds, position, images, config, threads, progress)
    else:
        key = hashlib.sha256(
            repr((str(data), config, revision, n, ds._fingerprint)).encode()
        ).hexdigest()[:32]
        images = shared_array(
            Path(decoded_dir) / f"{dataset}-{config}-{key}.npy",
            shape,
            lambda out: _decode_images(ds, position, out, config, threads, progress),
            what=f"the decoded config {config!r}",
        )
    gt = ArrayGroundTruth(dataset, factors, images, source=f"{data}:{config}")
    return ConfigData(
        data=str(data),
        config=config,
        dataset=dataset,
        ground_truth=gt,
        s=s,
        epsilon=float(eps[0]),
        fingerprint=fingerprint(images, s),
    )


def sample_images(
    data: str,
    configs: Sequence[str],
    indices: Sequence[int],
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> dict[str, np.ndarray]:
    """The images of grid points ``indices`` in each config (uint8 ``[n, 64, 64, C]``), decoding
    only those rows: what Fig. 3 shows, without decoding whole configs."""

    wanted = np.asarray(indices, dtype=np.int64)
    out = {}
    for config in configs:
        ds = _load(data, config, cache_dir, revision)
        _, _, position = grid_of(ds)
        row_of = dict(zip(position.tolist(), range(len(position))))
        missing = [int(g) for g in wanted if int(g) not in row_of]
        if missing:
            raise DataFormatError(f"config {config!r} has no grid points {missing[:5]}")
        rows = ds.select([row_of[int(g)] for g in wanted])
        images = [np.asarray(im) for im in rows["image"]]
        out[config] = np.stack([im[..., None] if im.ndim == 2 else im for im in images])
    return out
