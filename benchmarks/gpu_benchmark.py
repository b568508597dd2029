"""The one-call GPU benchmark (run by ``benchmarks/gpu_benchmark.sh``): β-VAE on perturbed-dsprites.

In one call of at most 9 minutes on one large GPU it builds the dataset, reads its configs back
through the harness (``load_config``: ``datasets.load_dataset`` on the built folder, the real
artifact), trains β-VAE on ``original``, ``perturbed`` and ``noise`` with 5 seeds each as ONE
stacked (vmapped) model in bf16 autocast, scores every run and writes one harness record per run,
so ``python -m perturbed_disentanglement.benchmark --report-only --out DIR`` reads them.

Steps and their share of the default 480 s budget (``--budget``; the shell caps the wall time):

1. preflight (seconds): the modules it needs, the GPU, and the shipped dSprites reference that the
   full build reads (``perturbed_disentanglement/reference/shipped/dsprites/``); a clear message if not.
2. build (~1 min expected; measured and printed): ``python -m generation.build --dataset dsprites``
   (``--smoke``: ``generation.build --smoke``, which retrains a tiny reference; ``--data DIR``
   skips the build and reads an existing one). Verification is skipped (``--verify-build``).
3. load (~1 min expected): the three configs decoded into memory with ``load_config``. A process
   pool starts meanwhile and times one DCI + SAP fit on synthetic codes (the evaluation's cost).
4. warm-up (~15 s): the K = configs × seeds runs trained stacked for ``--warmup-steps`` steps,
   timed from the second host sync on (steady state), with a checkpoint at the end; run 0 is then
   scored once on the GPU to time the evaluation's GPU part.
5. training (the rest): the steps that fit, ``warm-up + floor((left − restart − evaluation −
   report − margin) × steps/s)``, resumed from the warm-up checkpoints (no step is wasted).
6. evaluation (estimated in step 4, ~1 min): per run on the GPU, in the main process, MIG on
   dlib's 10,000 points, FactorVAE score, active units, information levels and reconstruction;
   DCI and SAP (scikit-learn fits, the slow part) on a subset in the process pool, in parallel.
   The code is the harness's: ``evaluate_representation``'s pieces ``sample_codes`` and
   ``encoder_metrics`` here, ``classifier_metrics`` in the pool, on ``classifier_train`` /
   ``classifier_test`` points (``--fit-train``/``--fit-test``) rather than all of them.
7. report and export (~20 s): ``--report-only`` rendered into the results folder; with ``--export``
   (default ``$OUT``) the folder is packed as ``results.tar.gz`` beside ``gpu_benchmark.json``
   (timings, steps/s, images/s, MIG per config) and ``report.md``: the device returns at most 8
   files, two folders deep, so the records travel packed.

``--smoke`` runs the same path on the CPU in about a minute (tiny build, 2 seeds, a few steps,
small metric samples): the test ``tests/test_gpu_benchmark.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

START = time.perf_counter()  # the budget counts from here (before torch is imported)

# Light imports only at the top: the evaluation pool's spawned workers import this file again.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if TYPE_CHECKING:
    from perturbed_disentanglement.benchmark.evaluation import Codes, EvaluationSizes

MODEL = "beta_vae"
CONFIGS = ("original", "perturbed", "noise")
#: What the run needs (import name → package), and what only the report needs.
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "datasets": "datasets",
    "pyarrow": "pyarrow",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "joblib": "joblib",
    "filelock": "filelock",
}
OPTIONAL = {"matplotlib": "matplotlib", "scipy": "scipy"}
WHEELS_HINT = (
    "The GPU machine reaches no package registry: carry the missing packages as wheels. On a "
    "machine with network, in the repository root: `bash benchmarks/gpu_benchmark.sh "
    "--fetch-wheels` (downloads datasets, dill and multiprocess for Python 3.12 / manylinux "
    "x86-64 into out/wheels; add any other missing package to WHEEL_PACKAGES), then call "
    'run(command="bash benchmarks/gpu_benchmark.sh", carry=["out/wheels"], timeout_s=600): '
    "the script installs out/wheels/*.whl into /tmp/gpu-benchmark-site before it starts."
)
REFERENCE_HINT = (
    "The full build reads the shipped dSprites reference (reference.json, s.npy, "
    "model.safetensors in perturbed_disentanglement/reference/shipped/dsprites/), which this checkout "
    "does not hold yet (it is being trained: `python -m generation.reference --dataset "
    "dsprites`). Add it to the checkout (committed or untracked, it travels with the working "
    "tree), or pass --data DIR of an existing full build, or use --smoke."
)


# --- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    """What differs between the GPU run and the CPU smoke run."""

    device: str
    seeds: tuple[int, ...]
    warmup_steps: int
    max_steps: int
    budget: float  # seconds for the whole script
    report_reserve: float  # seconds kept for the report and the export
    margin: float  # seconds kept free at the end
    sizes: EvaluationSizes  # MIG on dlib's 10,000 points; DCI/SAP on classifier_train/_test
    reconstruction_points: int | None  # None: the harness's (execute.RECONSTRUCTION_POINTS)

    def points(self) -> int:
        """Grid points of the reconstruction error."""
        from perturbed_disentanglement.benchmark.execute import RECONSTRUCTION_POINTS

        return self.reconstruction_points or RECONSTRUCTION_POINTS


def default_mode(smoke: bool) -> Mode:
    """The GPU run's settings, or the CPU smoke run's (``EvaluationSizes`` is imported here: the
    top stays light, for the pool's spawned workers import this file again)."""
    from perturbed_disentanglement.benchmark.evaluation import EvaluationSizes

    if smoke:
        return Mode(
            device="cpu",
            seeds=(0, 1),
            warmup_steps=2,
            max_steps=4,
            budget=240.0,
            report_reserve=30.0,
            margin=5.0,
            sizes=EvaluationSizes(300, 150, 10, 5, 100, classifier_train=150, classifier_test=75),
            reconstruction_points=100,
        )
    return Mode(
        device="cuda",
        seeds=(0, 1, 2, 3, 4),
        warmup_steps=400,
        max_steps=300_000,  # dlib's steps: never more
        budget=480.0,
        report_reserve=30.0,
        margin=20.0,
        sizes=EvaluationSizes(
            10_000, 5_000, 2_000, 1_000, 10_000, classifier_train=1_000, classifier_test=500
        ),
        reconstruction_points=None,
    )


# --- pure pieces (unit-tested) ------------------------------------------------------------------
def missing_modules(modules: dict[str, str]) -> list[str]:
    """The packages of ``modules`` (import name → package) that cannot be imported here."""
    missing = []
    for name, package in modules.items():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            missing.append(package)
    return missing


def steady_rate(syncs: Sequence[tuple[int, float]], steps: int, wall: float) -> float:
    """Steps/s from the host syncs ``(step, time)`` after the first (which pays the start-up);
    the whole call's average when there are too few syncs."""
    if len(syncs) >= 3 and syncs[-1][1] > syncs[1][1]:
        return (syncs[-1][0] - syncs[1][0]) / (syncs[-1][1] - syncs[1][1])
    return steps / wall if wall > 0 else 0.0


def evaluation_estimate(runs: int, main_seconds: float, fit_seconds: float, workers: int) -> float:
    """Seconds to score ``runs`` runs: the GPU part one run after another in this process, the
    classifier fits in ``workers`` processes at the same time (in waves), plus a 30% margin on
    the fits and one run's GPU part before the first fit can start."""
    waves = math.ceil(runs / max(1, workers))
    return max(runs * main_seconds, main_seconds + waves * fit_seconds * 1.3)


def choose_steps(
    *,
    rate: float,
    seconds_left: float,
    restart: float,
    evaluation: float,
    reserve: float,
    warmup_steps: int,
    max_steps: int,
) -> tuple[int, float]:
    """Total steps (the warm-up's included) that fit in ``seconds_left``, and the seconds given
    to training: what is left after restarting the stack, the evaluation, the report and the
    margin (``reserve``), at 95% of the measured ``rate``; at least the warm-up, at most
    ``max_steps``."""
    train_seconds = max(0.0, seconds_left - restart - evaluation - reserve)
    extra = int(train_seconds * rate * 0.95)
    return max(warmup_steps, min(max_steps, warmup_steps + extra)), train_seconds


# --- the evaluation's worker side -------------------------------------------------------------
_THREAD_LIMITS: Any = None


def _worker_init() -> None:
    """One BLAS/OpenMP thread per worker (the pool already fills the cores), and a quiet exit
    on the time limit's SIGINT (the main process reports it)."""
    global _THREAD_LIMITS
    from threadpoolctl import threadpool_limits

    _THREAD_LIMITS = threadpool_limits(1)
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def timed_classifier_metrics(
    codes: Codes, sizes: EvaluationSizes, seed: int
) -> tuple[dict[str, float], float]:
    """The harness's ``classifier_metrics`` (DCI, SAP) of one run, and its CPU seconds (the
    evaluation's estimate and the record's seconds count them)."""
    from perturbed_disentanglement.benchmark.evaluation import classifier_metrics

    t0 = time.process_time()
    scores = classifier_metrics(codes, sizes, seed)
    return scores, time.process_time() - t0


def calibrate_fit(factor_sizes: Sequence[int], sizes: EvaluationSizes) -> float:
    """CPU seconds of one run's DCI + SAP fits on synthetic codes of the grid's factor sizes
    (the fits' cost hardly depends on the codes)."""
    from perturbed_disentanglement.benchmark.evaluation import Codes

    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        f = np.stack([rng.integers(0, s, n) for s in factor_sizes], axis=1)
        return f + rng.normal(0, 2, f.shape), f

    mu, f = sample(sizes.classifier_train or sizes.num_train)
    mu_t, f_t = sample(sizes.classifier_test or sizes.num_test)
    names = tuple(f"factor{k}" for k in range(len(factor_sizes)))
    codes = Codes(names, mu, np.zeros_like(mu), f, np.arange(len(f)), mu_t, f_t)
    return timed_classifier_metrics(codes, sizes, 0)[1]


# --- the script -------------------------------------------------------------------------------
class Clock:
    """Seconds since the start, against the budget; timestamped log lines."""

    def __init__(self, budget: float, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.budget = budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


class Summary:
    """``gpu_benchmark.json``: rewritten after every phase, so a killed run leaves what it did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "phases": {}}

    def phase(self, name: str, seconds: float, **extra: Any) -> None:
        self.data["phases"][name] = {"seconds": round(seconds, 2), **extra}
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


class SetupError(Exception):
    """Something the run needs is missing: the message says what and how to provide it."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="β-VAE on perturbed-dsprites original/perturbed/noise, stacked on one GPU, "
        "in one call; records in the benchmark harness's format.",
    )
    p.add_argument("--smoke", action="store_true", help="CPU, tiny build, 2 seeds, a few steps")
    p.add_argument("--data", help="an existing dataset folder (skips the build)")
    p.add_argument(
        "--workdir",
        default=str(ROOT / "out" / "gpu_benchmark"),
        help="build, datasets cache and checkpoints (default out/gpu_benchmark)",
    )
    p.add_argument("--out", help="results folder (default WORKDIR/results-<time>)")
    p.add_argument(
        "--export",
        default=os.environ.get("OUT") or None,
        help="folder for gpu_benchmark.json, results.tar.gz and report.md (default $OUT)",
    )
    p.add_argument("--budget", type=float, help="seconds for everything (GPU 480, smoke 240)")
    p.add_argument("--seeds", help="e.g. 0-4 (GPU default) or 0-9; smoke 0-1")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--steps", type=int, help="fixed total steps instead of the budget's")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--device", help="default: cuda (smoke: cpu)")
    p.add_argument("--precision", default="auto", help="auto (bf16 on a GPU), bf16, fp32")
    p.add_argument("--workers", type=int, help="processes for the DCI/SAP fits")
    p.add_argument("--fit-train", type=int, help="DCI/SAP training points (GPU 1,000)")
    p.add_argument("--fit-test", type=int, help="DCI/SAP test points (GPU 500)")
    p.add_argument("--verify-build", action="store_true", help="let the build verify every row")
    p.add_argument("--no-report", action="store_true")
    return p.parse_args(argv)


def resolve_mode(args: argparse.Namespace) -> Mode:
    """The mode's defaults with the command line's overrides."""
    from perturbed_disentanglement.benchmark.plan import parse_seeds

    base = default_mode(args.smoke)
    sizes = base.sizes
    if args.fit_train or args.fit_test:
        train = args.fit_train or sizes.classifier_train or sizes.num_train
        test = args.fit_test or sizes.classifier_test or sizes.num_test
        sizes = replace(
            sizes,
            classifier_train=min(train, sizes.num_train),
            classifier_test=min(test, sizes.num_test),
        )
    warmup = args.warmup_steps or base.warmup_steps
    max_steps = args.max_steps or base.max_steps
    if args.steps:
        max_steps, warmup = args.steps, min(warmup, args.steps)
    return Mode(
        device=args.device or base.device,
        seeds=tuple(parse_seeds(args.seeds)) if args.seeds else base.seeds,
        warmup_steps=warmup,
        max_steps=max_steps,
        budget=args.budget or base.budget,
        report_reserve=base.report_reserve,
        margin=base.margin,
        sizes=sizes,
        reconstruction_points=base.reconstruction_points,
    )


def preflight(args: argparse.Namespace, mode: Mode, clock: Clock, summary: Summary) -> None:
    """Modules, device and reference, before anything slow; SetupError with the remedy."""
    missing = missing_modules(REQUIRED)
    if missing:
        raise SetupError(f"missing Python packages: {', '.join(missing)}. {WHEELS_HINT}")
    absent = missing_modules(OPTIONAL)
    summary.data["missing_optional"] = absent
    if absent and not args.no_report:
        clock.log(f"no {', '.join(absent)}: the records are written, the report is skipped")
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "device": mode.device,
    }
    if mode.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SetupError(
                "no CUDA device is visible to torch; this script is for a GPU (use --smoke, or "
                "--device cpu to force the full run on the CPU)"
            )
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
        torch.backends.cudnn.benchmark = True
    summary.data["environment"] = env
    clock.log(f"environment: {json.dumps(env)}")
    if not args.data and not args.smoke:
        from perturbed_disentanglement.reference.stage import RECORD_FILE, SHIPPED_DIR

        if not (SHIPPED_DIR / "dsprites" / RECORD_FILE).is_file():
            raise SetupError(REFERENCE_HINT)


