"""Rendering the whole dSprites grid vs loading it from a compressed .npz, in one run.

Usage::

    python benchmarks/bench_dsprites_grid.py [--tmp /tmp] [--keep]

Steps, each in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own:

1. render: ``ProceduralDSprites().all_images()`` (737,280 × 64 × 64 × 1 uint8, 3.0 GB), timed;
   then (untimed) the array is written with ``np.savez_compressed`` to a temporary file;
2. load: ``np.load(file)["imgs"]``, timed: what a user who has the data as a file waits for.

Prints both times, their ratio, and each step's peak memory above its baseline (interpreter and
imports) as a multiple of the array size. The temporary file is deleted at the end (unless
``--keep``). Also times ``images()`` on random batches of 64 (used for sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _child_render(npz: str) -> dict:
    import numpy as np

    from perturbed_disentanglement.ground_truth.dsprites import ProceduralDSprites

    gt = ProceduralDSprites()
    gt.images(np.arange(64))  # warm up imports and tables
    base = _rss_bytes()
    t0 = time.perf_counter()
    imgs = gt.all_images()
    seconds = time.perf_counter() - t0
    peak = _rss_bytes()
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(200):
        idx = rng.integers(0, len(gt), 64)
        t1 = time.perf_counter()
        gt.images(idx)
        batch.append(time.perf_counter() - t1)
    sample = rng.integers(0, len(gt), 4096)
    consistent = bool(np.array_equal(imgs[sample], gt.images(sample)))
    np.savez_compressed(npz, imgs=imgs)
    return {
        "seconds": seconds,
        "extra_bytes": peak - base,
        "nbytes": int(imgs.nbytes),
        "shape": list(imgs.shape),
        "batch64_ms_median": 1e3 * float(np.median(batch)),
        "batch64_ms_p95": 1e3 * float(np.percentile(batch, 95)),
        "consistent": consistent,
    }


def _child_load(npz: str) -> dict:
    import numpy as np

    base = _rss_bytes()
    t0 = time.perf_counter()
    with np.load(npz) as f:
        imgs = f["imgs"]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "extra_bytes": _rss_bytes() - base, "nbytes": int(imgs.nbytes)}


def _run_child(step: str, npz: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, "--npz", npz],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the temporary .npz")
    ap.add_argument("--keep", action="store_true", help="keep the temporary .npz")
    ap.add_argument("--child", choices=("render", "load"), help=argparse.SUPPRESS)
    ap.add_argument("--npz", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        fn = _child_render if args.child == "render" else _child_load
        print(json.dumps(fn(args.npz)))
        return 0
    fd, npz = tempfile.mkstemp(suffix=".npz", prefix="dsprites_grid_", dir=args.tmp)
    os.close(fd)
    try:
        render = _run_child("render", npz)
        size = os.path.getsize(npz)
        load = _run_child("load", npz)
    finally:
        if not args.keep:
            os.unlink(npz)
    gb = render["nbytes"] / 1e9
    print(f"array: {render['shape']} uint8, {gb:.2f} GB; compressed .npz {size / 1e6:.1f} MB")
    print(f"render all_images():   {render['seconds']:7.2f} s")
    print(f"np.load(.npz)['imgs']: {load['seconds']:7.2f} s")
    print(
        f"ratio render / load:   {render['seconds'] / load['seconds']:7.3f}  (<= 1 is the target)"
    )
    for name, r in (("render", render), ("load", load)):
        print(
            f"peak memory above baseline, {name}: {r['extra_bytes'] / r['nbytes']:.3f} x the array"
        )
    print(
        f"images() on 64 random indices: median {render['batch64_ms_median']:.2f} ms, "
        f"p95 {render['batch64_ms_p95']:.2f} ms"
    )
    print(f"all_images()[i] == images(i) on 4096 random i: {render['consistent']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
