"""What every perturbed-dataset builder shares: features, Parquet shards, the Hub layout, YAML.

A builder (one per dataset, :mod:`builders.perturbed_dsprites`, :mod:`builders.perturbed_shapes3d`)
declares its features once, in ``_info()``, like a TFDS or ``datasets`` builder; this module
turns rows into Arrow tables of exactly those features, writes them as Parquet shards laid out as
a Hugging Face dataset repository (``data/<config>/train-XXXXX-of-XXXXX.parquet``), and produces
the ``configs:`` and ``dataset_info`` YAML that ``load_dataset`` reads. There are no loading
scripts: ``datasets`` >= 4 loads the folder from Parquet and YAML alone.

Determinism: a shard's bytes depend only on its rows, the PNG encoder's settings and zlib, and
pyarrow's version (no timestamps or paths are written), so the same build gives the same bytes.
"""

from __future__ import annotations

import abc
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perturbed_disentanglement.errors import DataFormatError
from perturbed_disentanglement.ground_truth import Factor, GroundTruth
from perturbed_disentanglement.ground_truth.official_files import sha256_of
from perturbed_disentanglement.perturbation.configs import DEFAULT_CONFIG, KINDS, DatasetConfig
from perturbed_disentanglement.util.atomic import FILE_MODE, fsync_dir
from perturbed_disentanglement.util.png import PngEncoder

#: Rows per Parquet row group and per unit of work of the build (1–10 MB of PNGs).
ROW_GROUP_ROWS = 1024
#: What a shard aims at; each config's shard count is planned from a sample of its rows.
TARGET_SHARD_BYTES = 256 * 2**20
#: Parquet settings, as ``datasets``' own writer chooses them for image datasets: PNG bytes are
#: stored PLAIN and uncompressed (they are already deflated), the scalar columns compressed and
#: dictionary-encoded; content-defined chunking keeps re-uploads small on the Hub's storage.
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
PARQUET_SETTINGS = {
    "writer": "pyarrow",
    "row_group_rows": ROW_GROUP_ROWS,
    "compression": "snappy (image: none)",
    "image_encoding": "PLAIN",
    "content_defined_chunking": CDC_OPTIONS,
    "page_index": True,
}
DATA_DIR = "data"
SPLIT = "train"


def value_name(value: float) -> str:
    """A factor value as a class name: ``0.5`` -> ``"0.5"``, ``1.0`` -> ``"1"`` (6 digits)."""
    return f"{float(value):.6g}"


def class_labels(factors: Sequence[Factor]) -> dict[str, datasets.ClassLabel]:
    """One ClassLabel per factor, named after it: its category names, else its values' strings."""
    out = {}
    for f in factors:
        names = list(f.categories) if f.categories else [value_name(v) for v in f.values]
        if len(set(names)) != len(names):
            raise DataFormatError(f"factor {f.name!r}: class names {names} are not distinct")
        out[f.name] = datasets.ClassLabel(names=names)
    return out


def value_columns(factors: Sequence[Factor]) -> dict[str, datasets.Value]:
    """One float32 ``<factor>_value`` column per factor (the official files' latent values)."""
    return {f"{f.name}_value": datasets.Value("float32") for f in factors}


def shard_name(shard: int, num_shards: int) -> str:
    """``train-00000-of-00003.parquet``: the Hub's naming, which sorts in grid order."""
    return f"{SPLIT}-{shard:05d}-of-{num_shards:05d}.parquet"


def shard_path(config: str, shard: int, num_shards: int) -> str:
    """The shard's path inside the dataset folder (POSIX separators, as the YAML and Hub use)."""
    return f"{DATA_DIR}/{config}/{shard_name(shard, num_shards)}"