def build_dataset(args: argparse.Namespace, workdir: Path, clock: Clock) -> tuple[Path, float]:
    """Build the dataset with ``generation.build`` (or take ``--data``); its folder and seconds."""
    if args.data:
        clock.log(f"data: {args.data} (given; no build)")
        return Path(args.data), 0.0
    out = workdir / ("perturbed-dsprites-smoke" if args.smoke else "perturbed-dsprites")
    cmd = [sys.executable, "-m", "generation.build", "--no-progress"]
    cmd += ["--smoke"] if args.smoke else ["--dataset", "dsprites"]
    cmd += ["--out", str(out), "--workdir", str(workdir / "build-work")]
    if not args.verify_build:
        cmd.append("--no-verify")
    log = workdir / "build.log"
    clock.log(f"build: {' '.join(cmd[1:])} (log: {log})")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=max(60.0, clock.left() - 60.0),
        )
    seconds = time.perf_counter() - t0
    lines = log.read_text().splitlines()
    if proc.returncode != 0:
        print("\n".join(lines[-40:]))
        raise RuntimeError(f"the build failed (exit {proc.returncode}); see {log}")
    for line in lines:
        if line.strip().startswith(("time:", "total", "perturbed ", "noise ", "original ")):
            print("   " + line.strip())
    clock.log(f"build done in {seconds:.0f} s: {out}")
    return out, seconds


