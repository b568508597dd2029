"""Training images/s of K models stacked into one (``stacked.train_stacked``) against the same K runs
trained one by one (``training.train``), in one process so that the printed ratio is robust to a
noisy machine.

    python benchmarks/bench_stacked.py                      # K=4 β-VAEs, 5 steps, batch 64, CPU
    python benchmarks/bench_stacked.py --model factor_vae --k 4 --steps 5 --threads 1
    python benchmarks/bench_stacked.py --strategy vmap      # the GPU's way, on the CPU
    python benchmarks/bench_stacked.py --device cuda --k 30 --steps 100 --precision auto

Synthetic uint8 images (the cost of a step does not depend on their content). Both ways are warmed
up first, then measured in alternating rounds; images/s counts every model's images, over the
training loop only (``TrainResult.wall_time``; model construction excluded), best round of
``--repeats``. The helpers are shared with ``benchmarks/device_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from perturbed_disentanglement.training import single as training
from perturbed_disentanglement.training.stacked import Run, train_stacked

# Hyperparameters that differ between the K runs (a stack of one grid's configurations).
GRID = {
    "ae": ("", ()),
    "beta_vae": ("beta", (1.0, 2.0, 4.0, 6.0, 8.0, 16.0)),
    "beta_tcvae": ("beta", (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)),
    "factor_vae": ("gamma", (10.0, 20.0, 30.0, 40.0, 50.0, 100.0)),
    "dip_vae_i": ("lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)),
    "dip_vae_ii": ("lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)),
}


def synthetic_images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``n`` random binary-ish uint8 images ``[n, 64, 64, C]`` (dSprites-like values 0/255)."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 2, (n, 64, 64, channels), generator=g, dtype=torch.uint8) * 255
    ).numpy()


def make_runs(model: str, k: int, images: np.ndarray) -> list[Run]:
    """K runs of ``model``: seeds 0..K-1 crossed with the literature grid of its hyperparameter."""
    name, values = GRID[model]
    return [
        Run(model, images, seed=i, hparams={name: values[i % len(values)]} if name else None)
        for i in range(k)
    ]


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_stacked(
    runs: list[Run],
    steps: int,
    batch_size: int,
    device: str,
    precision: str,
    strategy: str = "auto",
) -> dict:
    """Images/s of all K runs trained as one stack."""
    sync(device)
    t0 = time.perf_counter()
    results = train_stacked(
        runs,
        steps=steps,
        batch_size=batch_size,
        device=device,
        precision=precision,
        strategy=strategy,
        progress=False,
    )
    sync(device)
    total = time.perf_counter() - t0
    loop = results[0].wall_time
    images = len(runs) * steps * batch_size
    return {"images_per_s": images / loop, "loop_s": loop, "total_s": total}


def time_one_by_one(
    runs: list[Run], steps: int, batch_size: int, device: str, precision: str
) -> dict:
    """Images/s of the K runs trained one after the other with ``training.train``."""
    sync(device)
    t0 = time.perf_counter()
    loop = 0.0
    for run in runs:
        result = training.train(
            run.model,
            run.images,
            hparams=run.hparams,
            seed=run.seed,
            steps=steps,
            batch_size=batch_size,
            device=device,
            precision=precision,
            progress=False,
        )
        loop += result.wall_time
    sync(device)
    total = time.perf_counter() - t0
    images = len(runs) * steps * batch_size
    return {"images_per_s": images / loop, "loop_s": loop, "total_s": total}


def compare(
    model: str,
    k: int,
    steps: int,
    batch_size: int,
    device: str,
    precision: str,
    repeats: int,
    images: np.ndarray,
    one_by_one_runs: int | None = None,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Best-of-``repeats`` images/s of both ways (alternating), after one short warm-up of each.

    ``one_by_one_runs`` caps how many of the K runs are timed one by one: their rate does not
    depend on K (each run is alone on the device), so timing a few of them measures it.
    """
    runs = make_runs(model, k, images)
    alone = runs[: one_by_one_runs or k]
    time_stacked(runs, 2, batch_size, device, precision, strategy)
    time_one_by_one(alone[:1], 2, batch_size, device, precision)
    best_stacked: dict | None = None
    best_alone: dict | None = None
    for _ in range(repeats):
        s = time_stacked(runs, steps, batch_size, device, precision, strategy)
        a = time_one_by_one(alone, steps, batch_size, device, precision)
        if best_stacked is None or s["images_per_s"] > best_stacked["images_per_s"]:
            best_stacked = s
        if best_alone is None or a["images_per_s"] > best_alone["images_per_s"]:
            best_alone = a
    assert best_stacked is not None and best_alone is not None
    return {
        "model": model,
        "k": k,
        "steps": steps,
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "strategy": strategy,
        "stacked": best_stacked,
        "one_by_one": {**best_alone, "runs_timed": len(alone)},
        "speedup": best_stacked["images_per_s"] / best_alone["images_per_s"],
    }


def describe(row: dict[str, Any]) -> str:
    return (
        f"{row['model']:>10s} K={row['k']:<3d} {row['precision']:>5s}  stacked "
        f"({row['strategy']}) "
        f"{row['stacked']['images_per_s']:9.1f} img/s   one-by-one "
        f"{row['one_by_one']['images_per_s']:9.1f} img/s   ratio {row['speedup']:.2f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="beta_vae", choices=sorted(GRID))
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=2048, help="size of the synthetic source")
    parser.add_argument("--strategy", default="auto", choices=("auto", "vmap", "loop"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images = synthetic_images(args.images)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"load average {load:.1f} (a shared CPU: compare the two ways, not absolute numbers)"
    )
    row = compare(
        args.model,
        args.k,
        args.steps,
        args.batch_size,
        args.device,
        args.precision,
        args.repeats,
        images,
        strategy=args.strategy,
    )
    row["load_average"] = load
    print(describe(row))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
