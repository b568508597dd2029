"""Build perturbed-dsprites or perturbed-shapes3d as a Hugging Face dataset folder: the main job.

    python -m generation.build                         # dSprites: ./perturbed-dsprites
    python -m generation.build --dataset shapes3d      # Shapes3D: ./perturbed-shapes3d
    python -m generation.build --smoke                 # seconds: a strided sub-grid, smoke reference

Stages: ground truth -> s (the reference's leading latent) -> pattern -> each config's Parquet
shards -> manifest, figure and card -> verification of every row -> commit. Shards are generated
in blocks of 1,024 rows on ``--jobs`` threads (render once, then every config that needs the
block: perturb, PNG-encode, Arrow), written atomically, and recorded in ``--workdir`` with a key of
everything they depend on: a rerun after a kill resumes, an unchanged shard is reused after its
sha256 is re-checked, and a changed parameter rebuilds exactly the shards that depend on it
(ε: perturbed and noise; κ: perturbed; the seed: perturbed and noise; s: everything). Memory
stays at a few blocks whatever the grid.

An unfinished output is not a dataset, by construction. The build's first write is the card of
an unfinished build (:func:`builders.manifest.unfinished_card`: ``load_dataset`` refuses the
folder with ``ValueError: Expected configs to be a list, but got 'UNFINISHED BUILD: …'``, which
names the command that finishes it). Shards, figure, manifest and the real card are written into
``OUT/.unfinished-build/`` (hidden: ``datasets`` ignores it), laid out as the finished folder,
and verified there. Only then are they renamed into place (same filesystem: no copy): ``data/``
as one directory (the previous build's ``data/`` is first moved aside, so ``data/`` never mixes
two builds), the figure and the manifest, and last the card, which makes the folder a dataset. A
kill at any point leaves the unfinished card; the rerun finds the shards, staged or already moved,
re-checks their sha256 and finishes the moves (a verification of the same manifest is not redone).

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
import shlex
import shutil
import signal
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
    DATA_DIR,
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
    STAGING_DIR,
    STATE_FILE,
    new_state,
    read_state,
    unfinished_card,
    write_manifest,
    write_state,
)
from perturbed_disentanglement import __version__, ground_truth
from perturbed_disentanglement.errors import ArtifactError, PerturbedDisentanglementError
from perturbed_disentanglement.ground_truth import GroundTruth, sha256_of
from perturbed_disentanglement.ground_truth.subgrid import SubGrid
from perturbed_disentanglement.metrics.diagnostics import entanglement_text
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
from perturbed_disentanglement.reference.s_rules import DEFAULT_S_RULE, S_RULES
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
    fsync_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
)
from perturbed_disentanglement.util.ordered_map import ordered_map

BUILD_FORMAT = 1  # bump when the bytes a shard holds change for the same inputs
SAMPLE_ROWS = 256  # rows encoded to plan each config's shard size
FIGURE_ROWS = 4
WORKDIR_MARKER = ".perturbed-disentanglement-workdir.json"
#: where the previous build's ``data/`` waits during the commit (inside the staging folder)
OLD_DATA = "old-data"
#: a test hook: ``shards:N`` kills the build with SIGKILL (no clean-up at all) once it has written
#: N shards, ``commit:N`` after the N-th step of the commit (see :func:`commit`)
KILL_ENV = "PERTURBED_DISENTANGLEMENT_TEST_KILL_BUILD"
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
    s_rule: str | None = None  # default: the reference's own rule (the shipped s)
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
    if opts.s_rule is not None and opts.s_rule not in S_RULES:
        raise BuildError(f"unknown --s-rule {opts.s_rule!r}; expected one of {', '.join(S_RULES)}")
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
    """Every file below ``folder`` (relative POSIX paths), the ownership record excepted (the
    staging folder's files included)."""
    out = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel != STATE_FILE:
                out.append(rel)
    return sorted(out)


def _is_build_path(rel: str) -> bool:
    """Paths a build writes: the card, the manifest, images/, data/ and the staging folder."""
    return rel in (CARD_FILE, MANIFEST_FILE, "data", "images") or rel.startswith(
        ("data/", "images/", f"{STAGING_DIR}/")
    )


def _is_staged(rel: str) -> bool:
    return rel == STAGING_DIR or rel.startswith(f"{STAGING_DIR}/")


def _kill_point(where: str, n: int) -> None:
    """The test hook of :data:`KILL_ENV`: die here as a killed build does, without clean-up."""
    if os.environ.get(KILL_ENV) == f"{where}:{n}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


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
        if f not in owned and f not in accepted and not (state and (_is_temp(f) or _is_staged(f)))
    ]
    if foreign and not overwrite:
        shown = ", ".join(foreign[:8]) + (
            f", … ({len(foreign)} in all)" if len(foreign) > 8 else ""
        )
        raise BuildError(
            f"--out {out} already holds files this package did not write ({shown}). Choose "
            "an empty or new folder, or pass --overwrite to build into it: files at the "
            f"build's paths (README.md, manifest.json, data/, images/, {STAGING_DIR}/) are then "
            "moved to "
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


def _displaced_dir(workdir: Path) -> Path:
    n = 1
    while (workdir / "displaced" / str(n)).exists():
        n += 1
    return workdir / "displaced" / str(n)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def prepare_out(
    out: Path,
    workdir: Path,
    overwrite: bool,
    log: Callable[[str], None],
    card: str | None = None,
) -> tuple[dict, str | None]:
    """Claim ``out`` for this build, mark it unfinished and return its ownership record (see the
    module docstring).

    Refuses a folder with files the package did not write unless ``overwrite``; then the foreign
    files at the build's paths are moved to ``workdir/displaced/<n>/`` and the others accepted
    (left alone). The card becomes ``card`` (the unfinished build's, which ``load_dataset``
    refuses) before anything else changes: a foreign card is moved aside first and replaced at
    once. Our manifest and temporary files of an interrupted run are removed. Also returns the
    sha256 of the manifest the build last verified (None if never).
    """
    foreign = check_out(out, workdir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    ours = state is not None
    owned = set(state["written"]) if state else set()
    accepted = set(state["accepted"]) if state else set()
    previous = state.get("verified_manifest") if state else None
    state = state or new_state()
    state["accepted"] = sorted(accepted | {f for f in foreign if not _is_build_path(f)})
    state.update(complete=False, verified_manifest=None)
    card = card or unfinished_card(out.name, "python -m generation.build --out " + str(out))

    def mark_unfinished() -> None:
        state["written"] = sorted(set(state["written"]) | {CARD_FILE})
        write_state(out, state)  # the card is ours before it is written
        write_bytes_atomic(out / CARD_FILE, card.encode())

    # the card first: a foreign one is moved aside and at once replaced by the unfinished card
    displaced = sorted((f for f in foreign if _is_build_path(f)), key=lambda f: f != CARD_FILE)
    if CARD_FILE not in displaced:
        mark_unfinished()
    if displaced:
        target = _displaced_dir(workdir)
        for rel in displaced:
            _move(out / rel, target / rel)
            if rel == CARD_FILE:
                mark_unfinished()
        log(f"moved {len(displaced)} file(s) that were in the way to {target}")
    if MANIFEST_FILE in owned:
        (out / MANIFEST_FILE).unlink(missing_ok=True)
    if ours:  # temporary files of our atomic writes (check_out counts them as ours)
        for rel in _files(out):
            if _is_temp(rel):
                (out / rel).unlink(missing_ok=True)
    _clean_stage(out / STAGING_DIR)
    return state, previous


def _clean_stage(stage: Path) -> None:
    """Remove what a killed build left in the staging folder besides finished files: temporary
    files and the previous build's ``data/`` of an interrupted commit (all of it ours)."""
    if (stage / OLD_DATA).is_dir():
        shutil.rmtree(stage / OLD_DATA)
    if not stage.is_dir():
        return
    for root, _dirs, names in os.walk(stage):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(root, name).unlink(missing_ok=True)


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
        "s_rule": {k: v for k, v in ref.rule.items() if k in ("rule", "latents", "weights")},
        "s_entanglement": ref.entanglement,
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
            s_rule=opts.s_rule or DEFAULT_S_RULE,
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
    if opts.s_rule is not None:
        source["s_rule_requested"] = opts.s_rule
        if opts.s_rule != ref.rule["rule"]:
            ref = _with_rule(ref, opts.s_rule, grid, workdir, log)
    entanglement = ref.entanglement
    if entanglement["dominated"]:
        log(
            f"  WARNING: s is dominated by one factor: {entanglement['dominant']} explains "
            f"{entanglement['dominant_fraction']:.2f} of its variance (> {entanglement['threshold']}). "
            "A pattern keyed to one factor makes that factor's latent sharper and entangles "
            "nothing (docs/perturbation-and-reference.md); consider --s-rule balanced-rotation"
        )
    return ref.s, _reference_record(ref, source)


def _cached(
    cache: Path,
    grid: GroundTruth,
    make: Callable[[], Reference],
    why: str,
    log: Callable,
) -> Reference:
    """The reference cached in ``cache`` (checked against ``grid``), else ``make()``'s, saved
    there: re-encoding a grid takes minutes, a rerun of the build should not pay them again."""
    if (cache / "reference.json").exists():
        try:
            return load_reference(cache, grid, shipped=False)
        except ArtifactError as exc:
            log(f"cached s in {cache} is unusable ({exc}); recomputing")
    log(f"s: {why}")
    new = make()
    new.save(cache, overwrite=True)
    return new


def _with_rule(
    ref: Reference, rule: str, grid: GroundTruth, workdir: Path, log: Callable
) -> Reference:
    """``ref`` with s chosen by ``rule`` (its encoder over the grid; cached in the workdir)."""
    key = _key([ref.record["s"]["sha256"], grid_identity(grid)["fingerprint"], rule])[:24]
    why = (
        f"rule {rule!r} instead of the reference's {ref.rule['rule']!r}: encoding the grid "
        "(this s is computed on this CPU: builds from it may differ in the last bits between "
        "machines, unlike builds from a shipped s)"
    )
    return _cached(
        workdir / "s-rule" / key, grid, lambda: ref.with_rule(rule, grid, progress=False), why, log
    )


def _recomputed(ref: Reference, grid: GroundTruth, workdir: Path, log: Callable) -> Reference:
    """``ref`` re-applied to an official file's images (its encoder, cached in the workdir)."""
    key = _key([ref.record["s"]["sha256"], grid_identity(grid)["fingerprint"]])[:24]
    why = "the reference was computed on the procedural grid; encoding the official images"
    return _cached(workdir / "s-recomputed" / key, grid, lambda: ref.recompute(grid), why, log)


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


def _reusable(stage: Path, out: Path, workdir: Path, plan: ShardPlan, log: Callable) -> dict | None:
    """The ledger entry of a finished shard whose file is intact, staged or in place in ``out``
    (a build or commit that was interrupted, or an earlier build), else None (then rebuild). A
    shard found in ``out`` is moved (renamed) back into the staging folder."""
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
    for folder in (stage, out):
        target = folder / plan.path
        if not target.is_file():
            continue
        if target.stat().st_size != entry["bytes"] or sha256_of(target) != entry["sha256"]:
            log(f"{plan.path} differs from what this build wrote (corrupt or modified): rebuilding")
            continue  # a corrupt staged shard is replaced, one in out/ goes with the old data/
        if folder == out:
            (stage / plan.path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, stage / plan.path)
        return entry
    return None


def build_shards(
    ctx: Context,
    plans: list[ShardPlan],
    stage: Path,
    out: Path,
    workdir: Path,
    *,
    jobs: int,
    block_rows: int,
    progress: bool,
    log: Callable,
) -> tuple[dict[str, dict], dict[str, int], dict[str, int]]:
    """Write every shard in ``plans`` that is not already intact into the staging folder
    ``stage`` (see :func:`_reusable`); returns the ledger entries, the shards built and reused."""
    entries: dict[str, dict] = {}
    built: dict[str, int] = {}
    reused: dict[str, int] = {}
    todo: list[ShardPlan] = []
    for plan in plans:
        entry = _reusable(stage, out, workdir, plan, log)
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
    written = 0

    def work(block: tuple[int, int, list[ShardPlan]]) -> tuple[int, int, list, dict]:
        a, b, shard_plans = block
        return a, b, shard_plans, ctx.block(a, b, [p.config for p in shard_plans])

    try:
        for a, b, shard_plans, tables in ordered_map(work, blocks, jobs):
            for plan in shard_plans:
                writer = writers.get(plan.path)
                if writer is None:
                    writer = writers[plan.path] = ShardWriter(stage / plan.path, ctx.builder.schema)
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
                    written += 1
                    _kill_point("shards", written)
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
    card = unfinished_card(builder.repo_name, build_command(opts))
    state, previously_verified = prepare_out(out, workdir, opts.overwrite, log, card=card)
    stage = out / STAGING_DIR

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
        f"{len(ref_info['restarts'])}, MIG {ref_info['chosen_mig']:.4f}, s by rule "
        f"{ref_info['s_rule']['rule']!r} (sha256 {sha_s[:12]}…)"
    )
    log("  " + entanglement_text(ref_info["s_entanglement"]))

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
            stage,
            out,
            workdir,
            jobs=opts.jobs,
            block_rows=block_rows,
            progress=opts.progress,
            log=log,
        )
        return plans, entries, built, reused, block_rows

    plans, entries, built, reused, block_rows = stages.run("shards", shard_stage)

    planned = {p.path for p in plans} | {CARD_FILE, MANIFEST_FILE, FIGURE_FILE}

    def card_stage() -> tuple[dict, str]:
        for rel in _files(stage):  # staged by an earlier, interrupted build with other parameters
            if rel not in planned:
                (stage / rel).unlink()
        _remove_empty_dirs(stage / "data")
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
            original,
            config_images(p_cfg, *args, **kw),
            config_images(n_cfg, *args, **kw),
            epsilon=p_cfg.epsilon,
            noise_epsilon=n_cfg.epsilon,
        )
        write_bytes_atomic(stage / FIGURE_FILE, figure)
        manifest = _manifest(
            opts, builder, gt_info, ref_info, sha_s, pattern, configs, plans, entries, block_rows
        )
        manifest["figure"] = {
            "path": FIGURE_FILE,
            "sha256": hashlib.sha256(figure).hexdigest(),
            "indices": [int(i) for i in index[figure_rows]],
            "epsilon": p_cfg.epsilon,
        }
        sha = write_manifest(stage, manifest)
        write_bytes_atomic(stage / CARD_FILE, cards.render_card(manifest, builder, sha).encode())
        return manifest, sha

    manifest, sha = stages.run("card", card_stage)

    def verify_stage() -> str:
        all_reused = not built and sum(reused.values()) == len(plans)
        if not opts.verify:
            return "skipped"
        cached = previously_verified == sha and all_reused
        if cached:
            log("  verified before: the same manifest, every shard's sha256 re-checked now")
        else:
            _verify(stage, s, opts, log)  # the staged folder, laid out as the finished one
        # on record before the commit: a rerun after a kill during the moves need not redo it
        state["verified_manifest"] = sha
        write_state(out, state)
        return "cached" if cached else "yes"

    verified = stages.run("verify", verify_stage)
    stages.run("commit", lambda: commit(out, stage, workdir, state, planned, log))
    stages.timings["total"] = time.perf_counter() - t_start
    write_json_atomic(
        workdir / "last-build.json",
        {"out": str(out.resolve()), "manifest_sha256": sha, "timings": stages.timings},
    )
    return BuildResult(out, manifest, stages.timings, built, reused, verified)


