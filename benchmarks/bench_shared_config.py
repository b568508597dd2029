"""Two one-thread training runs on one config: each decoding its own copy vs one shared memory map.

    .venv/bin/python benchmarks/bench_shared_config.py --data ./perturbed-dsprites --steps 300

For each way (``private``: ``load_config`` decodes into each process's memory, as before;
``shared``: ``load_config(decoded_dir=...)`` decodes once into a file that both processes map),
two worker processes start together, load the config and train a β-VAE for ``--steps`` steps on
one thread each. The parent samples both workers' proportional set size (PSS: shared pages
counted once across the two) every half second and prints the peak of their sum, with each
worker's load time and training speed, and the ratios of the two ways.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(data: str, config: str, steps: int, decoded_dir: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    from perturbed_disentanglement.benchmark.data import load_config
    from perturbed_disentanglement.training import train

    t0 = time.perf_counter()
    loaded = load_config(data, config, progress=False, decoded_dir=decoded_dir)
    load_seconds = time.perf_counter() - t0
    images = loaded.ground_truth.all_images()
    t0 = time.perf_counter()
    train("beta_vae", images, dataset=loaded.dataset, steps=steps, num_threads=1, progress=False)
    train_seconds = time.perf_counter() - t0
    print(json.dumps({"load_s": load_seconds, "steps_per_s": steps / train_seconds}), flush=True)


def pss_bytes(pid: int) -> int:
    """The process's proportional set size (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def run_pair(data: str, config: str, steps: int, decoded_dir: str | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--data", data, "--config", config]
    cmd += ["--steps", str(steps)] + (["--decoded-dir", decoded_dir] if decoded_dir else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, sum(pss_bytes(p.pid) for p in procs))
        time.sleep(0.5)
    results = []
    for p in procs:
        out = p.stdout.read().strip().splitlines()
        if p.returncode != 0 or not out:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        results.append(json.loads(out[-1]))
    return {
        "peak_pss_gb": peak / 1e9,
        "wall_s": time.perf_counter() - t0,
        "load_s": [r["load_s"] for r in results],
        "steps_per_s": [r["steps_per_s"] for r in results],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a built dataset folder (or Hub id)")
    p.add_argument("--config", default="perturbed")
    p.add_argument("--steps", type=int, default=300, help="training steps per worker")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--decoded-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.data, a.config, a.steps, a.decoded_dir)
        return
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        ways = {
            "private": run_pair(a.data, a.config, a.steps, None),
            "shared": run_pair(a.data, a.config, a.steps, tmp),
        }
    print(f"two one-thread β-VAE runs on {a.data}:{a.config}, {a.steps} steps each")
    print(f"{'way':<8} {'peak PSS of both':>17} {'load (s)':>16} {'steps/s':>14} {'wall (s)':>9}")
    for name, r in ways.items():
        loads = " / ".join(f"{x:.1f}" for x in r["load_s"])
        speeds = " / ".join(f"{x:.2f}" for x in r["steps_per_s"])
        print(
            f"{name:<8} {r['peak_pss_gb']:>14.2f} GB {loads:>16} {speeds:>14} {r['wall_s']:>9.1f}"
        )
    private, shared = ways["private"], ways["shared"]
    print(
        f"shared / private: peak memory {shared['peak_pss_gb'] / private['peak_pss_gb']:.2f}×, "
        f"training speed {sum(shared['steps_per_s']) / sum(private['steps_per_s']):.2f}×"
    )


if __name__ == "__main__":
    main()
