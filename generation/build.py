"""Build perturbed-dsprites or perturbed-shapes3d as a Hugging Face dataset folder: the main job.

    python -m generation.build                         # dSprites: ./perturbed-dsprites
    python -m generation.build --dataset shapes3d      # Shapes3D: ./perturbed-shapes3d
    python -m generation.build --smoke                 # seconds: a strided sub-grid, smoke reference

Stages: ground truth -> s (the reference's leading latent) -> pattern -> each config's Parquet
shards -> manifest, figure and card -> verification of every row. Shards are generated in blocks
of 1,024 rows on ``--jobs`` threads (render once, then every config that needs the block:
perturb, PNG-encode, Arrow), written atomically, and recorded in ``--workdir`` with a key of
everything they depend on: a rerun after a kill resumes, an unchanged shard is reused after its
sha256 is re-checked, and a changed parameter rebuilds exactly the shards that depend on it
(ε: perturbed and noise; κ: perturbed; the seed: perturbed and noise; s: everything). Memory
stays at a few blocks whatever the grid.

The output folder is refused if it holds files this package did not write (``--overwrite``
builds into it anyway; files at the build's own paths are moved to WORKDIR/displaced, the rest is
left alone); nothing the package did not write is ever deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from filelock import FileLock, Timeout

import cards  # the card stage runs last: an import problem must show at once
from builders import BUILDERS, get_builder
from builders.base import (
    PARQUET_SETTINGS,
    ROW_GROUP_ROWS,
    PerturbedBuilder,
    ShardWriter,
    plan_rows_per_shard,
    shard_path,
)
from builders.manifest import (
    CARD_FILE,
    FIGURE_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    STATE_FILE,
    new_state,
    read_state,
    write_manifest,
    write_state,
)
from perturbed_disentanglement import __version__, ground_truth
from perturbed_disentanglement.errors import ArtifactError, PerturbedDisentanglementError
from perturbed_disentanglement.ground_truth import GroundTruth, sha256_of
from perturbed_disentanglement.ground_truth.subgrid import SubGrid
from perturbed_disentanglement.perturbation.configs import (
    DEFAULT_CONFIG,
    KINDS,
    DatasetConfig,
    config_images,
    plan_configs,
)
from perturbed_disentanglement.perturbation.pattern import (
    MAX_SEED,
    Pattern,
    check_epsilon,
    check_kappa,
    default_strength,
    max_step,
)
from perturbed_disentanglement.reference.stage import (
    PRESETS,
    RECORD_FILE,
    SHIPPED_DIR,
    Reference,
    grid_identity,
    load_reference,
    preset_ground_truth,
    run_reference,
    s_sha256,
)
from perturbed_disentanglement.util.atomic import (
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
)
from perturbed_disentanglement.util.ordered_map import ordered_map

BUILD_FORMAT = 1  # bump when the bytes a shard holds change for the same inputs
SAMPLE_ROWS = 256  # rows encoded to plan each config's shard size
FIGURE_ROWS = 4
WORKDIR_MARKER = ".perturbed-disentanglement-workdir.json"
#: temporary files of the package's atomic writes at the build's own paths: ``.<target>.XXXX.tmp``
#: (perturbed_disentanglement.util.atomic, builders.base.ShardWriter; XXXX is mkstemp's random part)
#: for the targets a build writes (card, manifest, figure, shards); nothing else is a temp file
_TEMP = re.compile(
    r"^(?P<dir>(?:[^/]+/)*)\.(?P<name>README\.md|manifest\.json|samples\.png"
    r"|train-\d{5}-of-\d{5}\.parquet)\.[a-z0-9_]+\.tmp$"
)


class BuildError(PerturbedDisentanglementError):
    """The build cannot go on; the message says why and what to do."""


class VerificationFailed(PerturbedDisentanglementError):
    """The finished folder does not verify; the message is the verifier's report."""


@dataclass
class BuildOptions:
    """Everything a build depends on (the command line's options)."""

    dataset: str = "dsprites"
    source: str | None = None
    verify_checksum: bool = True
    epsilons: list[float] | None = None  # default: the dataset's measured ε
    kappa: float | None = None  # default: the dataset's measured κ
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    reference: str | None = None
    retrain: bool = False
    preset: str | None = None
    seed: int = 0
    out: str | None = None
    workdir: str | None = None
    overwrite: bool = False
    jobs: int | None = None
    smoke: bool = False
    rows_per_shard: int | None = None
    device: str = "cpu"
    progress: bool = True
    verify: bool = True


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    timings: dict[str, float]
    built: dict[str, int]  # shards written per config
    reused: dict[str, int]  # shards reused per config
    verified: str  # "yes", "cached" or "skipped"