def load_configs(
    data: Path, configs: Sequence[str], cache: Path, clock: Clock, on_first: Callable[[Any], None]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Each config through the harness's ``load_config`` (``load_dataset`` + decoding)."""
    from perturbed_disentanglement.benchmark.data import load_config

    loaded, seconds = {}, {}
    for config in configs:
        t0 = time.perf_counter()
        loaded[config] = load_config(str(data), config, cache_dir=cache, progress=False)
        seconds[config] = time.perf_counter() - t0
        n = loaded[config].num_images
        clock.log(
            f"loaded {config}: {n:,} images, ε = {loaded[config].epsilon:g} in "
            f"{seconds[config]:.1f} s ({n / seconds[config]:,.0f} images/s)"
        )
        if len(loaded) == 1:
            on_first(loaded[config])
    return loaded, seconds


def gpu_part(
    result: Any, model: str, data: Any, seed: int, mode: Mode, num_threads: int | None
) -> tuple[dict[str, Any], Codes]:
    """One run's metrics that need its encoder (the harness's ``sample_codes`` and
    ``encoder_metrics``, and its reconstruction error), and the codes of its DCI/SAP fits (the
    classifiers' subset only: it is sent to the pool)."""
    from perturbed_disentanglement.benchmark.evaluation import (
        checked_encoder,
        encoder_metrics,
        sample_codes,
    )
    from perturbed_disentanglement.benchmark.execute import reconstruction_metric
    from perturbed_disentanglement.training.single import encode as encode_images
    from perturbed_disentanglement.training.zoo import model_spec

    vae = result.objective.vae.eval()
    gt, sizes = data.ground_truth, mode.sizes
    encode = checked_encoder(lambda x: encode_images(vae, x, num_threads=num_threads))
    codes = sample_codes(gt, encode, sizes, seed)
    metrics = encoder_metrics(
        gt,
        encode,
        data.s,
        codes,
        random_state=seed,
        sizes=sizes,
        stochastic=not model_spec(model).deterministic,
    )
    metrics["reconstruction"] = reconstruction_metric(vae, gt, seed, num_threads, mode.points())
    return metrics, codes.head(sizes.classifier_train, sizes.classifier_test)


def make_runs(model: str, loaded: dict[str, Any], seeds: Sequence[int], ckpt: Path) -> list[Any]:
    """One stacked run per (seed, config), in the harness's plan order; the 5 seeds of a config
    share one image array (held once on the device)."""
    from perturbed_disentanglement.training.stacked import Run

    dataset = next(iter(loaded.values())).dataset
    arrays = {c: d.ground_truth.all_images() for c, d in loaded.items()}
    return [
        Run(
            model,
            arrays[c],
            seed=s,
            dataset=dataset,
            checkpoint_dir=ckpt / f"{c}-seed{s}",
            name=f"{c}-seed{s}",
        )
        for s in seeds
        for c in loaded
    ]


def train(
    runs: list[Any],
    *,
    mode: Mode,
    args: argparse.Namespace,
    clock: Clock,
    summary: Summary,
    estimate_evaluation: Callable[[Any], float],
) -> list[Any]:
    """Warm up, choose the steps that fit, train on from the warm-up's checkpoints."""
    import torch

    from perturbed_disentanglement.training.stacked import train_stacked

    k, batch = len(runs), 64
    syncs: list[tuple[int, float]] = []
    t_call = time.perf_counter()
    warm = train_stacked(
        runs,
        steps=mode.warmup_steps,
        batch_size=batch,
        device=mode.device,
        precision=args.precision,
        checkpoint_every=mode.warmup_steps,
        keep_checkpoints=1,
        resume=False,
        progress=False,
        callback=lambda step, terms: syncs.append((step, time.perf_counter())),
    )
    t_end = time.perf_counter()
    rate = steady_rate(syncs, mode.warmup_steps, warm[0].wall_time)
    # the second call rebuilds the stack and reads the checkpoints, and writes them at its end
    before = syncs[0][1] - t_call - syncs[0][0] / rate if syncs and rate else 0.0
    restart = max(0.0, before) + max(0.0, t_end - (syncs[-1][1] if syncs else t_end))
    warm_info = {
        "steps": mode.warmup_steps,
        "steps_per_second": rate,
        "images_per_second": rate * batch * k,
        "precision": warm[0].precision,
        "restart_seconds": restart,
    }
    clock.log(
        f"warm-up: {mode.warmup_steps} steps of {k} stacked runs in {t_end - t_call:.1f} s; "
        f"steady {rate:.1f} steps/s = {rate * batch * k:,.0f} images/s "
        f"({rate * batch:,.0f} per run), precision {warm[0].precision}"
    )
    t0 = time.perf_counter()
    evaluation = estimate_evaluation(warm[0])
    warm_info["evaluation_estimate_seconds"] = evaluation
    train_seconds: float | None = None
    if args.steps:
        steps = args.steps
    else:
        steps, train_seconds = choose_steps(
            rate=rate,
            seconds_left=clock.left(),
            restart=restart,
            evaluation=evaluation,
            reserve=mode.report_reserve + mode.margin,
            warmup_steps=mode.warmup_steps,
            max_steps=mode.max_steps,
        )
    warm_info.update(chosen_steps=steps, training_seconds_planned=train_seconds)
    summary.phase("warmup", t_end - t_call + time.perf_counter() - t0, **warm_info)
    clock.log(
        f"evaluation estimated at {evaluation:.0f} s; {clock.left():.0f} s left → {steps:,} "
        f"steps in all ({steps - mode.warmup_steps:,} more"
        + (f", ~{train_seconds:.0f} s)" if train_seconds is not None else ", fixed by --steps)")
    )
    if steps == mode.warmup_steps:
        return warm
    last = [time.perf_counter()]

    def report(step: int, terms: list[dict[str, float]]) -> None:
        now = time.perf_counter()
        if now - last[0] >= 20 or step == steps:  # a line every 20 s
            last[0] = now
            loss = float(np.mean([t["loss"] for t in terms]))
            clock.log(f"step {step:,}/{steps:,}: mean loss {loss:.1f}")

    t0 = time.perf_counter()
    results = train_stacked(
        runs,
        steps=steps,
        batch_size=batch,
        device=mode.device,
        precision=args.precision,
        checkpoint_every=steps,
        keep_checkpoints=1,
        resume=True,
        progress=False,
        callback=report,
    )
    seconds = time.perf_counter() - t0
    r0 = results[0]
    trained = r0.steps - r0.start_step
    main_rate = trained / r0.wall_time if r0.wall_time else 0.0
    info: dict[str, Any] = {
        "steps": steps,
        "steps_trained_here": trained,
        "loop_seconds": r0.wall_time,
        "steps_per_second": main_rate,
        "images_per_second": main_rate * batch * k,
        "images_per_second_per_run": main_rate * batch,
    }
    if torch.cuda.is_available() and mode.device.startswith("cuda"):
        info["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    summary.phase("train", seconds, **info)
    clock.log(
        f"trained {steps:,} steps ({trained:,} after the warm-up) in {seconds:.0f} s: "
        f"{main_rate:.1f} steps/s, {main_rate * batch * k:,.0f} images/s for {k} runs"
    )
    return results


def record_of(
    spec: Any,
    data: Any,
    result: Any,
    metrics: dict[str, Any],
    *,
    preset: str,
    mode: Mode,
    seconds: float,
    warmup: dict[str, Any],
    k: int,
) -> dict[str, Any]:
    """The harness's record (``execute.assemble_record``), with the stack's fields and the
    reconstruction's points added."""
    from perturbed_disentanglement.benchmark.execute import assemble_record

    record = assemble_record(
        spec, data, result, metrics, preset=preset, sizes=mode.sizes, seconds=seconds
    )
    rate = record["training"]["steps_per_second"]
    record["training"].update(
        stacked_runs=k,
        stack_images_per_second=rate * spec.batch_size * k if rate else None,
        warmup_steps=warmup.get("steps"),
        warmup_steps_per_second=warmup.get("steps_per_second"),
    )
    record["evaluation"]["reconstruction_points"] = mode.points()
    return record


def evaluate_all(
    specs: list[Any],
    results: list[Any],
    loaded: dict[str, Any],
    pool: ProcessPoolExecutor,
    *,
    out: Path,
    mode: Mode,
    preset: str,
    warmup: dict[str, Any],
    num_threads: int | None,
    clock: Clock,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Score every run (GPU part here, fits in the pool) and write its record."""
    from perturbed_disentanglement.benchmark.evaluation import METRIC_ORDER
    from perturbed_disentanglement.benchmark.records import run_dir, write_record
    from perturbed_disentanglement.util.atomic import write_json_atomic

    pending: list[tuple[Any, Any, dict[str, Any], float, Future]] = []
    failed: dict[str, str] = {}
    for spec, result in zip(specs, results):
        t0 = time.perf_counter()
        try:
            metrics, codes = gpu_part(
                result, spec.model, loaded[spec.config], spec.seed, mode, num_threads
            )
        except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
            failed[spec.run_id] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        future = pool.submit(timed_classifier_metrics, codes, mode.sizes, spec.seed)
        pending.append((spec, result, metrics, time.perf_counter() - t0, future))
    clock.log(f"GPU part of {len(pending)} evaluation(s) done; waiting for the DCI/SAP fits")
    records = []
    for spec, result, metrics, seconds, future in pending:
        try:
            fitted, cpu = future.result()
            scores = {**metrics, **fitted}
            metrics = {k: scores[k] for k in (*METRIC_ORDER, "reconstruction")}  # the harness's
            record = record_of(
                spec,
                loaded[spec.config],
                result,
                metrics,
                preset=preset,
                mode=mode,
                seconds=seconds + cpu,
                warmup=warmup,
                k=len(specs),
            )
            write_record(out, record)
            records.append(record)
        except Exception as exc:  # noqa: BLE001
            failed[spec.run_id] = f"{type(exc).__name__}: {exc}"
            write_json_atomic(
                run_dir(out, spec.run_id) / "error.json",
                {"run_id": spec.run_id, "error": failed[spec.run_id]},
            )
    return records, failed


def mig_table(records: list[dict[str, Any]], configs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """MIG mean ± sd over seeds per config (the headline; the report has the rest)."""
    table = {}
    for config in configs:
        values = [r["metrics"]["mig"] for r in records if r["data"]["config"] == config]
        if values:
            table[config] = {
                "n": len(values),
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "values": values,
            }
    return table


def render_report(out: Path, data: Path, cache: Path, clock: Clock) -> Path | None:
    """``--report-only`` on the results folder, as a user would run it (in this process)."""
    from perturbed_disentanglement.benchmark.__main__ import main as benchmark_main

    code = benchmark_main(
        ["--report-only", "--out", str(out), "--data", str(data), "--cache-dir", str(cache)]
    )
    report = out / "report.md"
    if code != 0 or not report.exists():
        clock.log(f"the report was not written (exit {code})")
        return None
    return report


def export(args: argparse.Namespace, summary: Summary, clock: Clock) -> None:
    """Pack whatever the run left (also after a failure or the time limit) into ``--export``:
    the device returns at most 8 files, two folders deep, so the records travel as one archive."""
    if not args.export:
        return
    target = Path(args.export)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    out = Path(summary.data.get("results") or "")
    if summary.data.get("results") and (out / "runs").is_dir():
        with tarfile.open(target / "results.tar.gz", "w:gz") as tar:
            tar.add(out, arcname="results")
        written.append("results.tar.gz")
        if (out / "report.md").is_file():
            shutil.copyfile(out / "report.md", target / "report.md")
            written.append("report.md")
    build_log = Path(args.workdir) / "build.log"
    if build_log.is_file() and not args.data:
        shutil.copyfile(build_log, target / "build.log")
        written.append("build.log")
    summary.data["exported"] = written
    clock.log(
        f"exported {', '.join(written) or 'nothing'} to {target}"
        + (
            " (tar xzf results.tar.gz; python -m perturbed_disentanglement.benchmark "
            "--report-only --out results)"
            if "results.tar.gz" in written
            else ""
        )
    )


def run(args: argparse.Namespace, clock: Clock, summary: Summary, mode: Mode) -> int:
    """Every step in order; the exit code."""
    t0 = time.perf_counter()
    preflight(args, mode, clock, summary)
    import torch

    from perturbed_disentanglement.benchmark.plan import parse_configs, plan_runs
    from perturbed_disentanglement.benchmark.records import open_results, results_identity

    configs = parse_configs(args.configs)
    if args.smoke:
        torch.set_num_threads(1)  # tiny convolutions, a shared CPU
    num_threads = 1 if args.smoke else None
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "hf-cache"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else workdir / f"results-{stamp}"
    ckpt = workdir / f"checkpoints-{stamp}"
    summary.data.update(
        mode=asdict(mode), configs=configs, model=MODEL, results=str(out), budget=mode.budget
    )
    summary.phase("preflight", time.perf_counter() - t0)

    data, seconds = build_dataset(args, workdir, clock)
    summary.phase("build", seconds, data=str(data), built=not args.data)

    cpu = os.cpu_count() or 1
    runs_k = len(configs) * len(mode.seeds)
    # one core left to this process (it feeds the GPU) where there are many
    workers = args.workers or max(1, min(runs_k, cpu - 1 if cpu > 4 else cpu))
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
    calibration: list[Future] = []

    def calibrate(first: Any) -> None:
        factor_sizes = [n for n in first.ground_truth.factor_sizes if n >= 2]
        calibration.append(pool.submit(calibrate_fit, factor_sizes, mode.sizes))

    try:
        t0 = time.perf_counter()
        loaded, load_seconds = load_configs(data, configs, cache, clock, calibrate)
        summary.phase("load", time.perf_counter() - t0, per_config=load_seconds)
        first = next(iter(loaded.values()))
        open_results(out, results_identity(str(data), first.dataset))
        runs = make_runs(MODEL, loaded, mode.seeds, ckpt)
        k = len(runs)
        clock.log(
            f"{k} runs ({MODEL} × {', '.join(configs)} × seeds {list(mode.seeds)}) stacked on "
            f"{mode.device}; DCI/SAP fits on {workers} worker process(es)"
        )

        def estimate(warm_result: Any) -> float:
            t = time.perf_counter()
            gpu_part(warm_result, MODEL, first, 0, mode, num_threads)
            main_seconds = time.perf_counter() - t
            fit_seconds = calibration[0].result()
            estimate = evaluation_estimate(k, main_seconds, fit_seconds, workers)
            summary.data["evaluation_timing"] = {
                "gpu_part_seconds_per_run": main_seconds,
                "fit_cpu_seconds_per_run": fit_seconds,
                "workers": workers,
                "estimate_seconds": estimate,
            }
            clock.log(
                f"evaluation of one run: GPU part {main_seconds:.1f} s, DCI+SAP fits "
                f"{fit_seconds:.1f} CPU s → {k} runs ≈ {estimate:.0f} s"
            )
            return estimate

        results = train(
            runs, mode=mode, args=args, clock=clock, summary=summary, estimate_evaluation=estimate
        )
        steps = results[0].steps
        warm = summary.data["phases"]["warmup"]
        specs = plan_runs([MODEL], configs, mode.seeds, dataset=first.dataset, steps=steps)
        specs_by_key = {(s.config, s.seed): s for s in specs}
        ordered = [specs_by_key[(c, s)] for s in mode.seeds for c in configs]

        t0 = time.perf_counter()
        preset = "gpu_benchmark_smoke" if args.smoke else "gpu_benchmark"
        records, failed = evaluate_all(
            ordered,
            results,
            loaded,
            pool,
            out=out,
            mode=mode,
            preset=preset,
            warmup=warm,
            num_threads=num_threads,
            clock=clock,
        )
        summary.phase("evaluate", time.perf_counter() - t0, records=len(records), failed=failed)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    table = mig_table(records, configs)
    summary.data["mig"] = table
    summary.data["records"] = [r["run_id"] for r in records]
    clock.log(f"{len(records)} record(s) in {out}; {len(failed)} failed")
    for config, row in table.items():
        sd = f" ± {row['sd']:.3f}" if row["sd"] is not None else ""
        clock.log(f"  MIG {config:9s} {row['mean']:.3f}{sd} ({row['n']} seeds)")
    train_info = summary.data["phases"].get("train") or summary.data["phases"]["warmup"]
    clock.log(
        f"speed: {train_info['steps_per_second']:.1f} steps/s, "
        f"{train_info['images_per_second']:,.0f} images/s ({k} runs × batch 64)"
    )
    summary.data["steps_per_second"] = train_info["steps_per_second"]
    summary.data["images_per_second"] = train_info["images_per_second"]
    summary.data["steps"] = steps

    report = None
    t0 = time.perf_counter()
    if records and not args.no_report and not summary.data.get("missing_optional"):
        try:
            report = render_report(out, data, cache, clock)
        except Exception as exc:  # noqa: BLE001 - the records stand without the report
            traceback.print_exc()
            clock.log(f"report failed: {type(exc).__name__}: {exc}")
    summary.phase("report", time.perf_counter() - t0, report=str(report) if report else None)
    return 1 if failed or not records else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = resolve_mode(args)
    clock = Clock(mode.budget, START)
    target = Path(args.export) if args.export else Path(args.workdir)
    summary = Summary(target / "gpu_benchmark.json")
    clock.log(
        f"gpu_benchmark{' --smoke' if args.smoke else ''}: budget {mode.budget:.0f} s, "
        f"summary {summary.path}"
    )
    try:
        code = run(args, clock, summary, mode)
        summary.data["status"] = "ok" if code == 0 else "some runs failed"
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        summary.data["status"] = f"setup error: {exc}"
        code = 2
    except KeyboardInterrupt:
        print("interrupted (the time limit?): the summary says how far it got", file=sys.stderr)
        summary.data["status"] = "interrupted"
        code = 130
    except Exception as exc:  # noqa: BLE001 - leave the summary, then fail
        traceback.print_exc()
        summary.data["status"] = f"error: {type(exc).__name__}: {exc}"
        code = 1
    try:
        export(args, summary, clock)
    except Exception as exc:  # noqa: BLE001 - the summary still gets written
        summary.data["export_error"] = f"{type(exc).__name__}: {exc}"
    summary.data["total_seconds"] = round(clock.elapsed(), 1)
    summary.write()
    clock.log(f"done ({summary.data['status']}) in {clock.elapsed():.0f} s; {summary.path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
