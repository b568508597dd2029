"""perturbed-disentanglement: ground truth, perturbation, models, metrics and dataset builders.

See README.md. The public entry point for data is :func:`ground_truth`.
"""

from .ground_truth import ArrayGroundTruth, Factor, GroundTruth, ground_truth

__version__ = "0.2.0"

__all__ = ["ArrayGroundTruth", "Factor", "GroundTruth", "ground_truth", "__version__"]
