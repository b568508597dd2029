"""Side-by-side figure of real Shapes3D images and their nearest procedural re-renderings.

For each of the 50 real 64×64 images recovered from the official notebook
(``calibration/shapes3d/notebook_samples_64.npz``), the floor and wall hues are read off the
pixels (the most common hue among saturated pixels of the bottom rows, and of the wall band at
the image edges); the object hue, shape, scale and orientation are then chosen as the grid point
whose procedural image is nearest (L2 over all pixels). Writes ``docs/shapes3d_comparison.png``
and prints how close the matches are.

    python benchmarks/compare_shapes3d.py [--calibration DIR] [--out docs/shapes3d_comparison.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perturbed_disentanglement.ground_truth.shapes3d import (  # noqa: E402
    FACTOR_SIZES,
    HUES,
    NUM_VIEWS,
    SHAPES,
    ProceduralShapes3D,
)

DEFAULT_CALIBRATION = Path("/work/shared/calibration/shapes3d")


def hue_indices(pixels: np.ndarray) -> np.ndarray:
    """Nearest official hue index (0..9) of each saturated RGB pixel; -1 for unsaturated ones."""
    x = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    mx, mn = x.max(axis=1), x.min(axis=1)
    sat = (mx - mn) / np.maximum(mx, 1e-9)
    r, g, b = x.T
    delta = np.maximum(mx - mn, 1e-9)
    h = np.where(
        mx == r,
        ((g - b) / delta) % 6.0,
        np.where(mx == g, (b - r) / delta + 2.0, (r - g) / delta + 4.0),
    )
    idx = np.rint(h / 6.0 * 10.0).astype(np.int64) % 10
    return np.where((sat > 0.5) & (mx > 0.25), idx, -1)


def mode_hue(pixels: np.ndarray) -> int:
    """Most common hue index among saturated pixels (-1 when there are none)."""
    h = hue_indices(pixels)
    h = h[h >= 0]
    return int(np.bincount(h, minlength=10).argmax()) if h.size else -1


def match(gt: ProceduralShapes3D, real: np.ndarray) -> tuple[np.ndarray, float]:
    """Factor indices of the procedural image nearest to ``real`` and the RMS pixel distance."""
    floor = mode_hue(real[56:])
    wall = mode_hue(np.concatenate([real[20:36, :4], real[20:36, -4:]], axis=1))
    best = (np.inf, None)
    views = np.arange(NUM_VIEWS)
    sc, sh, ori = np.unravel_index(views, FACTOR_SIZES[3:])
    for oh in range(HUES.size):
        f = np.stack([np.full(NUM_VIEWS, floor), np.full(NUM_VIEWS, wall), np.full(NUM_VIEWS, oh)])
        f = np.concatenate([f, np.stack([sc, sh, ori])]).T
        ims = gt.images(gt.index(f)).astype(np.float32)
        d = ((ims - real.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        k = int(d.argmin())
        if d[k] < best[0]:
            best = (float(d[k]), f[k])
    return best[1], float(np.sqrt(best[0]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--out", type=Path, default=Path("docs/shapes3d_comparison.png"))
    args = ap.parse_args(argv)
    real = np.load(args.calibration / "notebook_samples_64.npz")["images"]
    gt = ProceduralShapes3D()
    gt.ensure_views()
    matches, dists = [], []
    for im in real:
        f, d = match(gt, im)
        matches.append(f)
        dists.append(d)
    ours = gt.images(gt.index(np.array(matches)))
    print(f"RMS pixel distance real vs nearest re-rendering: mean {np.mean(dists):.1f} (0..255)")
    sky = np.abs(real[:, :6].astype(int) - ours[:, :6].astype(int)).mean()
    print(f"mean |difference| in the sky rows: {sky:.2f}")
    shapes = np.bincount(np.array(matches)[:, 4], minlength=4)
    print("matched shapes:", dict(zip(SHAPES, shapes.tolist())))

    cols = 10
    rows = len(real) // cols
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 1.1, 2 * rows * 1.15))
    for i in range(len(real)):
        r, c = divmod(i, cols)
        for k, (img, lab) in enumerate(((real[i], "real"), (ours[i], "ours"))):
            ax = axes[2 * r + k, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(lab, fontsize=8)
    fig.suptitle(
        "Shapes3D: official images (odd rows) and nearest procedural re-renderings (even rows)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98), h_pad=0.2, w_pad=0.2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
