"""perturbed-dsprites: dSprites with the paper's ε-small pattern, its noise control, the original."""

from __future__ import annotations

import datasets

from perturbed_disentanglement.ground_truth.dsprites import dsprites_factors
from perturbed_disentanglement.util.png import PngEncoder

from .base import PerturbedBuilder, class_labels, value_columns
from .citations import DSPRITES, LICENSE, PAPER


class PerturbedDSprites(PerturbedBuilder):
    """737,280 binary 64×64 sprites; every row of the grid in official order, one per config."""

    dataset = "dsprites"
    repo_name = "perturbed-dsprites"
    pretty_name = "Perturbed dSprites"
    size_category = "100K<n<1M"
    image_mode = "L"
    factors = dsprites_factors()  # shape, scale, orientation, posX, posY (colour dropped)
    # fastest of equal-sized choices on binary sprites (benchmarks/bench_build.py)
    png = {
        "original": PngEncoder("none", 6, "rle"),
        "perturbed": PngEncoder("none", 6, "huffman"),
        "noise": PngEncoder("none", 6, "huffman"),
    }

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=(
                "dSprites (2D shapes on a black 64x64 canvas) with a barely visible, epsilon-small "
                "perturbation that keeps every generative factor but moves the leading local "
                "principal component, so beta-VAE-style models stop disentangling; with a "
                "uniform-noise control of the same epsilon and the unperturbed original."
            ),
            citation=f"{PAPER}\n\n{DSPRITES}",
            homepage="https://github.com/deepmind/dsprites-dataset",
            license=LICENSE,
            features=datasets.Features(
                {
                    "image": datasets.Image(mode="L"),  # 64x64 PNG, 0/255 before perturbation
                    "index": datasets.Value("int64"),  # grid index, as in the official files
                    **class_labels(self.factors),  # shape: square/ellipse/heart; others: values
                    **value_columns(self.factors),  # the official latent values
                    "s": datasets.Value("float32"),  # reference VAE's standardised leading latent
                    "epsilon": datasets.Value("float32"),  # the perturbation's size, 0: original
                }
            ),
        )