# --- options ---------------------------------------------------------------------------------
def resolve_options(opts: BuildOptions) -> BuildOptions:
    """Fill the defaults and refuse contradictions, before anything is read or written."""
    if opts.dataset not in BUILDERS:
        raise BuildError(f"unknown dataset {opts.dataset!r}; expected one of {', '.join(BUILDERS)}")
    kappa, epsilon = default_strength(opts.dataset)
    opts.kappa = check_kappa(kappa if opts.kappa is None else opts.kappa)
    opts.epsilons = [check_epsilon(e) for e in (opts.epsilons or [epsilon])]
    for e in opts.epsilons:
        if max_step(e) == 0:
            raise BuildError(
                f"--eps {e:g} is below 1/255: floor(255·ε) = 0, so no stored byte may change and "
                "perturbed/noise would be identical to original; use ε >= 1/255 (≈ 0.00392)"
            )
    plan_configs(opts.kinds, opts.epsilons)  # unknown configs, duplicate ε
    if (
        isinstance(opts.seed, bool)
        or not isinstance(opts.seed, int)
        or not 0 <= opts.seed <= MAX_SEED
    ):
        raise BuildError(f"--seed must be an integer in [0, 2**63 - 1], got {opts.seed!r}")
    if opts.preset is not None and opts.preset not in PRESETS:
        raise BuildError(
            f"unknown reference preset {opts.preset!r}; expected one of {', '.join(PRESETS)}"
        )
    if opts.reference and (opts.retrain or opts.preset):
        raise BuildError("--reference and --retrain/--preset exclude each other: choose one")
    if opts.preset and not (opts.retrain or opts.smoke):
        raise BuildError("--preset needs --retrain (or --smoke, which implies --preset smoke)")
    if opts.smoke and opts.preset not in (None, "smoke"):
        raise BuildError(
            f"--smoke builds the smoke sub-grid, whose reference is the smoke preset; "
            f"--preset {opts.preset} trains on the full grid: drop --smoke or the preset"
        )
    if opts.preset == "smoke" and not opts.smoke:
        raise BuildError("the smoke preset trains on the smoke sub-grid: use --smoke")
    if opts.retrain and opts.preset is None:
        opts.preset = "smoke" if opts.smoke else "cpu"
    if opts.smoke and not opts.reference:
        opts.retrain, opts.preset = True, "smoke"
    if opts.rows_per_shard is not None and (
        isinstance(opts.rows_per_shard, bool)
        or opts.rows_per_shard < 64
        or opts.rows_per_shard % 64
    ):
        raise BuildError(
            f"--rows-per-shard must be a positive multiple of 64, got {opts.rows_per_shard}"
        )
    if opts.jobs is None:
        opts.jobs = os.cpu_count() or 1
    if opts.jobs < 1:
        raise BuildError(f"--jobs must be >= 1, got {opts.jobs}")
    name = get_builder(opts.dataset).repo_name + ("-smoke" if opts.smoke else "")
    opts.out = opts.out or name
    # build/<out folder name>: what --help says and where verify looks for the build's s
    opts.workdir = opts.workdir or os.path.join("build", Path(opts.out).name)
    return opts


# --- folders ---------------------------------------------------------------------------------
def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative POSIX paths), the ownership record excepted."""
    out = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel != STATE_FILE:
                out.append(rel)
    return sorted(out)


def _is_build_path(rel: str) -> bool:
    """Paths a build writes: the card, the manifest, images/ and data/."""
    return rel in (CARD_FILE, MANIFEST_FILE) or rel.startswith(("data/", "images/"))


def _check_workdir(workdir: Path, out: Path) -> None:
    w, o = workdir.resolve(), out.resolve()
    if w == o or o in w.parents or w in o.parents:
        raise BuildError(
            f"--workdir {workdir} and --out {out} must not contain each other: the work "
            "directory holds caches that must not be published"
        )
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / WORKDIR_MARKER).exists():
        raise BuildError(
            f"--workdir {workdir} already holds files but is not a build work directory "
            f"(no {WORKDIR_MARKER}); choose an empty or new folder"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / WORKDIR_MARKER).exists():
        write_json_atomic(
            workdir / WORKDIR_MARKER,
            {"format": "perturbed-disentanglement/build-workdir", "version": 1},
        )


def check_out(out: Path, workdir: Path, overwrite: bool) -> list[str]:
    """Refuse ``out`` if it holds files the package did not write (unless ``overwrite``);
    returns those files. Reads only: nothing is created or changed."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a folder")
    if not out.exists():
        return []
    state = read_state(out)
    owned = set(state["written"]) if state else set()
    accepted = set(state["accepted"]) if state else set()
    foreign = [
        f
        for f in _files(out)
        if f not in owned and f not in accepted and not (state and _is_temp(f))
    ]
    if foreign and not overwrite:
        shown = ", ".join(foreign[:8]) + (
            f", … ({len(foreign)} in all)" if len(foreign) > 8 else ""
        )
        raise BuildError(
            f"--out {out} already holds files this package did not write ({shown}). Choose "
            "an empty or new folder, or pass --overwrite to build into it: files at the "
            "build's paths (README.md, manifest.json, data/, images/) are then moved to "
            f"{workdir / 'displaced'}, every other file is left untouched; nothing is deleted"
        )
    return foreign


