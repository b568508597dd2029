"""Writes the format-1 checkpoint fixture ``checkpoint_v1_*`` (run once, with the code of its day).

The fixture was written by the training code of commit 8ccadeb (before the training layer was
split into modules) so that ``tests/test_training.py::test_a_format_1_checkpoint_of_the_old_code_resumes``
proves that checkpoints written by that code keep loading and resuming. Do not regenerate it with
newer code: that would prove nothing. Run from the repository root:
``python tests/data/make_checkpoint_v1.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# What the run is; tests/test_training.py repeats these values to resume it.
MODEL = "beta_vae"
SEED = 7
STEPS = 2
BATCH_SIZE = 8


def fixture_images() -> np.ndarray:
    """12 sparse binary 64×64 images (uint8 0/255) from a fixed numpy generator."""
    rng = np.random.default_rng(2024)
    return (rng.random((12, 64, 64, 1)) < 0.2).astype(np.uint8) * 255


def fixture_ground_truth():
    from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor

    factors = [Factor("a", np.arange(3.0)), Factor("b", np.arange(4.0))]
    return ArrayGroundTruth("dsprites", factors, fixture_images())


def main() -> None:
    from perturbed_disentanglement.training.single import train

    with tempfile.TemporaryDirectory() as tmp:
        train(
            MODEL,
            fixture_ground_truth(),
            steps=STEPS,
            seed=SEED,
            batch_size=BATCH_SIZE,
            checkpoint_dir=tmp,
            checkpoint_every=1,
            keep_checkpoints=1,
            num_threads=1,
            progress=False,
        )
        step = Path(tmp) / f"step-{STEPS:09d}"
        shutil.copyfile(step / "state.json", HERE / "checkpoint_v1_state.json")
        shutil.copyfile(step / "weights.safetensors", HERE / "checkpoint_v1_weights.safetensors")


if __name__ == "__main__":
    main()
