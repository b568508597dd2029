"""perturbed-shapes3d: Shapes3D with the paper's ε-small pattern, its noise control, the original."""

from __future__ import annotations

import datasets

from perturbed_disentanglement.ground_truth.shapes3d import FACTORS
from perturbed_disentanglement.util.png import PngEncoder

from .base import PerturbedBuilder, class_labels, value_columns
from .citations import LICENSE, PAPER, SHAPES3D


class PerturbedShapes3D(PerturbedBuilder):
    """480,000 RGB 64×64 scenes; every row of the grid in official order, one per config."""

    dataset = "shapes3d"
    repo_name = "perturbed-shapes3d"
    pretty_name = "Perturbed Shapes3D"
    size_category = "100K<n<1M"
    image_mode = "RGB"
    factors = FACTORS  # floor_hue, wall_hue, object_hue, scale, shape, orientation
    # smallest files for their speed on shaded scenes (benchmarks/bench_build.py)
    png = {
        "original": PngEncoder("sub", 1, "default"),
        "perturbed": PngEncoder("none", 2, "default"),
        "noise": PngEncoder("sub", 6, "huffman"),
    }

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=(
                "Shapes3D (an object in a room, 64x64 RGB) with a barely visible, epsilon-small "
                "perturbation that keeps every generative factor but moves the leading local "
                "principal component, so beta-VAE-style models stop disentangling; with a "
                "uniform-noise control of the same epsilon and the unperturbed original."
            ),
            citation=f"{PAPER}\n\n{SHAPES3D}",
            homepage="https://github.com/deepmind/3dshapes-dataset",
            license=LICENSE,
            features=datasets.Features(
                {
                    "image": datasets.Image(mode="RGB"),  # 64x64 PNG
                    "index": datasets.Value("int64"),  # grid index, as in the official file
                    **class_labels(self.factors),  # shape: cube/cylinder/sphere/capsule
                    **value_columns(self.factors),  # the official label values
                    "s": datasets.Value("float32"),  # reference VAE's standardised leading latent
                    "epsilon": datasets.Value("float32"),  # the perturbation's size, 0: original
                }
            ),
        )