def commit(
    out: Path,
    stage: Path,
    workdir: Path,
    state: dict,
    planned: set[str],
    log: Callable[[str], None],
) -> None:
    """Move the verified staged folder into ``out`` by renames; the card goes last.

    Steps (a kill between any two leaves the unfinished card, which ``load_dataset`` refuses, and
    the rerun finishes the job): 1. the new paths are recorded as ours; 2. ``out/data`` (the
    previous build's shards, all ours: anything else found there is moved to
    ``workdir/displaced``) is moved into the staging folder; 3. the staged ``data/`` becomes
    ``out/data`` in one rename; 4. the figure and the manifest are moved; 5. the card replaces the
    unfinished one: the folder is a dataset from here on; 6. the record says complete and the
    staging folder (the previous build's stale shards) is removed.
    """
    state["written"] = sorted(set(state["written"]) | planned)
    write_state(out, state)
    _kill_point("commit", 1)
    old = stage / OLD_DATA
    if old.exists():
        shutil.rmtree(old)
    if (out / DATA_DIR).is_dir():
        theirs = [
            rel for rel in _files(out / DATA_DIR) if f"{DATA_DIR}/{rel}" not in state["written"]
        ]
        if theirs:  # put there during the build: never deleted
            target = _displaced_dir(workdir)
            for rel in theirs:
                _move(out / DATA_DIR / rel, target / DATA_DIR / rel)
            log(f"moved {len(theirs)} file(s) that appeared in {out / DATA_DIR} to {target}")
        os.replace(out / DATA_DIR, old)
    _kill_point("commit", 2)
    os.replace(stage / DATA_DIR, out / DATA_DIR)
    _kill_point("commit", 3)
    for rel in (FIGURE_FILE, MANIFEST_FILE):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)
        fsync_dir((out / rel).parent)
    _kill_point("commit", 4)
    os.replace(stage / CARD_FILE, out / CARD_FILE)
    fsync_dir(out)
    state.update(written=sorted(planned), complete=True)
    write_state(out, state)
    shutil.rmtree(stage)