def _is_temp(rel: str) -> bool:
    """A temporary file of an interrupted atomic write at one of the build's paths."""
    found = _TEMP.match(rel)
    if not found:
        return False
    target = found["dir"] + found["name"]
    return target in (CARD_FILE, MANIFEST_FILE, FIGURE_FILE) or bool(
        re.fullmatch(r"data/[^/]+/train-\d{5}-of-\d{5}\.parquet", target)
    )


def prepare_out(
    out: Path, workdir: Path, overwrite: bool, log: Callable[[str], None]
) -> tuple[dict, str | None]:
    """Claim ``out`` for this build and return its ownership record (see the module docstring).

    Refuses a folder with files the package did not write unless ``overwrite``; then the foreign
    files at the build's paths are moved to ``workdir/displaced/<n>/`` and the others accepted
    (left alone). Our own README and manifest are removed, so an unfinished folder never looks
    finished; temporary files of an interrupted run are removed. Also returns the sha256 of the
    manifest the folder last verified with (None if never).
    """
    foreign = check_out(out, workdir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    owned = set(state["written"]) if state else set()
    accepted = set(state["accepted"]) if state else set()
    displaced = [f for f in foreign if _is_build_path(f)]
    if displaced:
        n = 1
        while (workdir / "displaced" / str(n)).exists():
            n += 1
        target = workdir / "displaced" / str(n)
        for rel in displaced:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(out / rel), str(target / rel))
        log(f"moved {len(displaced)} file(s) that were in the way to {target}")
    accepted |= {f for f in foreign if not _is_build_path(f)}
    if state:
        for rel in _files(out):
            if _is_temp(rel):
                (out / rel).unlink(missing_ok=True)
    state = state or new_state()
    state["accepted"] = sorted(accepted)
    previous = state.get("verified_manifest")
    for rel in (CARD_FILE, MANIFEST_FILE):
        if rel in owned:
            (out / rel).unlink(missing_ok=True)
    state.update(complete=False, verified_manifest=None)
    write_state(out, state)
    return state, previous


