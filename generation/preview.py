"""Render a ground-truth grid and write a preview figure: one row per factor traversal.

    python -m generation.preview --dataset dsprites --out out/preview.png          # procedural
    python -m generation.preview --dataset shapes3d --path 3dshapes.h5 --out s.png  # official file

With ``--all`` the whole grid is rendered first (as the build will), and its size and time are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from perturbed_disentanglement import GroundTruth, ground_truth
from perturbed_disentanglement.errors import PerturbedDisentanglementError


def traversal_indices(gt: GroundTruth, base: np.ndarray, columns: int) -> list[np.ndarray]:
    """For each factor, the grid indices of ``base`` with that factor swept over ≤ ``columns`` values."""
    rows = []
    for k, size in enumerate(gt.factor_sizes):
        values = np.unique(np.linspace(0, size - 1, min(size, columns)).round().astype(np.int64))
        factors = np.repeat(base[None, :], len(values), axis=0)
        factors[:, k] = values
        rows.append(gt.index(factors))
    return rows


def write_preview(gt: GroundTruth, out: Path, seed: int = 0, columns: int = 10) -> Path:
    """Write a PNG with one traversal row per factor (values labelled) and a row of random samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    base = gt.sample_factors(1, rng)[0]
    rows = traversal_indices(gt, base, columns)
    rows.append(rng.choice(len(gt), size=columns, replace=False))
    labels = [*gt.factor_names, "random"]
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(columns * 1.0, len(rows) * 1.12), squeeze=False
    )
    for r, (label, idx) in enumerate(zip(labels, rows)):
        images = gt.images(idx)
        factors = gt.factors(idx)
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(idx):
                continue
            img = images[c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            if label != "random":
                value = gt.factor_values[r][factors[c, r]]
                cats = gt.factor_specs[r].categories
                ax.set_title(cats[factors[c, r]] if cats else f"{value:.3g}", fontsize=7, pad=2)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"{gt.name} ({gt.source}): factor traversals", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)  # never leave a half-written preview under the final name
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.preview",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument(
        "--path",
        help="official file to read instead of rendering (dSprites .npz/.hdf5, 3dshapes.h5)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of --path")
    parser.add_argument("--out", type=Path, default=Path("out/preview.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="picks the base point and the samples")
    parser.add_argument("--columns", type=int, default=10, help="values shown per factor (≥ 2)")
    parser.add_argument(
        "--all", action="store_true", help="render the whole grid first and report its time"
    )
    args = parser.parse_args(argv)
    if args.columns < 2:
        parser.error("--columns must be ≥ 2")
    try:
        gt = ground_truth(args.dataset, path=args.path, verify_checksum=not args.no_verify)
        print(gt)
        if args.all:
            t0 = time.perf_counter()
            grid = gt.all_images()
            dt = time.perf_counter() - t0
            print(
                f"whole grid: {grid.shape[0]:,} images {list(grid.shape[1:])} uint8, "
                f"{grid.nbytes / 2**30:.2f} GiB in {dt:.1f} s"
            )
            del grid
        out = write_preview(gt, args.out, seed=args.seed, columns=args.columns)
    except (PerturbedDisentanglementError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
