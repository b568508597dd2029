"""Training and encoding throughput: our default path against a plain fp32 PyTorch loop.

Everything runs in ONE process and the variants are interleaved round by round, so that the load of
other processes on a shared machine hits all of them alike; the script prints per-round ratios and
their spread as the noise estimate. Variants (same architecture, batch 64, same data):

- ``plain``: the textbook loop: numpy fancy-index gather, ``loss.backward()``, ``Adam.step()``,
  contiguous fp32, torch's default thread count;
- ``plain-1t``: the same loop with one thread;
- ``ours-fp32``: ``train(precision="fp32")`` (the exact reference mode) at the probed thread count;
- ``ours``: ``train(precision="auto", probe=True)``'s path: on the CPU fp32 at the probed thread count.

Then: how close ``auto`` and ``bf16`` stay to the fp32 loss trajectory, and encoding throughput on
a large dSprites-like array (extrapolated to the 737,280 images of the dSprites grid).

    .venv/bin/python benchmarks/bench_training.py            # about 5 minutes on 2 busy cores
    .venv/bin/python benchmarks/bench_training.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from perturbed_disentanglement.training.batches import BatchStream, images_to_input
from perturbed_disentanglement.training.single import (
    encode,
    make_optimizers,
    network_autocast,
    probe_threads,
    resolve_precision,
    train,
)
from perturbed_disentanglement.training.zoo import build_objective, hyperparameters

DSPRITES_GRID = 737_280


def dsprites_like(n: int, seed: int = 0) -> np.ndarray:
    """Binary 0/255 images of one axis-aligned rectangle or ellipse each (dSprites-like sparsity)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 64, 64, 1), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    chunk = 4096
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cy, cx = rng.uniform(16, 48, (2, m, 1, 1))
        hy, hx = rng.uniform(5, 13, (2, m, 1, 1))
        ellipse = rng.random((m, 1, 1)) < 0.5
        dy, dx = (yy - cy) / hy, (xx - cx) / hx
        mask = np.where(ellipse, dy**2 + dx**2 <= 1, (np.abs(dy) <= 1) & (np.abs(dx) <= 1))
        out[start : start + m, :, :, 0] = mask.astype(np.uint8) * 255
    return out


def plain_loop(model: str, images: np.ndarray, steps: int, threads: int, seed: int = 0) -> float:
    """Seconds for ``steps`` steps of a textbook fp32 PyTorch loop over the same objective."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        objective = build_objective(model, hyperparameters(model), 1, 5, seed)
        vae_opt = torch.optim.Adam(objective.vae_parameters(), lr=1e-4)
        disc = objective.discriminator_parameters()
        disc_opt = torch.optim.Adam(disc, lr=1e-4, betas=(0.5, 0.9)) if disc else None
        stream = BatchStream(seed, len(images), 64, 5)
        for _ in range(steps):
            batch = stream.next()
            x = torch.from_numpy(images[batch.indices.numpy()]).permute(0, 3, 1, 2).float() / 255
            terms = objective(x, batch.noise, batch.permutations)
            vae_opt.zero_grad()
            if disc_opt is not None:
                disc_opt.zero_grad()
                terms["loss"].backward(retain_graph=True)
                for p in disc:  # the VAE loss must not train the discriminator
                    p.grad = None
                terms["discriminator_loss"].backward()
                disc_opt.step()
            else:
                terms["loss"].backward()
            vae_opt.step()
            terms["loss"].item()
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)


def variant_loop(
    model: str,
    images: np.ndarray,
    steps: int,
    threads: int,
    *,
    channels_last: bool = False,
    autocast: torch.dtype | None = None,
    compiled: bool = False,
) -> float:
    """Seconds for ``steps`` of our step with one option changed (the measured alternatives)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        objective = build_objective(model, hyperparameters(model), 1, 5, 0)
        if channels_last:
            objective = objective.to(memory_format=torch.channels_last)
        optimizers = make_optimizers(objective)
        forward = torch.compile(objective) if compiled else objective
        source = torch.from_numpy(images)
        stream = BatchStream(0, len(images), 64, 5)
        for _ in range(steps):
            batch = stream.next()
            x = images_to_input(source.index_select(0, batch.indices))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizers.vae.zero_grad()
            with network_autocast(objective, "cpu", autocast):
                terms = forward(x, batch.noise, batch.permutations)
            terms["loss"].backward(inputs=objective.vae_parameters())
            optimizers.vae.step()
            terms["loss"].item()
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)


def ours(model: str, images: np.ndarray, steps: int, threads: int, precision: str) -> tuple:
    t0 = time.perf_counter()
    result = train(
        model, images, steps=steps, precision=precision, num_threads=threads, progress=False
    )
    return time.perf_counter() - t0, result.data_fraction


