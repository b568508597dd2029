"""Running a sweep: train each run with the zoo, score it, write its record.

In-process, the runs execute one after another on the CPU (each config decoded once), or stacked
K at a time on a GPU (one vmapped model per group of the same model). With Ray, each run is a task
with the CPUs (or GPU) it needs; the decoded configs travel through Ray's object store, so the
workers of one machine share one copy. Either way a finished run (its record exists) is skipped,
an interrupted one resumes from its checkpoint, and a failure is written to ``error.json`` beside
it, reported, and retried by the next sweep; the other runs go on.

A run on one process also scores the diagnostics that explain its result at a quarter, half and
three quarters of its steps (MIG, the alignment of the code with ``s``, the pattern uptake): its
record's ``trajectory`` shows when, and whether, the model learned the pattern.

``adopt``: a run whose checkpoint another process already trained (a folder of checkpoints, e.g. a
screening campaign's) is copied in when that checkpoint is this run's (the same identity, images
included, see :func:`~..training.resume.find_checkpoint`), and the run is only evaluated (or
continued); its record says where the checkpoint came from, and its trajectory has no entries for
the steps trained elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError, InvalidArgumentError, PerturbedDisentanglementError
from ..ground_truth.grid import GroundTruth
from ..metrics import mig
from ..metrics.diagnostics import pattern_uptake, s_alignment
from ..training.checkpoint import STATE_FILE, latest_checkpoint, step_of
from ..training.losses import bernoulli_reconstruction
from ..training.models import VAE
from ..training.resume import find_checkpoint
from ..training.single import TrainResult, encode, identity_of, train
from ..training.zoo import model_spec
from ..util.atomic import make_temp_dir, replace_dir, write_json_atomic
from .data import ConfigData, load_config, sample_images
from .evaluation import EvaluationSizes, evaluate_representation
from .plan import RunSpec
from .records import (
    CHECKPOINT_DIR,
    FORMAT,
    FORMAT_VERSION,
    finished_record,
    run_dir,
    write_record,
)

ERROR_FILE = "error.json"
#: Grid points whose reconstruction error (and pattern uptake) a record reports.
RECONSTRUCTION_POINTS = 1_000
#: Folder of a run's diagnostics at intermediate steps (one JSON file per step).
TRAJECTORY_DIR = "trajectory"
#: A run's note that its checkpoint was trained elsewhere (:func:`adopt_checkpoint`).
ADOPTED_FILE = "adopted.json"


@dataclass
class SweepOutcome:
    """What a sweep did: records written now, runs skipped as finished, runs that failed."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def merge(self, other: SweepOutcome) -> None:
        self.trained += other.trained
        self.skipped += other.skipped
        self.failed.update(other.failed)


def reconstruction_error(vae: VAE, images: np.ndarray, num_threads: int | None = None) -> float:
    """Mean per-image Bernoulli reconstruction loss (nats) decoding the encoder mean."""
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        was_training = vae.training
        vae.eval()
        device = next(vae.parameters()).device
        dtype = next(vae.parameters()).dtype
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(images), 256):
                x = torch.from_numpy(images[start : start + 256]).to(device)
                x = x.permute(0, 3, 1, 2).to(dtype) / 255.0
                mu, _ = vae(x)
                total += float(bernoulli_reconstruction(vae.decode(mu), x)) * len(x)
        vae.train(was_training)
        return total / len(images)
    finally:
        torch.set_num_threads(previous)


def reconstruction_metric(
    vae: VAE,
    gt: GroundTruth,
    seed: int,
    num_threads: int | None = None,
    points: int = RECONSTRUCTION_POINTS,
) -> float:
    """A record's ``reconstruction``: :func:`reconstruction_error` on ``points`` grid points drawn
    with the run's seed (the same points for every model of a seed)."""
    return reconstruction_error(
        vae, gt.images(reconstruction_points(gt, seed, points)), num_threads
    )