# --- the stages ------------------------------------------------------------------------------
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _key(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _ground_truth(
    opts: BuildOptions, builder: PerturbedBuilder
) -> tuple[GroundTruth, GroundTruth, dict]:
    """The full ground truth, the grid to build (smoke: its sub-grid) and their description."""
    try:
        gt = ground_truth(opts.dataset, opts.source, verify_checksum=opts.verify_checksum)
    except FileNotFoundError as exc:
        raise BuildError(f"--source: {exc}") from exc
    builder.check_ground_truth(gt)
    grid = preset_ground_truth(gt, "smoke") if opts.smoke else gt
    info = grid_identity(grid)
    info["full_num_images"] = len(gt)
    info["strides"] = (
        dict(zip(gt.factor_names, grid.strides)) if isinstance(grid, SubGrid) else None
    )
    if opts.source:
        info["source_file"] = Path(opts.source).name
        info["source_sha256"] = sha256_of(opts.source)
    return gt, grid, info


def _no_shipped_reference(dataset: str, why: str) -> BuildError:
    return BuildError(
        f"the default build uses the reference shipped with the package, and none is installed "
        f"for {dataset} ({why}). Either train one in this build with `--retrain --preset cpu` "
        f"(hours on a CPU; `--preset paper` on a GPU), or pass `--reference PATH` (a folder "
        f"written by `python -m generation.reference`), or try the pipeline in seconds with "
        f"`--smoke`"
    )


def _check_shipped(dataset: str) -> None:
    """Fail fast, before anything is written, when the default build has no reference."""
    folder = SHIPPED_DIR / dataset
    if not (folder / RECORD_FILE).is_file():
        raise _no_shipped_reference(dataset, f"{folder / RECORD_FILE} is missing")


def _reference_record(ref: Reference, source: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a reference: restarts' metrics, the choice, s's constants."""
    record = ref.record
    keep = ("restart", "seed", "step", "mig", "mig_per_factor", "active_units", "mean_variance")
    wanted = ("preset", "restarts", "steps", "seed", "seeds", "model", "hparams", "latent_dim")
    wanted += ("batch_size", "mig_points", "selection", "mig", "device", "torch")
    proto = {k: v for k, v in record["protocol"].items() if k in wanted}
    return {
        **source,
        "package_version": record.get("package_version"),
        "protocol": proto,
        "restarts": [{k: r[k] for k in keep if k in r} for r in record["restarts"]],
        "chosen": record["chosen"],
        "chosen_mig": ref.chosen_mig,
        "latent": ref.latent,
        "s_mean": record["s"]["mean"],
        "s_std": record["s"]["std"],
        "sign": record["s"]["sign"],
        "sign_factor": record["s"]["sign_factor"],
        "s_sha256": record["s"]["sha256"],
        "recomputed": "recomputed_on" in record["s"],
        "model": {k: v for k, v in record["model"].items() if k != "file"},
    }


def _reference(
    opts: BuildOptions, gt: GroundTruth, grid: GroundTruth, workdir: Path, log: Callable
) -> tuple[np.ndarray, dict[str, Any]]:
    """s for every row of ``grid`` (float32, grid order) and the manifest's reference entry."""
    if opts.reference:
        try:
            ref = load_reference(opts.reference, shipped=False)
        except ArtifactError as exc:
            raise BuildError(f"--reference {opts.reference}: {exc}") from exc
        source: dict[str, Any] = {"source": "path", "path": str(opts.reference)}
    elif opts.retrain:
        ref_dir = workdir / f"reference-{opts.preset}-seed{opts.seed}"
        log(f"training the {opts.preset} reference in {ref_dir} (resumable)")
        ref = run_reference(
            gt,
            preset_name=opts.preset,
            workdir=ref_dir,
            seed=opts.seed,
            device=opts.device,
            # the smoke model is tiny: one thread is fastest on a busy machine, and a fixed count
            # removes the dependence of its s on the thread count; float32 training still differs
            # between CPUs (AVX2 vs AVX-512 kernels), so s is not the same on every machine
            num_threads=1 if opts.preset == "smoke" else None,
            progress=opts.progress,
            log=log,
        )
        source = {"source": "retrained", "preset": opts.preset}
    else:
        try:
            ref = load_reference(opts.dataset, shipped=True)
        except ArtifactError as exc:
            raise _no_shipped_reference(opts.dataset, str(exc)) from exc
        source = {"source": "shipped"}
    try:
        ref.check_ground_truth(grid)
    except ArtifactError as exc:
        same_grid = list(ref.record["ground_truth"]["factor_sizes"]) == list(grid.factor_sizes)
        if grid.source == "procedural" or not same_grid:
            raise BuildError(str(exc)) from exc
        ref = _recomputed(ref, grid, workdir, log)
    return ref.s, _reference_record(ref, source)


def _recomputed(ref: Reference, grid: GroundTruth, workdir: Path, log: Callable) -> Reference:
    """``ref`` re-applied to an official file's images (its encoder, cached in the workdir)."""
    key = _key([ref.record["s"]["sha256"], grid_identity(grid)["fingerprint"]])[:24]
    cache = workdir / "s-recomputed" / key
    if (cache / "reference.json").exists():
        try:
            return load_reference(cache, grid, shipped=False)
        except ArtifactError as exc:
            log(f"cached recomputed s in {cache} is unusable ({exc}); recomputing")
    log("s: the reference was computed on the procedural grid; encoding the official images")
    new = ref.recompute(grid)
    new.save(cache, overwrite=True)
    return new


# --- shards ----------------------------------------------------------------------------------
@dataclass
class ShardPlan:
    config: DatasetConfig
    number: int
    of: int
    start: int
    stop: int
    path: str
    key: str


@dataclass
class Context:
    """What generating a block needs (shared read-only by the worker threads)."""

    builder: PerturbedBuilder
    root: GroundTruth
    grid: GroundTruth
    index: np.ndarray  # grid row -> grid index of the full grid
    s: np.ndarray
    pattern: Pattern
    seed: int

    def block(self, start: int, stop: int, configs: list[DatasetConfig]) -> dict[str, pa.Table]:
        """Rows ``start:stop`` of every config in ``configs`` as Arrow tables (render once)."""
        original = self.grid.images(np.arange(start, stop))
        index = self.index[start:stop]
        factors = self.root.factors(index)
        values = self.root.factor_values_of(index)
        s = self.s[start:stop]
        out = {}
        for config in configs:
            images = config_images(
                config, original, index, s, pattern=self.pattern, seed=self.seed, threads=1
            )
            png = self.builder.encoder(config).encode(images)
            out[config.name] = self.builder.table(png, index, factors, values, s, config.epsilon)
        return out

    def bytes_per_row(self, config: DatasetConfig) -> float:
        """Mean stored bytes of a row of ``config`` on evenly spaced sample rows (deterministic)."""
        n = len(self.grid)
        rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).round().astype(np.int64))
        original = self.grid.images(rows)
        images = config_images(
            config, original, self.index[rows], self.s[rows], pattern=self.pattern, seed=self.seed
        )
        png = self.builder.encoder(config).encode(images)
        return float(np.mean([len(p) for p in png])) + 8 * (3 + 2 * len(self.builder.factors))


def _ledger_path(workdir: Path, plan: ShardPlan) -> Path:
    return workdir / "shards" / plan.config.name / (Path(plan.path).name + ".json")


