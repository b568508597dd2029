"""Time the ground-truth metrics on the real procedural dSprites with a random linear encoder.

Usage::

    python benchmarks/bench_gt_metrics.py            # dlib's sizes (a few minutes on 2 cores)
    python benchmarks/bench_gt_metrics.py --quick    # small sizes, a smoke run (seconds)

What it measures, all in one process on ``perturbed_disentanglement.ground_truth("dsprites")``
(737,280 images rendered on demand, nothing the size of the dataset is held):

1. FactorVAE score (Kim & Mnih 2018) computed the package's way, all batches drawn first and
   encoded ``--chunk`` (4096) images per encoder call, against one encoder call per vote batch
   of 64 (disentanglement_lib's loop, ``chunk_size=64``). The two must give the same numbers
   (same seed, the chunking changes nothing); the ratio of their times is printed.
2. β-VAE score (Higgins et al. 2017) at dlib's defaults (10,000 / 5,000 points of 64 pairs).
3. ``fig4_quantities(gt, factor_names=["posX", "posY"])``: the Fig. 4a/4b numbers of the two
   position factors, one pass over the whole grid each. With ``--quick`` it runs on a sub-grid
   keeping the first two orientations (36,864 images, held in memory: 150 MB).

The encoder is ``mu = x @ W`` with ``x`` the image in [0, 1] flattened, ``W ~ N(0, 1) / 64``
``[4096, --dims]`` fixed by ``--seed``, ``logvar = -1``: cheap, so the times are the metrics'
own (rendering, index arithmetic, reductions) rather than a network's. Peak memory stays near
0.5 GB (well under 6 GB): a few chunks of images and the factor rows of the vote batches.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import perturbed_disentanglement as pd
from perturbed_disentanglement.ground_truth import ArrayGroundTruth, GroundTruth
from perturbed_disentanglement.metrics import beta_vae_score, factor_vae_score, fig4_quantities


def linear_encoder(dims: int, seed: int, pixels: int = 64 * 64):
    """A random linear encoder ``uint8 [n, 64, 64, 1] -> (mu, logvar)`` in float64."""
    w = np.random.default_rng(seed).standard_normal((pixels, dims)) / 64

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = images.reshape(len(images), -1).astype(np.float64) / 255.0
        mu = x @ w
        return mu, np.full_like(mu, -1.0)

    return encode


def orientation_subgrid(gt: GroundTruth, num_orientations: int) -> ArrayGroundTruth:
    """dSprites restricted to its first ``num_orientations`` orientations, held in memory."""
    specs = list(gt.factor_specs)
    j = gt.factor_names.index("orientation")
    specs[j] = type(specs[j])(specs[j].name, specs[j].values[:num_orientations])
    sizes = [s.size for s in specs]
    rows = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)
    images = gt.images(gt.index(rows))
    return ArrayGroundTruth(f"{gt.name}-orient{num_orientations}", specs, images)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--chunk", type=int, default=4096, help="images per encoder call")
    parser.add_argument("--dims", type=int, default=10, help="code dimensions of the encoder")
    parser.add_argument("--seed", type=int, default=0, help="seed of W and of the metrics")
    parser.add_argument("--skip-fig4", action="store_true", help="skip the Fig. 4 passes")
    args = parser.parse_args()

    if args.quick:
        fvae = dict(num_train=300, num_eval=150, num_variance_estimate=2000)
        bvae = dict(num_train=300, num_eval=150)
    else:
        fvae = dict(num_train=10_000, num_eval=5_000, num_variance_estimate=10_000)
        bvae = dict(num_train=10_000, num_eval=5_000)

    gt = pd.ground_truth("dsprites")
    encode = linear_encoder(args.dims, args.seed)
    gt.images(np.arange(64))  # warm-up: tables and imports
    print(f"{gt}; encoder: random linear, d={args.dims}; quick={args.quick}")

    images = fvae["num_variance_estimate"] + 64 * (fvae["num_train"] + fvae["num_eval"])
    chunked, t_chunk = timed(factor_vae_score, gt, encode, args.seed, chunk_size=args.chunk, **fvae)
    looped, t_loop = timed(factor_vae_score, gt, encode, args.seed, chunk_size=64, **fvae)
    same = chunked == looped
    print(
        f"factor_vae {fvae['num_train']}/{fvae['num_eval']} votes ({images:,} images): "
        f"chunks of {args.chunk} {t_chunk:.1f} s, one call per batch of 64 {t_loop:.1f} s, "
        f"ratio {t_loop / t_chunk:.2f}x; same values: {same}"
    )
    print(f"  chunked  {chunked}")
    if not same:
        print(f"  per-batch {looped}")

    images = 2 * 64 * (bvae["num_train"] + bvae["num_eval"])
    beta, t_beta = timed(beta_vae_score, gt, encode, args.seed, chunk_size=args.chunk, **bvae)
    print(
        f"beta_vae {bvae['num_train']}/{bvae['num_eval']} points ({images:,} images): "
        f"{t_beta:.1f} s; {beta}"
    )

    if not args.skip_fig4:
        grid = orientation_subgrid(gt, 2) if args.quick else gt
        q, t_fig4 = timed(fig4_quantities, grid, factor_names=["posX", "posY"])
        print(
            f"fig4_quantities on {grid.name} ({len(grid):,} images), posX and posY: {t_fig4:.1f} s"
        )
        for name, e in q.expansiveness.items():
            print(
                f"  {name}: delta={e.delta:.4f} E||dx||={e.mean_norm:.3f} alpha={e.alpha:.2f} "
                f"local_variance={e.local_variance:.1f} pairs={e.num_pairs:,} "
                f"explained={q.explained_variance[name]:.3f}"
            )
        print(f"  total variance {q.total_variance:.3f}")
    print(f"peak resident memory {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
