"""Reference stage speed: whole-grid encoding (images/s) and a restart's training steps/s.

    python benchmarks/bench_reference.py [--dataset dsprites] [--images 50000] [--steps 200]

Two comparisons, each measured in one run:
1. encoding grid images for s: ``training.encode`` on the grid already in memory (what the stage
   does: the grid was rendered for training) against ``metrics.encode_grid``'s path, which renders
   each chunk before encoding it;
2. training steps/s of one restart with the stage's data path (``train`` on the in-memory uint8
   grid, batches gathered by index) against rendering each batch from the ground truth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.metrics import encode_indices
from perturbed_disentanglement.training.batches import BatchStream, images_to_input
from perturbed_disentanglement.training.single import encode, make_optimizers, train, training_step
from perturbed_disentanglement.training.zoo import build_objective, hyperparameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument("--images", type=int, default=50_000, help="grid images to encode")
    parser.add_argument("--steps", type=int, default=200, help="training steps per way")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gt = ground_truth(args.dataset)
    n = min(args.images, len(gt))
    print(f"{gt!r}; {args.threads} thread(s); load average {open('/proc/loadavg').read()[:14]}")

    objective = build_objective(
        "beta_vae", hyperparameters("beta_vae", gt.name), gt.num_channels, gt.num_factors, 0
    ).eval()
    t = time.perf_counter()
    images = gt.images(np.arange(n))
    render_s = time.perf_counter() - t
    t = time.perf_counter()
    mu_mem, _ = encode(objective, images)
    memory_s = time.perf_counter() - t
    t = time.perf_counter()
    mu_gt, _ = encode_indices(gt, lambda x: encode(objective, x), np.arange(n))
    render_encode_s = time.perf_counter() - t
    assert np.array_equal(mu_mem, mu_gt.astype(np.float32))
    full = len(gt) / (n / memory_s)
    print(
        f"encode {n:,} images: in memory {n / memory_s:,.0f} images/s, render + encode "
        f"{n / render_encode_s:,.0f} images/s: ratio {render_encode_s / memory_s:.2f}× "
        f"(rendering alone {render_s:.1f} s); whole grid ≈ {full / 60:.1f} min"
    )

    result = train("beta_vae", gt.all_images(), dataset=gt.name, steps=args.steps, progress=False)
    stage = args.steps / result.wall_time

    objective = build_objective(
        "beta_vae", hyperparameters("beta_vae", gt.name), gt.num_channels, gt.num_factors, 0
    )
    optimizers = make_optimizers(objective)
    stream = BatchStream(0, len(gt), 64, gt.num_factors)
    objective.train()
    t = time.perf_counter()
    for _ in range(args.steps):
        batch = stream.next()
        x = images_to_input(torch.from_numpy(gt.images(batch.indices.numpy())))
        training_step(objective, optimizers, x, batch, autocast_dtype=None)
    rendered = args.steps / (time.perf_counter() - t)
    print(
        f"training steps/s: in-memory grid (the stage's path) {stage:.2f}, rendering each batch "
        f"{rendered:.2f}: ratio {stage / rendered:.2f}×; data gathering is "
        f"{100 * result.data_fraction:.1f}% of a step"
    )


if __name__ == "__main__":
    main()