def _reusable(out: Path, workdir: Path, plan: ShardPlan, log: Callable) -> dict | None:
    """The ledger entry of a finished shard whose file is intact, else None (then rebuild)."""
    ledger = _ledger_path(workdir, plan)
    if not ledger.exists():
        return None
    try:
        entry = json.loads(ledger.read_text())
        ok = isinstance(entry, dict) and all(k in entry for k in ("key", "sha256", "rows", "bytes"))
    except (OSError, ValueError):
        ok = False
    if not ok:
        log(f"cache entry {ledger} is corrupt: rebuilding {plan.path}")
        return None
    if entry["key"] != plan.key:
        return None
    target = out / plan.path
    if not target.exists():
        return None
    if target.stat().st_size != entry["bytes"] or sha256_of(target) != entry["sha256"]:
        log(f"{plan.path} differs from what this build wrote (corrupt or modified): rebuilding")
        return None
    return entry


def build_shards(
    ctx: Context,
    plans: list[ShardPlan],
    out: Path,
    workdir: Path,
    state: dict,
    *,
    jobs: int,
    block_rows: int,
    progress: bool,
    log: Callable,
) -> tuple[dict[str, dict], dict[str, int], dict[str, int]]:
    """Write every shard in ``plans`` that is not already intact; returns the ledger entries."""
    entries: dict[str, dict] = {}
    built: dict[str, int] = {}
    reused: dict[str, int] = {}
    todo: list[ShardPlan] = []
    for plan in plans:
        entry = _reusable(out, workdir, plan, log)
        if entry is None:
            todo.append(plan)
        else:
            entries[plan.path] = entry
            reused[plan.config.name] = reused.get(plan.config.name, 0) + 1
    if not todo:
        return entries, built, reused
    n = len(ctx.grid)
    by_block: dict[int, list[ShardPlan]] = {}
    for plan in todo:
        for start in range(plan.start, plan.stop, block_rows):
            by_block.setdefault(start, []).append(plan)
    blocks = [(a, min(a + block_rows, n), by_block[a]) for a in sorted(by_block)]
    total = sum((b - a) * len(p) for a, b, p in blocks)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="img", desc="shards", disable=not progress, smoothing=0.1)
    writers: dict[str, ShardWriter] = {}
    for plan in todo:  # claim the paths first: an interrupted shard is still ours
        state["written"].append(plan.path)
    write_state(out, state)

    def work(block: tuple[int, int, list[ShardPlan]]) -> tuple[int, int, list, dict]:
        a, b, shard_plans = block
        return a, b, shard_plans, ctx.block(a, b, [p.config for p in shard_plans])

    try:
        for a, b, shard_plans, tables in ordered_map(work, blocks, jobs):
            for plan in shard_plans:
                writer = writers.get(plan.path)
                if writer is None:
                    writer = writers[plan.path] = ShardWriter(out / plan.path, ctx.builder.schema)
                writer.write(tables[plan.config.name])
                if b >= plan.stop:
                    if writer.rows != plan.stop - plan.start:  # a bug, never a partial shard
                        raise ArtifactError(
                            f"{plan.path}: wrote {writer.rows} rows, planned {plan.stop - plan.start}"
                        )
                    sha, size = writers.pop(plan.path).commit()
                    entry = {"key": plan.key, "sha256": sha, "rows": writer.rows, "bytes": size}
                    write_json_atomic(_ledger_path(workdir, plan), entry)
                    entries[plan.path] = entry
                    built[plan.config.name] = built.get(plan.config.name, 0) + 1
            bar.update((b - a) * len(shard_plans))
    finally:
        for writer in writers.values():
            writer.abort()
        bar.close()
    return entries, built, reused


# --- the build -------------------------------------------------------------------------------
class _Stages:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.log(f"[{name}]")
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[name] = time.perf_counter() - t0