def reconstruction_points(
    gt: GroundTruth, seed: int, points: int = RECONSTRUCTION_POINTS
) -> np.ndarray:
    """The grid points (sorted) whose reconstruction a record scores: drawn with the run's seed."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(gt), size=min(points, len(gt)), replace=False))


def original_images(data: ConfigData, indices: np.ndarray) -> np.ndarray | None:
    """The ``original`` config's images of ``indices`` (what the pattern uptake compares with),
    or None for the original config itself or a dataset without one."""
    if data.describe()["kind"] == "original":
        return None
    try:
        return sample_images(data.data, ["original"], indices)["original"]
    except PerturbedDisentanglementError:
        return None


def uptake(
    vae: VAE,
    data: ConfigData,
    indices: np.ndarray,
    originals: np.ndarray | None,
    num_threads: int | None = None,
) -> float | None:
    """:func:`~..metrics.diagnostics.pattern_uptake` of ``vae`` on the grid points ``indices``
    (None without originals): how much of the perturbation its decoder reproduces."""
    if originals is None:
        return None
    images = data.ground_truth.images(indices)
    previous = torch.get_num_threads()
    if num_threads:  # the decoder too: results differ in the last bits between thread counts
        torch.set_num_threads(num_threads)
    try:
        mu, _ = encode(vae, images, num_threads=num_threads)
        with torch.no_grad():
            param = next(vae.parameters())
            logits = vae.decode(torch.from_numpy(mu).to(param.device, param.dtype))
            reconstruction = torch.sigmoid(logits).permute(0, 2, 3, 1).float().cpu().numpy()
    finally:
        torch.set_num_threads(previous)
    return pattern_uptake(originals, images, reconstruction)


def trajectory_steps(steps: int) -> tuple[int, ...]:
    """The intermediate steps a run is diagnosed at: a quarter, half and three quarters."""
    return tuple(sorted({steps * q // 4 for q in (1, 2, 3)} - {0, steps}))


def diagnose(
    vae: VAE,
    data: ConfigData,
    step: int,
    *,
    seed: int,
    sizes: EvaluationSizes,
    originals: tuple[np.ndarray, np.ndarray | None],
    num_threads: int | None = None,
) -> dict[str, Any]:
    """One trajectory entry: MIG and the alignment with ``s`` on ``sizes.num_train`` uniform grid
    samples (the run's seed), and the uptake on the reconstruction points."""
    gt = data.ground_truth
    rng = np.random.default_rng(seed)
    factors = gt.sample_factors(sizes.num_train, rng).astype(np.int64)
    idx = gt.index(factors)
    mu, logvar = encode(vae, gt.images(idx), num_threads=num_threads)
    keep = [k for k, n in enumerate(gt.factor_sizes) if n >= 2]
    m = mig(mu, factors[:, keep])
    return {
        "step": int(step),
        "mig": float(m["mig"]),
        "mig_per_factor": dict(
            zip([gt.factor_names[k] for k in keep], np.asarray(m["mig_per_factor"]).tolist())
        ),
        "s_alignment": s_alignment(mu, logvar, data.s[idx]),
        "uptake": uptake(vae, data, originals[0], originals[1], num_threads),
    }


def assemble_record(
    spec: RunSpec,
    data: ConfigData,
    result: TrainResult,
    metrics: dict[str, Any],
    *,
    preset: str,
    sizes: EvaluationSizes,
    seconds: float,
) -> dict[str, Any]:
    """A scored run's record (see :mod:`.records`), in one place for the harness and the GPU
    script (which adds its stack's fields to ``training`` and ``evaluation``)."""
    trained_steps = result.steps - result.start_step
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "run_id": spec.run_id,
        "data": data.describe(),
        **spec.as_dict(),
        "regulariser": spec.regulariser,
        "preset": preset,
        "metrics": metrics,
        "training": {
            "seconds": result.wall_time,
            "steps_per_second": (
                trained_steps / result.wall_time if trained_steps and result.wall_time else None
            ),  # None when nothing was trained here (an adopted checkpoint)
            "device": result.device,
            "precision": result.precision,
            "num_threads": result.num_threads,
            "final_loss": {k: float(v[-1]) for k, v in result.history.items() if k != "step"},
        },
        "evaluation": {"seconds": seconds, "random_state": spec.seed, **sizes.as_dict()},
    }


