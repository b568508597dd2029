"""Benchmark: build the whole procedural Shapes3D grid vs ``np.load`` of it from a compressed npz.

One run measures both, each in its own subprocess (so peak RSS is per side):

1. procedural: ``ProceduralShapes3D().all_images()`` from a cold start, i.e. including the one-off
   ray casting of the 480 geometries (nothing is cached on disk); then, with the views in memory,
   ``images()`` of random batches of 64. The same array is then written to a compressed npz
   (not timed).
2. npz: ``np.load(npz)["images"]`` of that file.

It prints both times, their ratio, and each side's peak RSS relative to the output array.
``--floor-hues K`` restricts both sides to the contiguous slice of the first K floor hues
(K/10 of the grid; the procedural side still renders all 480 geometries, so a slice is
pessimistic for it). Temporary files are deleted afterwards.

    python benchmarks/bench_shapes3d_grid.py               # full grid: 5.9 GB, ~13 GB peak total
    python benchmarks/bench_shapes3d_grid.py --floor-hues 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD_PROCEDURAL = r"""
import json, resource, sys, time
import numpy as np
from perturbed_disentanglement.ground_truth.shapes3d import ProceduralShapes3D
k, npz = int(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
g = ProceduralShapes3D()
x = g.all_images() if k == 10 else g.floor_hue_block(0, k)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rng = np.random.default_rng(0)
batches = [rng.integers(0, len(g), 64) for _ in range(200)]
g.images(batches[0])
t1 = time.perf_counter()
for b in batches:
    g.images(b)
batch_ms = (time.perf_counter() - t1) / len(batches) * 1e3
np.savez_compressed(npz, images=x)
print(json.dumps({"seconds": seconds, "peak": peak, "nbytes": x.nbytes, "shape": list(x.shape),
                  "batch64_ms": batch_ms}))
"""

CHILD_NPZ = r"""
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
x = np.load(sys.argv[1])["images"]
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "nbytes": x.nbytes, "shape": list(x.shape)}))
"""


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter and parse the JSON line it prints."""
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floor-hues", type=int, default=10, choices=range(1, 11), metavar="K")
    ap.add_argument("--workdir", default=None, help="where the temporary npz goes")
    args = ap.parse_args(argv)
    if args.workdir is not None:
        os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        npz = os.path.join(tmp, "shapes3d_grid.npz")
        t = time.perf_counter()
        proc = run_child(CHILD_PROCEDURAL, str(args.floor_hues), npz)
        size = os.path.getsize(npz)
        load = run_child(CHILD_NPZ, npz)
        wall = time.perf_counter() - t
    assert proc["shape"] == load["shape"]
    gb = proc["nbytes"] / 1e9
    print(f"slice: first {args.floor_hues}/10 floor hues, images {proc['shape']} ({gb:.2f} GB)")
    print(f"compressed npz: {size / 1e6:.0f} MB")
    print(
        f"procedural all_images (cold, incl. rendering 480 views): {proc['seconds']:.1f} s, "
        f"peak RSS {proc['peak'] / 1e9:.2f} GB = {proc['peak'] / proc['nbytes']:.2f}x output"
    )
    print(
        f"np.load(npz)['images']:                                  {load['seconds']:.1f} s, "
        f"peak RSS {load['peak'] / 1e9:.2f} GB = {load['peak'] / load['nbytes']:.2f}x output"
    )
    print(f"ratio np.load / procedural: {load['seconds'] / proc['seconds']:.2f}x")
    print(f"images() random batch of 64 (views cached): {proc['batch64_ms']:.2f} ms")
    print(f"benchmark wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