class PerturbedBuilder(abc.ABC):
    """One published dataset: its name, features, PNG settings and ground truth.

    Subclasses set the class attributes and implement :meth:`_info`, which declares the features
    (SPEC §4): ``image``, ``index``, a ClassLabel per factor, a float32 ``<factor>_value`` per
    factor, ``s`` and ``epsilon``.
    """

    #: the ground truth (``perturbed_disentanglement.ground_truth`` name)
    dataset: str
    #: the folder and Hub repository name, e.g. ``perturbed-dsprites``
    repo_name: str
    #: PIL mode of the images: ``L`` or ``RGB``
    image_mode: str
    #: the PNG encoder for each config kind (chosen in ``benchmarks/bench_build.py``)
    png: Mapping[str, PngEncoder]
    #: the ground truth's factors, in grid order
    factors: tuple[Factor, ...]
    pretty_name: str
    size_category: str

    @abc.abstractmethod
    def _info(self) -> datasets.DatasetInfo:
        """Description, citation, homepage, licence and the features: declared in one place."""

    @cached_property
    def info(self) -> datasets.DatasetInfo:
        info = self._info()
        expected = ["image", "index", *self.factor_names, *self.value_names, "s", "epsilon"]
        if list(info.features) != expected:
            raise DataFormatError(
                f"{type(self).__name__}._info() must declare the columns {expected} in this "
                f"order, got {list(info.features)}"
            )
        return info

    @property
    def features(self) -> datasets.Features:
        return self.info.features

    @property
    def factor_names(self) -> list[str]:
        return [f.name for f in self.factors]

    @property
    def value_names(self) -> list[str]:
        return [f"{f.name}_value" for f in self.factors]

    @cached_property
    def schema(self) -> pa.Schema:
        """The Arrow schema of every shard, with ``datasets``' features in its metadata."""
        return self.features.arrow_schema

    def encoder(self, config: DatasetConfig) -> PngEncoder:
        return self.png[config.kind]

    def check_ground_truth(self, gt: GroundTruth) -> None:
        """Raise unless ``gt`` has this builder's factors (names, sizes, values, categories).

        A sub-grid passes when its parent does: its rows keep the full grid's labels.
        """
        root = getattr(gt, "parent", gt)
        if root.name != self.dataset:
            raise DataFormatError(
                f"{self.repo_name} is built from the {self.dataset} ground truth, got {root.name}"
            )
        for mine, theirs in zip(self.factors, root.factor_specs, strict=True):
            same = (
                mine.name == theirs.name
                and mine.size == theirs.size
                and np.array_equal(mine.values, theirs.values)
                and mine.categories == theirs.categories
            )
            if not same:
                raise DataFormatError(
                    f"{self.repo_name}: factor {theirs.name!r} of {root!r} differs from the "
                    f"declared {mine.name!r} ({mine.size} values, categories {mine.categories})"
                )

    # --- rows -> Arrow ---------------------------------------------------------------------
    def table(
        self,
        png: Sequence[bytes],
        index: np.ndarray,
        factors: np.ndarray,
        values: np.ndarray,
        s: np.ndarray,
        epsilon: float,
    ) -> pa.Table:
        """An Arrow table of these rows in the builder's schema.

        ``index``: int64 ``[n]`` grid indices; ``factors``: int ``[n, k]`` class indices;
        ``values``: float ``[n, k]`` factor values; ``s``: float32 ``[n]``.
        """
        n = len(png)
        image = pa.StructArray.from_arrays(
            [pa.array(png, pa.binary()), pa.nulls(n, pa.string())], names=["bytes", "path"]
        )
        columns = [image, pa.array(np.asarray(index, np.int64))]
        columns += [pa.array(np.asarray(factors[:, k], np.int64)) for k in range(len(self.factors))]
        columns += [
            pa.array(np.asarray(values[:, k], np.float32)) for k in range(len(self.factors))
        ]
        columns += [
            pa.array(np.asarray(s, np.float32)),
            pa.array(np.full(n, epsilon, np.float32)),
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)

    # --- the Hub's YAML ----------------------------------------------------------------------
    def dataset_info(self, config: str, rows: int, num_bytes: int) -> datasets.DatasetInfo:
        """``dataset_info`` of one config: features, the ``train`` split's rows and bytes."""
        splits = datasets.SplitDict()
        splits.add(datasets.SplitInfo(name=SPLIT, num_bytes=num_bytes, num_examples=rows))
        return datasets.DatasetInfo(
            config_name=config,
            features=self.features.copy(),
            splits=splits,
            download_size=num_bytes,
            dataset_size=num_bytes,
        )

    def card_metadata(
        self, configs: Mapping[str, Mapping[str, Any]], default: str = DEFAULT_CONFIG
    ) -> dict[str, Any]:
        """The card's YAML entries for the configs of a manifest (``{name: {rows, bytes}}``).

        ``configs:`` points each config at ``data/<config>/train-*`` (``default`` is marked the
        default: the manifest's ``build.default_config``), ``dataset_info`` comes from
        ``datasets``' own serialiser.
        """
        from huggingface_hub import DatasetCardData

        card_data = DatasetCardData()
        datasets.utils.metadata.MetadataConfigs(
            {
                name: {
                    "data_files": [
                        {"split": SPLIT, "path": f"{DATA_DIR}/{name}/{SPLIT}-*.parquet"}
                    ],
                    **({"default": True} if name == default else {}),
                }
                for name in configs
            }
        ).to_dataset_card_data(card_data)
        datasets.info.DatasetInfosDict(
            {
                name: self.dataset_info(name, int(c["rows"]), int(c["bytes"]))
                for name, c in configs.items()
            }
        ).to_dataset_card_data(card_data)
        return {"configs": card_data["configs"], "dataset_info": card_data["dataset_info"]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --- shards ----------------------------------------------------------------------------------
class ShardWriter:
    """A Parquet shard written under a temporary name beside its target, renamed when complete.

    An interrupted shard never appears under its final name (the rerun writes it again);
    :meth:`commit` flushes it to disk, renames it and returns its sha256 and size.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self.tmp = Path(tmp)
        os.chmod(self.tmp, FILE_MODE)  # mkstemp's 0600 is wrong for a published file
        self.file = os.fdopen(fd, "wb")
        self.rows = 0
        image_leaves = ["image.bytes", "image.path"]
        others = [name for name in schema.names if name != "image"]
        self.writer = pq.ParquetWriter(
            self.file,
            schema,
            compression={**{c: "snappy" for c in others}, **{c: "none" for c in image_leaves}},
            use_dictionary=others,
            column_encoding={c: "PLAIN" for c in image_leaves},
            write_statistics=others,
            write_page_index=True,
            use_content_defined_chunking=CDC_OPTIONS,
        )

    def write(self, table: pa.Table) -> None:
        """Append ``table`` as one row group."""
        self.writer.write_table(table, row_group_size=max(1, len(table)))
        self.rows += len(table)

    def commit(self) -> tuple[str, int]:
        """Close, flush, rename to the final name; returns ``(sha256, bytes)``."""
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return sha256_of(self.path), self.path.stat().st_size

    def abort(self) -> None:
        """Drop the partial shard (the final name is never touched)."""
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - already failing; only clean up
            pass
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def plan_rows_per_shard(bytes_per_row: float, num_rows: int, block: int = ROW_GROUP_ROWS) -> int:
    """Rows per shard for about :data:`TARGET_SHARD_BYTES`, a multiple of ``block``."""
    shards = max(1, math.ceil(bytes_per_row * num_rows / TARGET_SHARD_BYTES))
    per = math.ceil(num_rows / shards)
    return max(block, math.ceil(per / block) * block)


__all__ = [
    "KINDS",
    "PerturbedBuilder",
    "ShardWriter",
    "class_labels",
    "value_columns",
    "shard_path",
    "plan_rows_per_shard",
]