def bench_training(args: argparse.Namespace, images: np.ndarray) -> None:
    default_threads = torch.get_num_threads()
    plan = resolve_precision("auto", torch.device("cpu"))
    objective = build_objective(args.model, hyperparameters(args.model), 1, 5, 0)
    if plan.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    t = time.perf_counter()
    chosen, probe = probe_threads(objective, torch.from_numpy(images), plan, 64)
    probe_s = time.perf_counter() - t
    print(
        f"thread probe: {probe_s:.1f} s, median s/step {probe} → {chosen} thread(s) "
        f"(torch default {default_threads}; load average {os.getloadavg()[0]:.1f})"
    )
    s = args.steps_per_round
    extras = {
        "channels-last": {"channels_last": True},
        "bf16": {"autocast": torch.bfloat16},
        "bf16+cl": {"autocast": torch.bfloat16, "channels_last": True},
    }
    names = ("plain", "plain-1t", "ours-fp32", "ours", *extras)
    times: dict[str, list[float]] = {n: [] for n in names}
    data_fraction: list[float] = []
    for r in range(args.rounds):
        times["plain"].append(plain_loop(args.model, images, s, default_threads))
        times["plain-1t"].append(plain_loop(args.model, images, s, 1))
        times["ours-fp32"].append(ours(args.model, images, s, chosen, "fp32")[0])
        elapsed, frac = ours(args.model, images, s, chosen, "auto")
        times["ours"].append(elapsed)
        data_fraction.append(frac)
        for name, options in extras.items():
            times[name].append(variant_loop(args.model, images, s, chosen, **options))
        row = "  ".join(f"{n} {s / times[n][-1]:5.2f}" for n in names)
        print(f"round {r + 1}/{args.rounds} steps/s: {row}  (load {os.getloadavg()[0]:.1f})")
    print(f"\ntraining, {args.model}, batch 64, {s} steps × {args.rounds} rounds (incl. setup):")
    for n in names:
        sps = s / np.array(times[n])
        print(
            f"  {n:10s} median {np.median(sps):6.2f} steps/s = {64 * np.median(sps):7.1f} images/s"
            f"  (min {sps.min():.2f}, max {sps.max():.2f})"
        )
    ratio = np.array(times["plain"]) / np.array(times["ours"])
    print(
        f"  ours / plain speed-up: median {np.median(ratio):.2f}× per round "
        f"(min {ratio.min():.2f}×, max {ratio.max():.2f}×)"
    )
    for n in ("plain-1t", "ours-fp32", *extras):
        r = np.array(times[n]) / np.array(times["ours"])
        print(f"  ours / {n} speed-up: median {np.median(r):.2f}× (min {r.min():.2f}×)")
    print(f"  data fraction of step time in ours: median {np.median(data_fraction):.3f}")
    if args.compile:
        variant_loop(args.model, images, 1, chosen)  # warm the eager path alike
        t = time.perf_counter()
        variant_loop(args.model, images, 2, chosen, compiled=True)
        compile_s = time.perf_counter() - t
        compiled, eager = [], []
        for _ in range(args.rounds):  # (each call recompiles from the cache: includes that)
            eager.append(variant_loop(args.model, images, s, chosen))
            compiled.append(variant_loop(args.model, images, s, chosen, compiled=True))
        print(
            f"  torch.compile: first compile {compile_s:.0f} s; steps/s eager "
            f"{s / np.median(eager):.2f} vs compiled {s / np.median(compiled):.2f} (cached)"
        )
    print(
        f"  thread probe overhead {probe_s:.1f} s once per run "
        f"(= {100 * probe_s / (300_000 / (s / np.median(times['ours']))):.4f} % of 300k steps)"
    )


def bench_soundness(args: argparse.Namespace, images: np.ndarray) -> None:
    steps = args.sound_steps
    runs = {
        p: train(args.model, images, steps=steps, precision=p, num_threads=1, progress=False)
        for p in ("fp32", "auto", "bf16")
    }
    ref = runs["fp32"].history["loss"]
    print(
        f"\nloss trajectory vs fp32 over {steps} steps ({args.model}, fp32 loss {ref[0]:.1f} → {ref[-1]:.1f}):"
    )
    for p in ("auto", "bf16"):
        rel = np.abs(runs[p].history["loss"] - ref) / np.abs(ref)
        print(
            f"  {p:5s} ({runs[p].precision}): max relative difference {rel.max():.2e}, final {rel[-1]:.2e}"
        )


def bench_encoding(args: argparse.Namespace, images: np.ndarray) -> None:
    objective = build_objective(args.model, hyperparameters(args.model), 1, 5, 0)
    previous = torch.get_num_threads()
    small = images[: min(len(images), 8192)]
    print(f"\nencoding probe on {len(small)} images (images/s):")
    best = (0.0, previous, "fp32", 512)
    for threads in sorted({1, previous}):
        for precision in ("fp32", "bf16"):
            for bs in (256, 1024):
                t = time.perf_counter()
                encode(objective, small, batch_size=bs, precision=precision, num_threads=threads)
                rate = len(small) / (time.perf_counter() - t)
                print(f"  threads {threads} {precision} batch {bs:5d}: {rate:8.0f}")
                if rate > best[0] and precision == "fp32":
                    best = (rate, threads, precision, bs)
    _, threads, precision, bs = best
    t = time.perf_counter()
    mu, _ = encode(objective, images, batch_size=bs, precision=precision, num_threads=threads)
    elapsed = time.perf_counter() - t
    rate = len(images) / elapsed
    print(
        f"encode {len(images)} images (fp32, threads {threads}, batch {bs}): {elapsed:.1f} s = "
        f"{rate:.0f} images/s → extrapolated {DSPRITES_GRID / rate / 60:.1f} min for the "
        f"{DSPRITES_GRID:,} dSprites images (linear extrapolation, not measured)"
    )
    assert mu.shape == (len(images), 5) and np.isfinite(mu).all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="beta_vae")
    parser.add_argument("--images", type=int, default=65_536)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--sound-steps", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=(), choices=("train", "sound", "encode"))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds, args.steps_per_round, args.sound_steps = 4096, 2, 3, 5
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    t = time.perf_counter()
    images = dsprites_like(args.images)
    print(f"{len(images)} dSprites-like images built in {time.perf_counter() - t:.1f} s")
    if "train" not in args.skip:
        bench_training(args, images)
    if "sound" not in args.skip:
        bench_soundness(args, images)
    if "encode" not in args.skip:
        bench_encoding(args, images)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\npeak memory (RSS): {peak:.2f} GiB")


if __name__ == "__main__":
    main()
