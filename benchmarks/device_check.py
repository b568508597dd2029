"""The prepared GPU check of stacked training (run by ``benchmarks/device_check.sh``).

Sections, each guarded (a failure is recorded and the next section runs) and skipped once the time
budget is spent:

1. ``equivalence``: K=3 FactorVAE runs (different seeds and γ) trained stacked and one by one in
   true fp32 (TF32 off) on the device; how far the weights' updates differ (relative) and the
   largest weight difference. Expect ~1e-5 relative, as on the CPU.
2. ``stacking``: images/s of K = 1, 10, 30 stacked runs against the same runs one by one
   (``training.train``; at most 3 of them are timed: alone, a run's speed does not depend on K),
   for β-VAE and FactorVAE, at the default precision ("auto": bf16 autocast on a GPU).
3. ``precision``: images/s of the default ("auto") path against plain fp32, one run alone and a
   stack of 30.
4. ``encoding``: whole-grid encoding (737,280 images, dSprites' size) with ``training.encode``
   (one model) and ``stacked.encode_stacked`` (10 models at once), fp32 and auto; images/s counts
   model × image encodings.

Timings synchronise the device before and after (``TrainResult.wall_time`` does it at the end of
the loop); data lives on the device for stacked runs, as in production. ``--smoke`` runs tiny sizes
on the CPU to check that the script works. Results go to ``$OUT/device_check.json`` when ``OUT`` is
set (else ``out/device_check.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stacked import compare, describe, make_runs, sync, synthetic_images  # noqa: E402

from perturbed_disentanglement.training import single as training  # noqa: E402
from perturbed_disentanglement.training.stacked import encode_stacked, train_stacked  # noqa: E402

DSPRITES_GRID = 737_280


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """TF32 off for convolutions and matmuls (PyTorch's default lets cuDNN convs use TF32)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def update_mismatch(initial: torch.nn.Module, a: torch.nn.Module, b: torch.nn.Module) -> float:
    with torch.no_grad():
        da = torch.cat(
            [(p - q.to(p)).flatten() for p, q in zip(a.parameters(), initial.parameters())]
        )
        db = torch.cat(
            [(p - q.to(p)).flatten() for p, q in zip(b.parameters(), initial.parameters())]
        )
        return float((da - db.to(da)).norm() / db.norm())


@contextlib.contextmanager
def perturbed_initial_weights(relative: float = 1e-7) -> Iterator[None]:
    """Make ``training.train`` start from weights × (1 + 1e-7·ε): the run's own rounding noise."""
    original = training.build_objective

    def perturbed(*args: Any) -> torch.nn.Module:
        objective = original(*args)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in objective.parameters():
                p.mul_(1 + relative * torch.randn(p.shape, generator=g))
        return objective

    training.build_objective = perturbed
    try:
        yield
    finally:
        training.build_objective = original


def equivalence(cfg: dict[str, Any]) -> dict[str, Any]:
    """Stacked vs alone, next to alone vs alone from 1-ulp-perturbed weights (the noise floor:
    how much this run amplifies rounding at all; a stacked mismatch near it is rounding)."""
    from perturbed_disentanglement.training.zoo import build_objective

    images = synthetic_images(cfg["source"], seed=1)
    runs = make_runs("factor_vae", 3, images)
    steps, batch = cfg["equivalence_steps"], cfg["batch_size"]
    with true_fp32():
        stacked = train_stacked(
            runs,
            steps=steps,
            batch_size=batch,
            device=cfg["device"],
            precision="fp32",
            strategy="vmap",
            progress=False,
        )
        rows = []
        for run, result in zip(runs, stacked):

            def alone_run(run: Any = run) -> training.TrainResult:
                return training.train(
                    run.model,
                    run.images,
                    hparams=run.hparams,
                    seed=run.seed,
                    steps=steps,
                    batch_size=batch,
                    device=cfg["device"],
                    precision="fp32",
                    progress=False,
                )

            alone = alone_run()
            with perturbed_initial_weights():
                control = alone_run()
            initial = build_objective(run.model, alone.hparams, 1, alone.latent_dim, run.seed)
            with torch.no_grad():
                largest = max(
                    float((p - q).abs().max())
                    for p, q in zip(result.objective.parameters(), alone.objective.parameters())
                )
            rows.append(
                {
                    "seed": run.seed,
                    "hparams": alone.hparams,
                    "update_mismatch_relative": update_mismatch(
                        initial, result.objective, alone.objective
                    ),
                    "max_abs_weight_diff": largest,
                    "noise_floor_relative": update_mismatch(
                        initial, control.objective, alone.objective
                    ),
                    "final_loss_stacked": result.final_loss,
                    "final_loss_alone": alone.final_loss,
                }
            )
    for row in rows:
        print(
            f"  seed {row['seed']} {row['hparams']}: updates differ by "
            f"{row['update_mismatch_relative']:.2e} relative, weights by ≤ "
            f"{row['max_abs_weight_diff']:.2e} (noise floor: alone vs alone from weights "
            f"perturbed by 1e-7 relative differ by {row['noise_floor_relative']:.2e})"
        )
    return {"steps": steps, "runs": rows}


def stacking(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    images = synthetic_images(cfg["source"], seed=2)
    rows = []
    for model in cfg["models"]:
        for k in cfg["ks"]:
            row = compare(
                model,
                k,
                cfg["steps"],
                cfg["batch_size"],
                cfg["device"],
                "auto",
                cfg["repeats"],
                images,
                one_by_one_runs=min(k, 3),
                strategy="vmap",
            )
            print("  " + describe(row))
            rows.append(row)
    return rows


def precision(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    images = synthetic_images(cfg["source"], seed=3)
    rows = []
    for k in (1, max(cfg["ks"])):
        for prec in ("auto", "fp32"):
            row = compare(
                "beta_vae",
                k,
                cfg["steps"],
                cfg["batch_size"],
                cfg["device"],
                prec,
                cfg["repeats"],
                images,
                one_by_one_runs=1,
                strategy="vmap",
            )
            print("  " + describe(row))
            rows.append(row)
    return rows


def encoding(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    from perturbed_disentanglement.training.zoo import build_objective

    n = cfg["grid"]
    # 4,096 distinct random images tiled to the grid's size (content does not change the cost)
    grid = np.resize(synthetic_images(min(n, 4096), seed=4), (n, 64, 64, 1))
    k = cfg["encode_k"]
    models = [
        build_objective("beta_vae", {"beta": 1.0}, 1, 5, s).to(cfg["device"]) for s in range(k)
    ]
    rows = []
    for prec in ("fp32", "auto"):
        training.encode(models[0], grid[:1024], precision=prec)  # warm-up
        sync(cfg["device"])
        t0 = time.perf_counter()
        training.encode(models[0], grid, precision=prec)
        sync(cfg["device"])
        one = time.perf_counter() - t0
        encode_stacked(models, grid[:1024], precision=prec)
        sync(cfg["device"])
        t0 = time.perf_counter()
        encode_stacked(models, grid, precision=prec)
        sync(cfg["device"])
        many = time.perf_counter() - t0
        row = {
            "precision": prec,
            "images": n,
            "encode_one_model_s": one,
            "encode_one_model_images_per_s": n / one,
            "encode_stacked_k": k,
            "encode_stacked_s": many,
            "encode_stacked_model_images_per_s": n * k / many,
            "speedup_vs_k_single_encodes": (one * k) / many,
        }
        print(
            f"  encode {n} images, {prec}: one model {n / one:,.0f} img/s ({one:.1f} s); "
            f"{k} stacked {n * k / many:,.0f} model·img/s ({many:.1f} s); "
            f"{row['speedup_vs_k_single_encodes']:.2f}× vs {k} single encodes"
        )
        rows.append(row)
    return rows


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description="GPU check of stacked training")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu: smoke)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later sections skip")
    parser.add_argument("--out", default=None, help="JSON path (default $OUT/device_check.json)")
    args = parser.parse_args()

    device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        torch.set_num_threads(1)  # tiny convolutions; a shared CPU
        cfg = {
            "ks": (1, 2),
            "models": ("beta_vae", "factor_vae"),
            "steps": 2,
            "repeats": 1,
            "batch_size": 8,
            "source": 64,
            "equivalence_steps": 3,
            "grid": 256,
            "encode_k": 2,
        }
    else:
        cfg = {
            "ks": (1, 10, 30),
            "models": ("beta_vae", "factor_vae"),
            "steps": 60,
            "repeats": 1,
            "batch_size": 64,
            "source": 16384,
            "equivalence_steps": 20,
            "grid": DSPRITES_GRID,
            "encode_k": 10,
        }
    cfg["device"] = device
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # both ways alike; warm-ups absorb the tuning

    out_dir = os.environ.get("OUT")
    path = Path(args.out) if args.out else Path(out_dir or "out") / "device_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"environment": environment(device), "config": dict(cfg)}
    print(json.dumps(report["environment"]))
    start = time.perf_counter()
    sections: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("equivalence", equivalence),
        ("stacking", stacking),
        ("precision", precision),
        ("encoding", encoding),
    ]
    failed = False
    for name, section in sections:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            report[name] = {"skipped": f"time budget spent ({elapsed:.0f} s > {args.budget:.0f} s)"}
            print(f"[{name}] skipped: time budget spent")
            continue
        print(f"[{name}] (at {elapsed:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            report[name] = {"result": section(cfg), "seconds": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - record and carry on with the next section
            failed = True
            traceback.print_exc()
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        with open(path, "w", encoding="utf-8") as f:  # rewritten after each section
            json.dump(report, f, indent=1, default=str)
    report["total_seconds"] = time.perf_counter() - start
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"done in {report['total_seconds']:.0f} s; results in {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