def record_of(
    spec: RunSpec,
    data: ConfigData,
    result: TrainResult,
    *,
    preset: str,
    sizes: EvaluationSizes,
    num_threads: int | None,
    n_jobs: int = 1,
    originals: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """Score a trained run and assemble its record (see :mod:`.records`). ``originals``: the
    reconstruction points and their original images, if already read (for the uptake)."""
    vae = result.objective.vae.eval()
    t0 = time.perf_counter()
    metrics = evaluate_representation(
        data.ground_truth,
        lambda x: encode(vae, x, num_threads=num_threads),
        data.s,
        random_state=spec.seed,
        sizes=sizes,
        n_jobs=n_jobs,
        stochastic=not model_spec(spec.model).deterministic,
    )
    metrics["reconstruction"] = reconstruction_metric(
        vae, data.ground_truth, spec.seed, num_threads
    )
    if originals is None:
        points = reconstruction_points(data.ground_truth, spec.seed)
        originals = (points, original_images(data, points))
    metrics["uptake"] = uptake(vae, data, *originals, num_threads)
    return assemble_record(
        spec,
        data,
        result,
        metrics,
        preset=preset,
        sizes=sizes,
        seconds=time.perf_counter() - t0,
    )


def _fail(out: Path, spec: RunSpec, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}"
    write_json_atomic(
        run_dir(out, spec.run_id) / ERROR_FILE,
        {"run_id": spec.run_id, "error": message, "traceback": traceback.format_exc()},
    )
    return message


def _done(out: Path, spec: RunSpec, record: dict[str, Any]) -> None:
    write_record(out, record)
    (run_dir(out, spec.run_id) / ERROR_FILE).unlink(missing_ok=True)


def adopt_checkpoint(
    spec: RunSpec, data: ConfigData, out: Path, source: str | os.PathLike, *, device: str = "cpu"
) -> dict[str, Any] | None:
    """Copy into ``spec``'s run folder the newest checkpoint under ``source`` that is this run's
    (same model, hyperparameters, seed, batch size, precision and images) at a step ≤ its steps,
    with a note of where it came from (``adopted.json``); the note, or None if there is none."""
    identity = identity_of(
        spec.model,
        data.ground_truth.all_images(),
        dataset=data.dataset,
        hparams=spec.hparams,
        seed=spec.seed,
        batch_size=spec.batch_size,
        device=device,
    )
    found = find_checkpoint(identity, source, max_step=spec.steps)
    if found is None:
        return None
    state = json.loads((found / STATE_FILE).read_text(encoding="utf-8"))
    note = {
        "source": str(found.resolve()),
        "step": step_of(found),
        "weights_sha256": state.get("weights_sha256"),
        "package_version": state.get("package_version"),
    }
    folder = run_dir(out, spec.run_id)
    write_json_atomic(folder / ADOPTED_FILE, note)  # before the copy: a checkpoint is never unnamed
    target = folder / CHECKPOINT_DIR / found.name
    tmp = make_temp_dir(target)
    try:
        shutil.copytree(found, tmp, dirs_exist_ok=True)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return note


def run_one(
    spec: RunSpec,
    data: ConfigData,
    out: str | os.PathLike,
    *,
    preset: str,
    sizes: EvaluationSizes,
    checkpoint_every: int,
    device: str = "cpu",
    num_threads: int | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    adopt: str | os.PathLike | None = None,
    allow_training: bool = True,
) -> dict[str, Any]:
    """Train (or resume) one run, score it and write its record; the record.

    ``n_jobs``: processes for the metrics' classifier fits (DCI, SAP). ``adopt``: a folder to
    take this run's checkpoint from when it has none of its own (:func:`adopt_checkpoint`).
    ``allow_training=False``: only evaluate; a run without a checkpoint at its steps fails."""
    out = Path(out)
    if spec.config != data.config:
        raise ValueError(f"run {spec.run_id} is for config {spec.config}, got {data.config}")
    existing = finished_record(out, spec.run_id)
    if existing is not None:
        return existing

    def train_to(steps: int) -> TrainResult:
        return train(
            spec.model,
            data.ground_truth.all_images(),
            dataset=data.dataset,
            hparams=spec.hparams,
            steps=steps,
            batch_size=spec.batch_size,
            seed=spec.seed,
            device=device,
            checkpoint_dir=run_dir(out, spec.run_id) / CHECKPOINT_DIR,
            checkpoint_every=min(checkpoint_every, spec.steps),
            keep_checkpoints=1,
            num_threads=num_threads,
            progress=progress,
        )

    checkpoints = run_dir(out, spec.run_id) / CHECKPOINT_DIR
    if latest_checkpoint(checkpoints) is None:
        (run_dir(out, spec.run_id) / ADOPTED_FILE).unlink(missing_ok=True)  # stale: none left
        if adopt is not None:
            adopt_checkpoint(spec, data, out, adopt, device=device)
    held = latest_checkpoint(checkpoints)
    held_step = 0 if held is None else step_of(held) or 0
    if not allow_training and held_step < spec.steps:
        where = f" or under {adopt}" if adopt is not None else ""
        raise CheckpointError(
            f"run {spec.run_id}: no checkpoint at step {spec.steps} in {checkpoints}{where} "
            f"(newest: {held_step or 'none'}), and training is off (--no-train)"
        )

    deterministic = model_spec(spec.model).deterministic
    trajectory = []
    folder = run_dir(out, spec.run_id) / TRAJECTORY_DIR
    points = reconstruction_points(data.ground_truth, spec.seed)
    originals = (points, original_images(data, points))
    for step in () if deterministic else trajectory_steps(spec.steps):
        path = folder / f"step-{step}.json"
        if not path.exists() and step < held_step:
            continue  # trained past it elsewhere (an adopted checkpoint): not recoverable
        if not path.exists():  # written before any later step trains: a resume recomputes it
            vae = train_to(step).objective.vae.eval()
            entry = diagnose(
                vae,
                data,
                step,
                seed=spec.seed,
                sizes=sizes,
                originals=originals,
                num_threads=num_threads,
            )
            write_json_atomic(path, entry)
        trajectory.append(json.loads(path.read_text()))
    result = train_to(spec.steps)
    record = record_of(
        spec,
        data,
        result,
        preset=preset,
        sizes=sizes,
        num_threads=num_threads,
        n_jobs=n_jobs,
        originals=originals,
    )
    adopted = run_dir(out, spec.run_id) / ADOPTED_FILE
    if adopted.exists():
        record["training"]["adopted_from"] = json.loads(adopted.read_text(encoding="utf-8"))
    metrics = record["metrics"]
    if not deterministic:
        final = {k: metrics[k] for k in ("mig", "mig_per_factor", "s_alignment", "uptake")}
        record["trajectory"] = [*trajectory, {"step": spec.steps, **final}]
    _done(out, spec, record)
    return record


def unfinished(specs: Sequence[RunSpec], out: Path) -> tuple[list[RunSpec], SweepOutcome]:
    """The runs of ``specs`` still to do, and an outcome listing the finished ones as skipped."""
    outcome = SweepOutcome()
    todo = []
    for spec in specs:
        if finished_record(out, spec.run_id) is not None:
            outcome.skipped.append(spec.run_id)
        else:
            todo.append(spec)
    return todo, outcome


def run_in_process(
    specs: Sequence[RunSpec],
    load: Callable[[str], ConfigData],
    out: str | os.PathLike,
    *,
    preset: str,
    sizes: EvaluationSizes,
    checkpoint_every: int,
    device: str = "cpu",
    num_threads: int | None = None,
    n_jobs: int = 1,
    stack: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    adopt: str | os.PathLike | None = None,
    allow_training: bool = True,
) -> SweepOutcome:
    """Every unfinished run of ``specs``, config by config (each decoded once by ``load``);
    ``adopt``, ``allow_training``: see :func:`run_one` (not for stacks on a GPU)."""
    out = Path(out)
    if (
        (adopt is not None or not allow_training)
        and stack > 1
        and torch.device(device).type == "cuda"
    ):
        raise InvalidArgumentError("--adopt and --no-train take the runs one by one: use --stack 1")
    todo, outcome = unfinished(specs, out)
    configs = list(dict.fromkeys(s.config for s in todo))
    for config in configs:
        data = load(config)
        group = [s for s in todo if s.config == config]
        if stack > 1 and torch.device(device).type == "cuda":
            outcome.merge(
                _run_stacked(
                    group,
                    data,
                    out,
                    preset=preset,
                    sizes=sizes,
                    checkpoint_every=checkpoint_every,
                    device=device,
                    stack=stack,
                    n_jobs=n_jobs,
                    progress=progress,
                    log=log,
                )
            )
            continue
        for spec in group:
            log(f"run {spec.run_id}")
            error = run_or_report(
                spec,
                data,
                out,
                preset=preset,
                sizes=sizes,
                checkpoint_every=checkpoint_every,
                device=device,
                num_threads=num_threads,
                n_jobs=n_jobs,
                progress=progress,
                adopt=adopt,
                allow_training=allow_training,
            )
            if error is None:
                outcome.trained.append(spec.run_id)
            else:
                outcome.failed[spec.run_id] = error
                log(f"run {spec.run_id} failed: {error}")
    return outcome


def run_or_report(
    spec: RunSpec, data: ConfigData, out: str | os.PathLike, **kwargs: Any
) -> str | None:
    """:func:`run_one`, with a failure written to ``error.json`` and returned, not raised."""
    try:
        run_one(spec, data, out, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the sweep
        return _fail(Path(out), spec, exc)
    return None


def _run_stacked(
    group: Sequence[RunSpec],
    data: ConfigData,
    out: Path,
    *,
    preset: str,
    sizes: EvaluationSizes,
    checkpoint_every: int,
    device: str,
    stack: int,
    n_jobs: int,
    progress: bool,
    log: Callable[[str], None],
) -> SweepOutcome:
    """The runs of one config on a GPU, K of the same model and steps trained as one."""
    from ..training.stacked import Run, train_stacked

    outcome = SweepOutcome()
    images = data.ground_truth.all_images()
    keys = list(dict.fromkeys((s.model, s.steps) for s in group))
    for model, steps in keys:
        same = [s for s in group if (s.model, s.steps) == (model, steps)]
        for start in range(0, len(same), stack):
            chunk = same[start : start + stack]
            log(f"stack of {len(chunk)}: {', '.join(s.run_id for s in chunk)}")
            runs = [
                Run(
                    s.model,
                    images,
                    seed=s.seed,
                    hparams=s.hparams,
                    dataset=data.dataset,
                    checkpoint_dir=run_dir(out, s.run_id) / CHECKPOINT_DIR,
                    name=s.run_id,
                )
                for s in chunk
            ]
            try:
                results = train_stacked(
                    runs,
                    steps=steps,
                    device=device,
                    checkpoint_every=min(checkpoint_every, steps),
                    keep_checkpoints=1,
                    progress=progress,
                )
            except Exception as exc:  # noqa: BLE001
                for s in chunk:
                    outcome.failed[s.run_id] = _fail(out, s, exc)
                log(f"stack failed: {exc}")
                continue
            for s, result in zip(chunk, results):
                try:
                    _done(
                        out,
                        s,
                        record_of(
                            s,
                            data,
                            result,
                            preset=preset,
                            sizes=sizes,
                            num_threads=None,
                            n_jobs=n_jobs,
                        ),
                    )
                except Exception as exc:  # noqa: BLE001
                    outcome.failed[s.run_id] = _fail(out, s, exc)
                else:
                    outcome.trained.append(s.run_id)
    return outcome


def loader(
    data: str,
    *,
    cache_dir: str | None = None,
    progress: bool = True,
    decoded_dir: str | os.PathLike | None = None,
) -> Callable[[str], ConfigData]:
    """``load(config)`` for the sweeps: the last config stays decoded (one copy in memory; with
    ``decoded_dir`` a memory map shared with other processes, see :func:`~.data.load_config`)."""
    cache: dict[str, ConfigData] = {}

    def load(config: str) -> ConfigData:
        if config not in cache:
            cache.clear()  # a whole dSprites config is 3 GB: keep one
            cache[config] = load_config(
                data, config, cache_dir=cache_dir, progress=progress, decoded_dir=decoded_dir
            )
        return cache[config]

    return load