def build(opts: BuildOptions, log: Callable[[str], None] = print) -> BuildResult:
    """Run every stage (see the module docstring); raises BuildError or VerificationFailed."""
    opts = resolve_options(opts)
    builder = get_builder(opts.dataset)
    out, workdir = Path(opts.out), Path(opts.workdir)
    configs = plan_configs(opts.kinds, opts.epsilons)
    stages = _Stages(log)
    t_start = time.perf_counter()
    if not (opts.reference or opts.retrain):
        _check_shipped(opts.dataset)  # fail fast: nothing is read or written yet
    check_out(out, workdir, opts.overwrite)  # refuse a foreign folder before any work
    _check_workdir(workdir, out)
    lock = FileLock(str(workdir / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise BuildError(
            f"another build is running with --workdir {workdir}; wait for it or use another one"
        ) from exc
    try:
        return _build(opts, builder, out, workdir, configs, stages, t_start, log)
    finally:
        lock.release()


def _build(
    opts: BuildOptions,
    builder: PerturbedBuilder,
    out: Path,
    workdir: Path,
    configs: list[DatasetConfig],
    stages: _Stages,
    t_start: float,
    log: Callable[[str], None],
) -> BuildResult:
    """The stages, once the folders are checked and the work directory is locked."""
    gt, grid, gt_info = stages.run("ground truth", lambda: _ground_truth(opts, builder))
    log(f"  {grid!r}: {len(grid):,} images")
    state, previously_verified = prepare_out(out, workdir, opts.overwrite, log)

    def s_stage() -> tuple[np.ndarray, dict]:
        s, ref_info = _reference(opts, gt, grid, workdir, log)
        if s.shape != (len(grid),) or s.dtype != np.float32:
            raise BuildError(f"s must be float32 [{len(grid)}], got {s.dtype} {list(s.shape)}")
        sha = s_sha256(s)
        cached = workdir / "s" / f"{sha}.npy"
        if not cached.exists():
            write_npy_atomic(cached, s)
        return s, ref_info

    s, ref_info = stages.run("s", s_stage)
    sha_s = s_sha256(s)
    log(
        f"  reference ({ref_info['source']}): restart {ref_info['chosen']} of "
        f"{len(ref_info['restarts'])}, MIG {ref_info['chosen_mig']:.4f}, s = latent "
        f"{ref_info['latent']} (sha256 {sha_s[:12]}…)"
    )

    def pattern_stage() -> Pattern:
        return Pattern(seed=opts.seed, kappa=opts.kappa)

    pattern = stages.run("pattern", pattern_stage)
    root = getattr(grid, "parent", grid)
    index = (
        grid.parent_indices if isinstance(grid, SubGrid) else np.arange(len(grid), dtype=np.int64)
    )
    ctx = Context(builder, root, grid, index, s, pattern, opts.seed)

    def shard_stage() -> tuple[list[ShardPlan], dict, dict, dict, int]:
        n = len(grid)
        if hasattr(grid, "ensure_views"):  # Shapes3D: its 480 views once, on all cores,
            grid.ensure_views()  # before the worker threads share them
        plans: list[ShardPlan] = []
        per_config = {}
        for config in configs:
            if opts.rows_per_shard:
                rps = opts.rows_per_shard
            else:
                rps = plan_rows_per_shard(ctx.bytes_per_row(config), n)
            per_config[config.name] = rps
        block_rows = math.gcd(ROW_GROUP_ROWS, *per_config.values())
        for config in configs:
            rps = per_config[config.name]
            num = math.ceil(n / rps)
            depends = {
                "build_format": BUILD_FORMAT,
                "package_version": __version__,  # the renderer or perturbation may change
                "builder": builder.repo_name,
                "features": builder.features.to_dict(),
                "ground_truth": gt_info["fingerprint"],
                "rows": n,
                "config": config.to_dict(),
                "s": sha_s,
                "pattern": pattern.sha256 if config.kind == "perturbed" else None,
                "noise_seed": opts.seed if config.kind == "noise" else None,
                "png": builder.encoder(config).to_dict(),
                "parquet": {**PARQUET_SETTINGS, "pyarrow": pa.__version__},
                "block_rows": block_rows,
                "rows_per_shard": rps,
            }
            for i in range(num):
                a, b = i * rps, min((i + 1) * rps, n)
                plans.append(
                    ShardPlan(
                        config,
                        i,
                        num,
                        a,
                        b,
                        shard_path(config.name, i, num),
                        _key({**depends, "shard": [i, num, a, b]}),
                    )
                )
        entries, built, reused = build_shards(
            ctx,
            plans,
            out,
            workdir,
            state,
            jobs=opts.jobs,
            block_rows=block_rows,
            progress=opts.progress,
            log=log,
        )
        return plans, entries, built, reused, block_rows

    plans, entries, built, reused, block_rows = stages.run("shards", shard_stage)

    def card_stage() -> tuple[dict, str]:
        planned = {p.path for p in plans} | {CARD_FILE, MANIFEST_FILE, FIGURE_FILE}
        stale = [f for f in state["written"] if f not in planned]
        for rel in stale:  # ours, from an earlier build with other parameters
            (out / rel).unlink(missing_ok=True)
        state["written"] = [f for f in state["written"] if f in planned] + [
            CARD_FILE,
            MANIFEST_FILE,
            FIGURE_FILE,
        ]
        write_state(out, state)
        _remove_empty_dirs(out / "data")
        figure_rows = np.unique(
            np.linspace(0, len(grid) - 1, FIGURE_ROWS + 2).round().astype(np.int64)[1:-1]
        )
        original = grid.images(figure_rows)
        main = {c.kind: c for c in reversed(configs)}  # the main ε's config of each kind
        p_cfg = main.get("perturbed") or DatasetConfig("perturbed", "perturbed", opts.epsilons[0])
        n_cfg = main.get("noise") or DatasetConfig("noise", "noise", opts.epsilons[0])
        args = (original, index[figure_rows], s[figure_rows])
        kw = {"pattern": pattern, "seed": opts.seed}
        figure = cards.comparison_figure(
            original, config_images(p_cfg, *args, **kw), config_images(n_cfg, *args, **kw)
        )
        write_bytes_atomic(out / FIGURE_FILE, figure)
        manifest = _manifest(
            opts, builder, gt_info, ref_info, sha_s, pattern, configs, plans, entries, block_rows
        )
        manifest["figure"] = {
            "path": FIGURE_FILE,
            "sha256": hashlib.sha256(figure).hexdigest(),
            "indices": [int(i) for i in index[figure_rows]],
            "epsilon": p_cfg.epsilon,
        }
        sha = write_manifest(out, manifest)
        write_bytes_atomic(out / CARD_FILE, cards.render_card(manifest, builder, sha).encode())
        return manifest, sha

    manifest, sha = stages.run("card", card_stage)

    def verify_stage() -> str:
        all_reused = not built and sum(reused.values()) == len(plans)
        if not opts.verify:
            return "skipped"
        if previously_verified == sha and all_reused:
            log("  verified before: the same manifest, every shard's sha256 re-checked now")
            return "cached"
        _verify(out, s, opts, log)
        return "yes"

    verified = stages.run("verify", verify_stage)
    state.update(complete=True, verified_manifest=sha if verified != "skipped" else None)
    write_state(out, state)
    stages.timings["total"] = time.perf_counter() - t_start
    write_json_atomic(
        workdir / "last-build.json",
        {"out": str(out.resolve()), "manifest_sha256": sha, "timings": stages.timings},
    )
    return BuildResult(out, manifest, stages.timings, built, reused, verified)


def _verify(out: Path, s: np.ndarray, opts: BuildOptions, log: Callable[[str], None]) -> None:
    """Verify the finished folder with the build's s and its ground truth (``--source`` and
    ``--no-verify-checksum`` included); raise VerificationFailed with the report if it fails."""
    from generation.verify import verify_folder

    report = verify_folder(
        out,
        s=s,
        source=opts.source,
        verify_checksum=opts.verify_checksum,
        jobs=opts.jobs,
        progress=opts.progress,
    )
    if not report.ok:
        raise VerificationFailed(report.format())
    log(f"  {report.summary()}")


def _remove_empty_dirs(folder: Path) -> None:
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder, topdown=False):
        if not dirs and not files and Path(root) != folder:
            try:
                Path(root).rmdir()
            except OSError:
                pass


def _manifest(
    opts: BuildOptions,
    builder: PerturbedBuilder,
    gt_info: dict,
    ref_info: dict,
    sha_s: str,
    pattern: Pattern,
    configs: list[DatasetConfig],
    plans: list[ShardPlan],
    entries: dict[str, dict],
    block_rows: int,
) -> dict[str, Any]:
    config_entries = {}
    for config in configs:
        shards = [
            {
                "path": p.path,
                "rows": entries[p.path]["rows"],
                "sha256": entries[p.path]["sha256"],
                "bytes": entries[p.path]["bytes"],
                "first_row": p.start,
            }
            for p in plans
            if p.config.name == config.name
        ]
        config_entries[config.name] = {
            **config.to_dict(),
            "rows": sum(sh["rows"] for sh in shards),
            "bytes": sum(sh["bytes"] for sh in shards),
            "png": config.kind,
            "shards": shards,
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": builder.repo_name,
        "dataset": opts.dataset,
        "smoke": opts.smoke,
        "package_version": __version__,
        "ground_truth": gt_info,
        "build": {
            "seed": opts.seed,
            "kappa": opts.kappa,
            "epsilons": opts.epsilons,
            "configs": [c.name for c in configs],
            "default_config": DEFAULT_CONFIG
            if DEFAULT_CONFIG in config_entries
            else configs[0].name,
            "build_format": BUILD_FORMAT,
        },
        "reference": ref_info,
        "s": {
            "sha256": sha_s,
            "dtype": "float32",
            "definition": "sign * (mu_j - mean) / std over the grid; j = argmin_k E sigma_k^2",
            "clip": [-4.0, 4.0],
        },
        "pattern": pattern.to_dict(),
        "noise": {
            "seed": opts.seed,
            "definition": "x + U[-eps, eps] per pixel and channel, keyed by (seed, grid index); "
            "see perturbed_disentanglement.perturbation.pattern",
        },
        "quantisation": "every change rounded toward the original byte: |stored - original| <= "
        "floor(255 * epsilon) exactly",
        "image": {"mode": builder.image_mode, "height": 64, "width": 64},
        "png": {kind: builder.png[kind].to_dict() for kind in sorted({c.kind for c in configs})},
        "parquet": {
            **PARQUET_SETTINGS,
            "row_group_rows": block_rows,
            "pyarrow_version": pa.__version__,
            "datasets_version": datasets.__version__,
        },
        "features": builder.features.to_dict(),
        "configs": config_entries,
        "figure": None,  # filled once the figure is written
    }


# --- command line ----------------------------------------------------------------------------
def _configs_arg(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def parse_args(argv: list[str] | None = None) -> BuildOptions:
    parser = argparse.ArgumentParser(
        prog="python -m generation.build",
        description=(
            "Build perturbed-dsprites or perturbed-shapes3d: every grid image as configs "
            "perturbed (the paper's pattern), noise (the uniform-noise control) and original, as "
            "a Hugging Face dataset folder (Parquet shards, card, manifest), verified row by row."
        ),
        epilog=(
            "The default build uses the reference shipped with the package and the measured "
            "(kappa, epsilon) of perturbed_disentanglement.perturbation.pattern.DEFAULT_STRENGTH. Rerun "
            "the same command to resume an interrupted build; load the result with "
            "datasets.load_dataset(OUT)."
        ),
    )
    parser.add_argument("--dataset", default="dsprites", choices=sorted(BUILDERS))
    parser.add_argument("--source", help="official file (default: the procedural ground truth)")
    parser.add_argument(
        "--no-verify-checksum", action="store_true", help="accept a modified --source file"
    )
    parser.add_argument(
        "--eps",
        type=float,
        nargs="+",
        metavar="E",
        help="epsilon values; the first gives perturbed/noise, each further one "
        "perturbed-epsE/noise-epsE (default: the dataset's measured epsilon)",
    )
    parser.add_argument(
        "--kappa", type=float, help="pattern rows per unit of s (default: measured)"
    )
    parser.add_argument(
        "--configs",
        type=_configs_arg,
        default=list(KINDS),
        help="comma-separated subset of perturbed,noise,original (default: all three); the "
        "folder then holds exactly these (configs of an earlier build are removed)",
    )
    parser.add_argument("--reference", metavar="PATH", help="reference artifact folder to use")
    parser.add_argument(
        "--retrain", action="store_true", help="train the reference in this build (resumable)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="reference protocol for --retrain (default cpu)"
    )
    parser.add_argument("--seed", type=int, default=0, help="build seed: pattern, noise, retrain")
    parser.add_argument("--out", help="dataset folder (default ./perturbed-<dataset>[-smoke])")
    parser.add_argument(
        "--workdir", help="caches and the resumable state (default build/<out folder name>)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="build into an --out that holds other files (moved aside if in the way, never deleted)",
    )
    parser.add_argument("--jobs", type=int, help="worker threads (default: every core)")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: the smoke sub-grid and smoke reference"
    )
    parser.add_argument(
        "--rows-per-shard", type=int, help="fixed shard size (a multiple of 64; default ~256 MB)"
    )
    parser.add_argument("--device", default="cpu", help="for --retrain: cpu, cuda, …")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the final check (publish then runs it)"
    )
    a = parser.parse_args(argv)
    return BuildOptions(
        dataset=a.dataset,
        source=a.source,
        verify_checksum=not a.no_verify_checksum,
        epsilons=a.eps,
        kappa=a.kappa,
        kinds=a.configs,
        reference=a.reference,
        retrain=a.retrain,
        preset=a.preset,
        seed=a.seed,
        out=a.out,
        workdir=a.workdir,
        overwrite=a.overwrite,
        jobs=a.jobs,
        smoke=a.smoke,
        rows_per_shard=a.rows_per_shard,
        device=a.device,
        progress=not a.no_progress,
        verify=not a.no_verify,
    )


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:,.1f} MB"


