"""The benchmark harness's speed: the data path, runs per hour of the ``cpu`` preset, Ray's overhead.

Usage::

    python benchmarks/bench_benchmark.py --data perturbed-dsprites     # a real build
    python benchmarks/bench_benchmark.py                                # builds the smoke dataset

Three measurements, each two ways in one run (the machine may be shared):

1. **data path** — a config read through ``load_dataset`` and decoded into memory (images/s, after
   the one-off Parquet → Arrow preparation, timed apart) against what training consumes from the
   in-memory array (images/s of β-VAE steps on one thread); and a naive path that fetches and
   decodes each random batch of 64 from the ``datasets`` table per step, against gathering it from
   the decoded array. The data path must not be the bottleneck.
2. **runs per hour** of the ``cpu`` preset: a β-VAE's steps/s on one thread over ``--probe-steps``
   and one evaluation at the preset's metric sizes, projected to a whole run; on this machine's
   cores, one run per core.
3. **Ray** — the same ``--ray-runs`` smoke runs in-process and as Ray tasks on a local runtime
   (its start included): the wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perturbed_disentanglement.benchmark.data import load_config  # noqa: E402
from perturbed_disentanglement.benchmark.evaluation import evaluate_representation  # noqa: E402
from perturbed_disentanglement.benchmark.execute import loader, run_in_process  # noqa: E402
from perturbed_disentanglement.benchmark.plan import PRESETS, plan_runs  # noqa: E402
from perturbed_disentanglement.training.models import VAE  # noqa: E402
from perturbed_disentanglement.training.single import encode, train  # noqa: E402
from perturbed_disentanglement.util.png import decode_png_batch  # noqa: E402


def smoke_dataset(where: Path) -> Path:
    out = where / "perturbed-dsprites"
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "generation.build", "--smoke", "--no-progress"]
            + ["--out", str(out), "--workdir", str(where / "work")],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return out


def data_path(data: str, config: str, steps: int) -> dict:
    import datasets

    t = time.perf_counter()
    load_config(data, config, progress=False)  # prepares the Arrow cache once
    prepare = time.perf_counter() - t
    t = time.perf_counter()
    cd = load_config(data, config, progress=False)
    decode_s = time.perf_counter() - t
    n = cd.num_images
    images = cd.ground_truth.all_images()
    t = time.perf_counter()
    result = train(
        "beta_vae", images, dataset=cd.dataset, steps=steps, num_threads=1, progress=False
    )
    train_ips = steps * 64 / (time.perf_counter() - t)
    del result

    ds = datasets.load_dataset(data, config, split="train")
    raw = ds.cast_column("image", datasets.Image(decode=False)).with_format("arrow")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, n, 64) for _ in range(50)]
    t = time.perf_counter()
    for idx in batches:
        table = raw[np.sort(idx)]
        pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
        decode_png_batch(pngs, images.shape[1:])
    naive_ips = 50 * 64 / (time.perf_counter() - t)
    t = time.perf_counter()
    for idx in batches:
        images[idx]
    gather_ips = 50 * 64 / (time.perf_counter() - t)
    return {
        "images": n,
        "prepare_seconds": prepare,
        "decode_images_per_s": n / decode_s,
        "training_images_per_s_one_thread": train_ips,
        "decode_over_training": n / decode_s / train_ips,
        "naive_batch_images_per_s": naive_ips,
        "in_memory_batch_images_per_s": gather_ips,
        "in_memory_over_naive": gather_ips / naive_ips,
    }


def runs_per_hour(data: str, probe_steps: int) -> dict:
    preset = PRESETS["cpu"]
    cd = load_config(data, "perturbed", progress=False)
    t = time.perf_counter()
    train(
        "beta_vae",
        cd.ground_truth.all_images(),
        dataset=cd.dataset,
        steps=probe_steps,
        num_threads=1,
        progress=False,
    )
    steps_per_s = probe_steps / (time.perf_counter() - t)
    vae = VAE(cd.ground_truth.num_channels, cd.ground_truth.num_factors).eval()
    t = time.perf_counter()
    evaluate_representation(
        cd.ground_truth,
        lambda x: encode(vae, x, num_threads=1),
        cd.s,
        sizes=preset.sizes,
    )
    eval_s = time.perf_counter() - t
    run_s = preset.steps / steps_per_s + eval_s
    cores = os.cpu_count() or 1
    return {
        "steps": preset.steps,
        "steps_per_s_one_thread": steps_per_s,
        "evaluation_seconds": eval_s,
        "run_minutes": run_s / 60,
        "runs_per_hour_per_core": 3600 / run_s,
        "cores": cores,
        "runs_per_hour": cores * 3600 / run_s,
    }


def ray_overhead(data: str, runs: int, where: Path) -> dict:
    from perturbed_disentanglement.benchmark.ray_backend import run_with_ray

    preset = PRESETS["smoke"]
    specs = plan_runs(
        ["beta_vae"], ["perturbed"], list(range(runs)), dataset="dsprites", steps=preset.steps
    )
    common = dict(
        preset="smoke",
        sizes=preset.sizes,
        checkpoint_every=preset.checkpoint_every,
        num_threads=1,
        log=lambda *_: None,
    )
    load = loader(data, progress=False)
    load("perturbed")  # decoded before either clock starts
    t = time.perf_counter()
    run_in_process(specs, load, where / "in-process", progress=False, **common)
    in_process = time.perf_counter() - t
    t = time.perf_counter()
    run_with_ray(specs, load, where / "ray", **common)
    ray_s = time.perf_counter() - t
    return {
        "runs": runs,
        "in_process_s": in_process,
        "ray_s": ray_s,
        "ray_over": ray_s / in_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a dataset folder or Hub id (default: smoke)")
    parser.add_argument("--config", default="perturbed")
    parser.add_argument("--steps", type=int, default=100, help="training steps timed for (1)")
    parser.add_argument("--probe-steps", type=int, default=200, help="steps timed for (2)")
    parser.add_argument("--ray-runs", type=int, default=4, help="smoke runs timed for (3)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", default=None, help="also write every number here")
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="bench-benchmark-"))
    try:
        data = args.data or str(smoke_dataset(where))
        out = {"data": data, "data_path": data_path(data, args.config, args.steps)}
        d = out["data_path"]
        print(
            f"data path ({d['images']:,} images; Arrow preparation {d['prepare_seconds']:.1f} s "
            f"once): decode {d['decode_images_per_s']:,.0f} images/s vs training "
            f"{d['training_images_per_s_one_thread']:,.0f} images/s on one thread: "
            f"{d['decode_over_training']:.1f}× (decoded once per config, then reused); per-step "
            f"batches of 64 from the table {d['naive_batch_images_per_s']:,.0f} images/s vs from "
            f"the decoded array {d['in_memory_batch_images_per_s']:,.0f}: "
            f"{d['in_memory_over_naive']:.0f}×"
        )
        out["runs_per_hour"] = r = runs_per_hour(data, args.probe_steps)
        print(
            f"cpu preset: {r['steps']:,} steps at {r['steps_per_s_one_thread']:.2f} steps/s + "
            f"evaluation {r['evaluation_seconds']:.0f} s = {r['run_minutes']:.0f} min per run; "
            f"{r['runs_per_hour_per_core']:.2f} runs/hour per core, {r['runs_per_hour']:.2f} on "
            f"{r['cores']} cores"
        )
        if not args.skip_ray:
            out["ray"] = y = ray_overhead(data, args.ray_runs, where)
            print(
                f"ray: {y['runs']} smoke runs in-process {y['in_process_s']:.1f} s vs Ray "
                f"(local runtime, start included) {y['ray_s']:.1f} s: {y['ray_over']:.2f}×"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
