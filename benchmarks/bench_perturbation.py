"""The perturbation and the noise control over the whole grids vs a plain copy and the renderer.

Usage::

    python benchmarks/bench_perturbation.py [--dataset dsprites shapes3d] [--smoke]

One fresh subprocess per dataset. In it, the grid is rendered (``gt.all_images()``, timed), then
three steps run on it, each writing the same output bytes:

- copy: ``np.copyto(out, x)``;
- perturb: ``perturb(x, s, 0.1, Pattern(seed=0, kappa=32), out=out)`` with an arbitrary
  standardised ``s`` (``standard_normal``; the real reference ``s`` does not change the cost);
- noise: ``uniform_noise(x, arange(N), 0.1, seed=0, out=out)``;

first all three into one output buffer touched beforehand (the computation alone), then all
three into fresh memory (``out=None``, as a caller gets it: page faults included; on a VM they
can cost more than the copy itself, and vary from run to run).

Reported: wall seconds, GB/s of output, the ratio to the copy's GB/s (the target is >= 0.3) and
to the renderer's, CPU seconds (all threads) and the copy's CPU time over the step's (the same
ratio, less sensitive to a machine shared with other jobs), and each fresh step's peak resident
memory above what was resident before it (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``) as a multiple of the output (target <= 1.5; the copy itself is 1.0).
When the machine has too little memory for the input and an output of the whole grid, the steps
run on the largest prefix that fits, and the output says so. ``--smoke`` runs on the first 512
images (rendered with ``gt.images``) in seconds, for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SMOKE_IMAGES = 512
EPSILON = 0.1
KAPPA = 32.0


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        return True
    except OSError:
        return False


def _measure(fn) -> tuple[object, float, float, int]:
    """Run ``fn()``: its result, wall and CPU seconds (all threads), peak RSS growth."""
    exact = _reset_peak()
    before = _vm("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _vm("VmHWM") - before if exact else -1
    return out, seconds, cpu, peak


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def _child(dataset: str, smoke: bool) -> dict:
    import numpy as np

    from perturbed_disentanglement import ground_truth
    from perturbed_disentanglement.perturbation.pattern import Pattern, perturb, uniform_noise

    gt = ground_truth(dataset)
    gt.images(np.arange(8))  # warm up imports and tables
    pattern = Pattern(seed=0, kappa=KAPPA)
    pattern.rows  # noqa: B018 (drawn once, outside the timings)
    if smoke:
        x, render_s, render_cpu, _ = _measure(lambda: gt.images(np.arange(SMOKE_IMAGES)))
    else:
        x, render_s, render_cpu, _ = _measure(gt.all_images)
    render_bytes = x.nbytes
    grid_images = len(gt)
    # input stays resident; one output at a time on top of it (plus 10% and 1 GB of headroom)
    room = int((_available_bytes() - (1 << 30)) / 1.1)
    n = min(len(x), max(1, room // x[0].nbytes))
    x = x[:n]
    rng = np.random.default_rng(0)
    s = rng.standard_normal(n)
    s = (s - s.mean()) / s.std()
    indices = np.arange(n)

    def copy(out=None):
        out = np.empty_like(x) if out is None else out
        np.copyto(out, x)
        return out

    ops = {
        "copy": copy,
        "perturb": lambda out=None: perturb(x, s, EPSILON, pattern, out=out),
        "noise": lambda out=None: uniform_noise(x, indices, EPSILON, 0, out=out),
    }
    steps = {name: {} for name in ops}
    # 1. into one output buffer, touched beforehand: the computation alone
    buf = np.ones_like(x)
    for name, fn in ops.items():
        _, seconds, cpu, _ = _measure(lambda fn=fn, out=buf: fn(out))
        steps[name].update(warm_seconds=seconds, warm_cpu_seconds=cpu)
        if name != "copy":  # spot check: the bound on a sample of rows
            rows = rng.integers(0, n, 256)
            steps[name]["max_change"] = int(np.abs(buf[rows].astype(np.int16) - x[rows]).max())
    del buf
    # 2. into fresh memory, as a caller gets it (page faults included): time and peak memory
    for name, fn in ops.items():
        out, seconds, cpu, peak = _measure(fn)
        steps[name].update(seconds=seconds, cpu_seconds=cpu, peak_bytes=peak)
        del out
    return {
        "dataset": dataset,
        "shape": list(x.shape),
        "grid_images": grid_images,
        "nbytes": int(x.nbytes),
        "render_seconds": render_s,
        "render_cpu_seconds": render_cpu,
        "render_bytes": int(render_bytes),
        "threads": os.cpu_count(),
        "smoke": smoke,
        "steps": steps,
    }


def _run_child(dataset: str, smoke: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", dataset] + (["--smoke"] if smoke else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _report(r: dict) -> None:
    gb = r["nbytes"] / 1e9
    steps = r["steps"]
    copy = steps["copy"]
    render_s = r["render_seconds"] * r["nbytes"] / r["render_bytes"]  # per output byte
    scope = (
        "the whole grid"
        if r["shape"][0] == r["grid_images"]
        else f"the first {r['shape'][0]:,} of {r['grid_images']:,} images "
        + ("(--smoke)" if r["smoke"] else "(all the memory allows)")
    )
    print(f"{r['dataset']}: {r['shape']} uint8, {gb:.2f} GB, {scope}; {r['threads']} threads")
    print(
        f"  render: {render_s:.2f} s, {gb / render_s:.2f} GB/s, "
        f"{r['render_cpu_seconds'] * r['nbytes'] / r['render_bytes']:.2f} CPU s"
        + ("" if r["render_bytes"] == r["nbytes"] else " (the grid's time scaled to these bytes)")
    )
    print(
        f"  {'':<8} | {'into a touched buffer (out=)':^37} | {'into fresh memory':^46}\n"
        f"  {'step':<8} | {'wall s':>7} {'GB/s':>6} {'/copy':>6} {'CPU s':>7} {'CPU/copy':>8} | "
        f"{'wall s':>7} {'GB/s':>6} {'/copy':>6} {'/render':>8} {'CPU/copy':>8} {'peak/out':>8} "
        f"| {'max|dx|':>7}"
    )
    for name, st in steps.items():
        peak = st["peak_bytes"] / r["nbytes"] if st["peak_bytes"] >= 0 else float("nan")
        print(
            f"  {name:<8} | {st['warm_seconds']:7.2f} {gb / st['warm_seconds']:6.2f} "
            f"{copy['warm_seconds'] / st['warm_seconds']:6.3f} {st['warm_cpu_seconds']:7.2f} "
            f"{copy['warm_cpu_seconds'] / st['warm_cpu_seconds']:8.3f} | "
            f"{st['seconds']:7.2f} {gb / st['seconds']:6.2f} {copy['seconds'] / st['seconds']:6.3f} "
            f"{render_s / st['seconds']:8.3f} {copy['cpu_seconds'] / st['cpu_seconds']:8.3f} "
            f"{peak:8.3f} | {st.get('max_change', ''):>7}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset", nargs="+", default=["dsprites", "shapes3d"], choices=["dsprites", "shapes3d"]
    )
    ap.add_argument("--smoke", action="store_true", help=f"first {SMOKE_IMAGES} images only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.smoke)))
        return 0
    print(f"epsilon {EPSILON}, kappa {KAPPA}; max|dx| (a sample of rows) must be <= 25")
    for dataset in args.dataset:
        _report(_run_child(dataset, args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