def summary(result: BuildResult) -> str:
    """The end-of-build report: paths, rows and bytes per config, (κ, ε), reference, timings."""
    m = result.manifest
    ref = m["reference"]
    gt = m["ground_truth"]
    lines = [
        "",
        f"{m['name']}{' (smoke build)' if m['smoke'] else ''} -> {result.out.resolve()}",
        f"  ground truth: {m['dataset']} ({gt['source']}), {gt['num_images']:,} images"
        + (f" (strides {gt['strides']})" if gt.get("strides") else ""),
        f"  kappa = {m['build']['kappa']:g}, epsilon = "
        + ", ".join(f"{e:g}" for e in m["build"]["epsilons"])
        + f", seed {m['build']['seed']}",
        f"  reference: {ref['source']}"
        + (
            f" ({ref.get('preset') or ref['protocol'].get('preset')})"
            if ref["source"] != "path"
            else f" {ref['path']}"
        )
        + f", restart {ref['chosen']} of {len(ref['restarts'])} chosen (lowest MIG "
        f"{ref['chosen_mig']:.4f}), s = latent {ref['latent']}",
        f"  {'config':<22} {'rows':>9} {'shards':>6} {'size':>12}  shards built/reused",
    ]
    for name, c in m["configs"].items():
        lines.append(
            f"  {name:<22} {c['rows']:>9,} {len(c['shards']):>6} {_mb(c['bytes']):>12}  "
            f"{result.built.get(name, 0)}/{result.reused.get(name, 0)}"
        )
    total = sum(c["bytes"] for c in m["configs"].values())
    lines.append(f"  {'total':<22} {'':>9} {'':>6} {_mb(total):>12}")
    lines.append(
        "  time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
        + f"; verified: {result.verified}"
    )
    lines.append(
        f'  load: datasets.load_dataset("{result.out}")  '
        f"# default config: {m['build']['default_config']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        result = build(opts)
    except VerificationFailed as exc:
        print(f"error: the built folder does not verify:\n{exc}", file=sys.stderr)
        return 1
    except (PerturbedDisentanglementError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
