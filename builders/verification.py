"""Verification of a built dataset folder against its manifest and a regeneration of every row.

The library behind ``python -m generation.verify`` (the command line), the build's last stage
and :mod:`builders.publish`.

An unfinished build (its card is :func:`builders.manifest.unfinished_card`) is reported as such
and nothing else is checked. Files: every shard's size, sha256, row count and schema against the manifest; no stray Parquet
under ``data/`` (it would change what ``load_dataset`` reads); the card's ``configs:`` and
``dataset_info`` against the manifest, and the card rendered from this very manifest. Rows, all of
them: ``index`` in grid order, every factor and ``<factor>_value`` column against the ground
truth, ``s`` bit-exact against the reference's s, ``epsilon``, the ε-bound of every stored byte
against the regenerated original, and every image bit-exact against its regeneration
(original, perturbed or noise). The report names the config, shard, row, grid index and what
differs.

``s`` comes from the caller (the build), ``reference`` (an artifact folder), ``workdir`` (the
build's cache), or the reference shipped with the package when the manifest says the build used it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.errors import DataFormatError, PerturbedDisentanglementError
from perturbed_disentanglement.ground_truth.official_files import sha256_of
from perturbed_disentanglement.ground_truth.subgrid import SubGrid
from perturbed_disentanglement.perturbation.configs import DatasetConfig, config_images
from perturbed_disentanglement.perturbation.pattern import Pattern
from perturbed_disentanglement.reference.stage import grid_identity, load_reference, s_sha256
from perturbed_disentanglement.util.ordered_map import ordered_map
from perturbed_disentanglement.util.png import decode_png, decode_png_batch

from . import BUILDERS, get_builder
from .base import DATA_DIR, SPLIT
from .manifest import (
    CARD_FILE,
    MANIFEST_FILE,
    STAGING_DIR,
    STATE_FILE,
    listed_files,
    read_manifest,
    read_state,
    unfinished,
    write_state,
)

MAX_PER_CHECK = 10  # problems listed per (config, check); the rest are counted
_MANIFEST_SHA = re.compile(r"<!-- manifest-sha256: ([0-9a-f]{64}) -->")


@dataclass
class Problem:
    check: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.message}"


@dataclass
class VerifyReport:
    """What a verification found: ``ok`` only when every check ran and passed."""

    folder: Path
    problems: list[Problem] = field(default_factory=list)
    omitted: dict[tuple[str, str], int] = field(default_factory=dict)
    rows_checked: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    rows: bool = True
    unfinished: bool = False
    _listed: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, where: str, message: str, *, group: str = "") -> None:
        """Record a problem, keeping at most :data:`MAX_PER_CHECK` per (group, check)."""
        key = (group, check)
        if group and self._listed.get(key, 0) >= MAX_PER_CHECK:
            self.omitted[key] = self.omitted.get(key, 0) + 1
            return
        self._listed[key] = self._listed.get(key, 0) + 1
        self.problems.append(Problem(check, where, message))

    def summary(self) -> str:
        rows = sum(self.rows_checked.values())
        what = f"{rows:,} rows in {len(self.rows_checked)} config(s)" if self.rows else "files only"
        if self.unfinished:
            return f"{self.folder}: unfinished build, not a dataset yet"
        state = (
            "verified"
            if self.ok
            else f"{len(self.problems) + sum(self.omitted.values())} problem(s)"
        )
        return f"{self.folder}: {state} ({what})"

    def format(self) -> str:
        lines = [self.summary()]
        lines += [f"  {p}" for p in self.problems]
        for (group, check), n in sorted(self.omitted.items()):
            lines.append(f"  … and {n} more [{check}] problem(s) in {group}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# --- files -----------------------------------------------------------------------------------
def _all_files(folder: Path) -> list[str]:
    out = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            out.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(out)


def check_files(folder: Path, manifest: dict[str, Any], report: VerifyReport) -> set[str]:
    """Shards, figure, card and stray files against the manifest; returns the bad shards."""
    builder = get_builder(manifest["dataset"])
    bad: set[str] = set()
    if manifest["features"] != builder.features.to_dict():
        report.add("features", MANIFEST_FILE, "the manifest's features differ from the builder's")
    total = manifest["ground_truth"]["num_images"]
    for name, config in manifest["configs"].items():
        expected_first = 0
        for shard in config["shards"]:
            path = folder / shard["path"]
            where = f"{name} {shard['path']}"
            if shard["first_row"] != expected_first:
                report.add(
                    "layout",
                    where,
                    f"starts at row {shard['first_row']}, expected {expected_first}",
                )
            expected_first += shard["rows"]
            if not path.is_file():
                report.add("file", where, "missing")
                bad.add(shard["path"])
                continue
            size = path.stat().st_size
            if size != shard["bytes"]:
                report.add("size", where, f"{size:,} bytes, the manifest says {shard['bytes']:,}")
            digest = sha256_of(path)
            if digest != shard["sha256"]:
                report.add(
                    "sha256",
                    where,
                    f"sha256 {digest[:16]}…, the manifest says {shard['sha256'][:16]}…",
                )
                bad.add(shard["path"])
            try:
                meta = pq.ParquetFile(path)
                rows = meta.metadata.num_rows
                schema = meta.schema_arrow
            except (OSError, pa.ArrowException) as exc:
                report.add("parquet", where, f"not readable as Parquet: {exc}")
                bad.add(shard["path"])
                continue
            if rows != shard["rows"]:
                report.add("rows", where, f"{rows:,} rows, the manifest says {shard['rows']:,}")
                bad.add(shard["path"])
            if not schema.equals(builder.schema, check_metadata=True):
                report.add(
                    "schema", where, "the Arrow schema or its features differ from the builder's"
                )
        if expected_first != total:
            report.add(
                "layout", name, f"shards hold {expected_first:,} rows, the grid has {total:,}"
            )
    figure = folder / manifest["figure"]["path"]
    if not figure.is_file():
        report.add("file", manifest["figure"]["path"], "missing")
    elif sha256_of(figure) != manifest["figure"]["sha256"]:
        report.add("sha256", manifest["figure"]["path"], "differs from the manifest")
    listed = set(listed_files(manifest))
    for rel in _all_files(folder):
        if rel in listed or rel == STATE_FILE:
            continue
        if rel.startswith(f"{DATA_DIR}/") and not Path(rel).name.startswith("."):
            report.add("stray", rel, "not in the manifest; load_dataset would read it as data")
        else:
            report.notes.append(f"{rel} is not part of the dataset (not uploaded by publish)")
    check_card(folder, manifest, builder, report)
    return bad


def check_card(folder: Path, manifest: dict[str, Any], builder: Any, report: VerifyReport) -> None:
    """README.md: rendered from this manifest, with ``configs:``/``dataset_info`` matching it."""
    import datasets
    from huggingface_hub import DatasetCard

    path = folder / CARD_FILE
    if not path.is_file():
        report.add("card", CARD_FILE, "missing")
        return
    text = path.read_text()
    found = _MANIFEST_SHA.search(text)
    if not found or found.group(1) != report.manifest_sha256:
        report.add("card", CARD_FILE, "was not rendered from this manifest.json")
    try:
        data = DatasetCard(text).data
        configs = datasets.utils.metadata.MetadataConfigs.from_dataset_card_data(data)
        infos = datasets.info.DatasetInfosDict.from_dataset_card_data(data)
    except Exception as exc:  # noqa: BLE001 - any YAML or schema error is a broken card
        report.add("card", CARD_FILE, f"YAML not readable by datasets: {exc}")
        return
    if set(configs) != set(manifest["configs"]):
        report.add(
            "card", CARD_FILE, f"configs {list(configs)} differ from {list(manifest['configs'])}"
        )
        return
    default = configs.get_default_config_name()
    if default != manifest["build"]["default_config"]:
        report.add(
            "card",
            CARD_FILE,
            f"default config {default!r}, expected {manifest['build']['default_config']!r}",
        )
    for name, config in manifest["configs"].items():
        files = configs[name].get("data_files")
        wanted = [{"split": SPLIT, "path": f"{DATA_DIR}/{name}/{SPLIT}-*.parquet"}]
        if files != wanted:
            report.add("card", CARD_FILE, f"config {name}: data_files {files}, expected {wanted}")
        info = infos.get(name)
        if info is None or info.features != builder.features:
            report.add("card", CARD_FILE, f"config {name}: dataset_info features differ")
        elif info.splits[SPLIT].num_examples != config["rows"]:
            report.add(
                "card",
                CARD_FILE,
                f"config {name}: dataset_info says {info.splits[SPLIT].num_examples} rows",
            )


# --- rows ------------------------------------------------------------------------------------
def _resolve_s(
    manifest: dict[str, Any],
    s: np.ndarray | None,
    reference: str | None,
    workdir: str | None,
    default_workdir: Path | None = None,
) -> tuple[np.ndarray | None, str]:
    """The s the build used (its sha256 must be the manifest's), and where it came from."""
    want = manifest["s"]["sha256"]
    candidates: list[tuple[str, Any]] = []
    if manifest["reference"]["source"] == "shipped" and not manifest["reference"].get(
        "recomputed"
    ):  # the reference itself, before any copy of the build's own s
        candidates.append(
            ("the shipped reference", lambda: load_reference(manifest["dataset"], shipped=True).s)
        )
    if s is not None:
        candidates.append(("the build's s", lambda: s))
    if not workdir and default_workdir is not None and default_workdir.is_dir():
        workdir = str(default_workdir)  # the build's default: build/<folder name>
    if workdir:
        candidates.append(
            (
                f"{workdir}/s",
                lambda: np.load(Path(workdir) / "s" / f"{want}.npy", allow_pickle=False),
            )
        )
    if reference:
        candidates.append((reference, lambda: load_reference(reference, shipped=False).s))
    tried = []
    for label, get in candidates:
        try:
            value = np.asarray(get())
        except (OSError, ValueError, PerturbedDisentanglementError) as exc:
            tried.append(f"{label}: {exc}")
            continue
        if value.dtype == np.float32 and s_sha256(value) == want:
            return value, label
        if label == "the shipped reference":  # the reference itself disagrees: no fallback
            return None, (
                f"the build's s (sha256 {want[:12]}…) is not the shipped reference's s (sha256 "
                f"{s_sha256(value)[:12]}…): the build used another reference than the one "
                "installed"
            )
        tried.append(f"{label}: another s (sha256 {s_sha256(value)[:12]}…)")
    hint = "; ".join(tried) or "no source given"
    return None, (
        f"cannot find the s this build used (sha256 {want[:12]}…): {hint}. Pass --workdir (the "
        "build's work directory) or --reference (the reference artifact)"
    )


def _shard_batches(
    folder: Path, name: str, config: dict[str, Any], block: int, bad: set[str], report: VerifyReport
) -> Iterator[tuple[int, int, str, int, pa.RecordBatch | None]]:
    """``(start, stop, shard, first_row, batch)`` for every block of a config's rows, in order;
    ``batch`` is None where the shard cannot be read (reported once)."""
    for shard in config["shards"]:
        first, rows = shard["first_row"], shard["rows"]
        spans = [(a, min(a + block, first + rows)) for a in range(first, first + rows, block)]
        batches: Iterator[pa.RecordBatch] | None = None
        if shard["path"] not in bad or (folder / shard["path"]).is_file():
            try:
                batches = pq.ParquetFile(folder / shard["path"]).iter_batches(batch_size=block)
            except (OSError, pa.ArrowException) as exc:
                report.add("parquet", f"{name} {shard['path']}", f"not readable: {exc}", group=name)
        failed = batches is None
        for a, b in spans:
            batch = None
            if not failed:
                try:
                    batch = next(batches)
                except StopIteration:
                    report.add(
                        "rows",
                        f"{name} {shard['path']}",
                        f"ends before row {a - first}",
                        group=name,
                    )
                    failed = True
                except (OSError, pa.ArrowException) as exc:
                    report.add(
                        "parquet",
                        f"{name} {shard['path']}",
                        f"row group at row {a - first} unreadable: {exc}",
                        group=name,
                    )
                    failed = True
                if batch is not None and batch.num_rows != b - a:
                    report.add(
                        "rows",
                        f"{name} {shard['path']}",
                        f"batch at row {a - first} has {batch.num_rows} rows, expected {b - a}",
                        group=name,
                    )
                    failed, batch = True, None
            yield a, b, shard["path"], first, batch


class _Collector:
    """Problems found by a worker thread; the main thread adds them to the report."""

    def __init__(self) -> None:
        self.problems: list[tuple[tuple, dict]] = []

    def add(self, *args: str, **kwargs: str) -> None:
        self.problems.append((args, kwargs))


@dataclass
class _Rows:
    builder: Any
    root: Any
    grid: Any
    index: np.ndarray
    s: np.ndarray
    pattern: Pattern
    seed: int
    configs: dict[str, DatasetConfig]

    def check(self, start: int, stop: int, items: dict[str, tuple]) -> tuple[dict, list]:
        """Rows ``start:stop`` of every config: the rows checked and the problems found."""
        report = _Collector()
        original = self.grid.images(np.arange(start, stop))
        index = self.index[start:stop]
        factors = self.root.factors(index)
        values = self.root.factor_values_of(index).astype(np.float32)
        s = self.s[start:stop]
        checked = {}
        for name, (shard, first, batch) in items.items():
            if batch is None:
                continue
            config = self.configs[name]

            def where(k: int, shard: str = shard, first: int = first, name: str = name) -> str:
                return f"{name} {shard} row {start + k - first} (grid index {int(index[k])})"

            def first_bad(got: np.ndarray, want: np.ndarray) -> int | None:
                bad = np.flatnonzero(got != want)
                return int(bad[0]) if bad.size else None

            got_index = batch.column("index").to_numpy()
            k = first_bad(got_index, index)
            if k is not None:
                report.add(
                    "index",
                    where(k),
                    f"index {got_index[k]}, expected {index[k]} (grid order)",
                    group=name,
                )
            for j, factor in enumerate(self.builder.factor_names):
                got = batch.column(factor).to_numpy()
                k = first_bad(got, factors[:, j])
                if k is not None:
                    report.add(
                        "factors",
                        where(k),
                        f"{factor} = {got[k]}, expected {factors[k, j]}",
                        group=name,
                    )
                got = batch.column(f"{factor}_value").to_numpy()
                k = first_bad(got.view(np.uint32), values[:, j].view(np.uint32))
                if k is not None:
                    report.add(
                        "values",
                        where(k),
                        f"{factor}_value = {got[k]!r}, expected {values[k, j]!r}",
                        group=name,
                    )
            got = batch.column("s").to_numpy()
            k = first_bad(got.view(np.uint32), s.view(np.uint32))
            if k is not None:
                report.add(
                    "s", where(k), f"s = {got[k]!r}, the reference's s is {s[k]!r}", group=name
                )
            got = batch.column("epsilon").to_numpy()
            k = first_bad(got, np.full(len(got), config.epsilon, np.float32))
            if k is not None:
                report.add(
                    "epsilon",
                    where(k),
                    f"epsilon = {got[k]!r}, expected {np.float32(config.epsilon)!r}",
                    group=name,
                )
            blobs = batch.column("image").field("bytes").to_pylist()
            n = len(blobs)
            decoded = np.ones(n, bool)
            try:  # fast path: every row at once; Pillow cross-checks the first
                images = decode_png_batch(blobs, original.shape[1:])
                if not np.array_equal(decode_png(blobs[0]), images[0]):
                    raise DataFormatError("Pillow decodes the first PNG of the block differently")
                blobs = []
            except DataFormatError:  # some row is bad: find which, one by one, with Pillow
                images = np.empty_like(original)
            for k, blob in enumerate(blobs):
                try:
                    img = decode_png(blob)
                    if img.shape != original.shape[1:]:
                        raise ValueError(
                            f"shape {list(img.shape)}, expected {list(original.shape[1:])}"
                        )
                    images[k] = img
                except Exception as exc:  # noqa: BLE001 - any decoder error is a bad row
                    decoded[k] = False
                    report.add(
                        "image",
                        where(k),
                        f"not a decodable {self.builder.image_mode} PNG: {exc}",
                        group=name,
                    )
            diff = np.maximum(images, original)  # |stored - original| in uint8, no widening
            diff -= np.minimum(images, original)
            diff = diff.reshape(n, -1)
            over = (diff.max(axis=1) > config.max_step) & decoded
            if over.any():
                k = int(np.flatnonzero(over)[0])
                p = int(np.argmax(diff[k]))
                y, x, c = np.unravel_index(p, original.shape[1:])
                report.add(
                    "epsilon-bound",
                    where(k),
                    f"pixel (row {y}, col {x}, channel {c}) is {images[k, y, x, c]}, the original "
                    f"{original[k, y, x, c]}: a change of {diff[k, p]} > {config.max_step} = floor(255·ε)",
                    group=name,
                )
            expected = config_images(
                config, original, index, s, pattern=self.pattern, seed=self.seed
            )
            if np.array_equal(images, expected):
                wrong = np.zeros(n, bool)
            else:
                wrong = (images != expected).reshape(n, -1).any(axis=1) & decoded & ~over
            if wrong.any():
                k = int(np.flatnonzero(wrong)[0])
                p = int(np.flatnonzero((images[k] != expected[k]).reshape(-1))[0])
                y, x, c = np.unravel_index(p, original.shape[1:])
                report.add(
                    "image",
                    where(k),
                    f"differs from its regeneration ({int(wrong.sum())} image(s) in this block): "
                    f"pixel (row {y}, col {x}, channel {c}) is {images[k, y, x, c]}, expected "
                    f"{expected[k, y, x, c]}",
                    group=name,
                )
            checked[name] = stop - start
        return checked, report.problems


def verify_folder(
    folder: str | os.PathLike,
    *,
    s: np.ndarray | None = None,
    reference: str | None = None,
    workdir: str | None = None,
    source: str | None = None,
    verify_checksum: bool = True,
    rows: bool = True,
    jobs: int | None = None,
    progress: bool = True,
) -> VerifyReport:
    """Check ``folder`` (see the module docstring); never raises for a bad folder, reports it."""

    folder = Path(folder)
    report = VerifyReport(folder, rows=rows)
    why = unfinished(folder)
    if why is not None:
        report.unfinished = True
        report.add(
            "unfinished",
            CARD_FILE,
            f"{why} (until then its shards wait in {STAGING_DIR}/ and load_dataset refuses the "
            "folder; a build whose verification failed stays unfinished too)",
        )
        return report
    try:
        manifest = read_manifest(folder)
    except PerturbedDisentanglementError as exc:
        report.add("manifest", MANIFEST_FILE, str(exc))
        return report
    if manifest["dataset"] not in BUILDERS:
        report.add("manifest", MANIFEST_FILE, f"unknown dataset {manifest['dataset']!r}")
        return report
    report.manifest_sha256 = hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest()
    bad = check_files(folder, manifest, report)
    if not rows:
        return report
    if any(p.check in ("layout", "rows") for p in report.problems):
        report.add(
            "rows",
            "shards",
            "not checked row by row: the shards' layout or row counts disagree with the manifest",
        )
        return report
    builder = get_builder(manifest["dataset"])
    gt_info = manifest["ground_truth"]
    if gt_info["source"] != "procedural" and not source:
        report.add(
            "rows",
            "ground truth",
            f"the build read the official file {gt_info.get('source_file')}; pass --source to "
            "regenerate its rows",
        )
        return report
    try:
        gt = ground_truth(manifest["dataset"], source, verify_checksum=verify_checksum)
        grid = SubGrid(gt, gt_info["strides"]) if gt_info.get("strides") else gt
        fingerprint = grid_identity(grid)["fingerprint"]
    except (PerturbedDisentanglementError, FileNotFoundError) as exc:
        report.add("rows", "ground truth", f"cannot regenerate it: {exc}")
        return report
    if fingerprint != gt_info["fingerprint"] or len(grid) != gt_info["num_images"]:
        report.add(
            "rows",
            "ground truth",
            f"today's {grid!r} is not the grid the build used (fingerprint {fingerprint[:12]}… vs "
            f"{gt_info['fingerprint'][:12]}…): the renderer or the source changed",
        )
        return report
    s_values, origin = _resolve_s(
        manifest, s, reference, workdir, Path("build") / folder.resolve().name
    )
    if s_values is None:
        report.add("s", "reference", origin)
        return report
    ref_sha = manifest["reference"].get("s_sha256")
    if ref_sha != manifest["s"]["sha256"]:
        # the build's s must be the reference's s (for an official file: the recomputation's,
        # whose record the manifest keeps); a build checked only against itself proves nothing
        report.add(
            "s",
            "reference",
            f"the manifest's s (sha256 {manifest['s']['sha256'][:12]}…) is not the reference's "
            f"s (sha256 {str(ref_sha)[:12]}…)",
        )
        return report
    if s_values.shape != (len(grid),):
        report.add(
            "s", "reference", f"s has shape {list(s_values.shape)}, the grid {len(grid)} rows"
        )
        return report
    try:
        pattern = Pattern.from_dict(manifest["pattern"])
    except PerturbedDisentanglementError as exc:
        report.add("pattern", MANIFEST_FILE, str(exc))
        return report
    configs = {
        name: DatasetConfig(name, c["kind"], float(c["epsilon"]))
        for name, c in manifest["configs"].items()
    }
    index = (
        grid.parent_indices if isinstance(grid, SubGrid) else np.arange(len(grid), dtype=np.int64)
    )
    checker = _Rows(
        builder,
        getattr(grid, "parent", grid),
        grid,
        index,
        s_values,
        pattern,
        int(manifest["noise"]["seed"]),
        configs,
    )
    block = int(manifest["parquet"]["row_group_rows"])
    readers = {
        name: _shard_batches(folder, name, c, block, bad, report)
        for name, c in manifest["configs"].items()
    }

    def blocks() -> Iterator[tuple[int, int, dict]]:
        for start in range(0, len(grid), block):
            items = {}
            for name, reader in readers.items():
                a, b, shard, first, batch = next(reader)
                if a != start:  # cannot happen for a manifest that passed the layout check
                    raise AssertionError(f"{name}: block at {a}, expected {start}")
                items[name] = (shard, first, batch)
            yield start, min(start + block, len(grid)), items

    from tqdm.auto import tqdm

    total = len(grid) * len(configs)
    with tqdm(total=total, unit="img", desc="verify", disable=not progress) as bar:
        for checked, problems in ordered_map(
            lambda item: checker.check(*item), blocks(), jobs or os.cpu_count() or 1
        ):
            for args, kwargs in problems:
                report.add(*args, **kwargs)
            for name, n in checked.items():
                report.rows_checked[name] = report.rows_checked.get(name, 0) + n
            bar.update(sum(checked.values()) or block)
    report.notes.append(f"s from {origin}")
    for name, config in manifest["configs"].items():
        if report.rows_checked.get(name, 0) != config["rows"]:
            report.add(
                "rows",
                name,
                f"checked {report.rows_checked.get(name, 0):,} of {config['rows']:,} rows",
            )
    return report


def stamp(folder: str | os.PathLike, report: VerifyReport) -> None:
    """Record a full, passed verification in the folder's ownership record (publish reads it)."""
    state = read_state(folder)
    if state is not None and report.ok and report.rows and report.manifest_sha256:
        state["verified_manifest"] = report.manifest_sha256
        write_state(folder, state)