def build_command(opts: BuildOptions) -> str:
    """The command line that runs this build again (the unfinished card names it)."""
    words = ["python", "-m", "generation.build", "--dataset", opts.dataset]
    if opts.smoke:
        words.append("--smoke")
    if opts.source:
        words += ["--source", opts.source]
    if not opts.verify_checksum:
        words.append("--no-verify-checksum")
    if opts.reference:
        words += ["--reference", opts.reference]
    if opts.s_rule:
        words += ["--s-rule", opts.s_rule]
    if opts.retrain and not opts.smoke and not opts.reference:
        words += ["--retrain", "--preset", str(opts.preset)]
        if opts.device != "cpu":
            words += ["--device", opts.device]
    words += ["--eps", *(repr(float(e)) for e in opts.epsilons or [])]
    words += ["--kappa", repr(float(opts.kappa or 0)), "--seed", str(opts.seed)]
    words += ["--configs", ",".join(opts.kinds)]
    if opts.rows_per_shard:
        words += ["--rows-per-shard", str(opts.rows_per_shard)]
    if not opts.verify:
        words.append("--no-verify")
    words += ["--out", str(opts.out), "--workdir", str(opts.workdir)]
    return shlex.join(words)


def _verify(out: Path, s: np.ndarray, opts: BuildOptions, log: Callable[[str], None]) -> None:
    """Verify the (staged) folder with the build's s and its ground truth (``--source`` and
    ``--no-verify-checksum`` included); raise VerificationFailed with the report if it fails."""
    from builders.verification import verify_folder

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
        "--s-rule",
        choices=S_RULES,
        default=None,
        help="how s is read off the reference's latents (default: the reference's own rule, "
        "whose s ships with it; another rule encodes the grid and computes s on this CPU)",
    )
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
        s_rule=a.s_rule,
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
        f"{ref['chosen_mig']:.4f}), s by rule {ref['s_rule']['rule']!r} "
        f"(latents {ref['s_rule']['latents']})",
        "  " + entanglement_text(ref["s_entanglement"]),
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
        print(
            "error: the built folder does not verify, so it was not moved into place (the "
            f"folder stays an unfinished build, which load_dataset refuses):\n{exc}",
            file=sys.stderr,
        )
        return 1
    except (PerturbedDisentanglementError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
