"""β-VAE disentanglement score, as computed by disentanglement_lib (``beta_vae_sklearn``).

Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework", ICLR 2017, §3. dlib's ``evaluation/metrics/beta_vae.py``: one training point is made
from a factor ``y`` drawn uniformly and two batches of 64 random points whose ``i``-th rows share
the value of ``y`` (each pair its own value; every other factor independent); its feature is the
mean over the batch of ``|mu(x1) - mu(x2)|`` per dimension and its label is ``y``. A
scikit-learn ``LogisticRegression`` with default settings is fitted on 10,000 such points and
scored on 5,000 fresh ones.

The random streams differ from dlib's (numpy ``Generator``); all pairs are drawn first and
encoded in large chunks (both images of a pair in the same encoder call), then reduced.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..errors import InvalidArgumentError
from ..ground_truth import GroundTruth
from ._checks import check_count
from ._random import RandomState, as_generator, seed_from
from .sampling import DEFAULT_CHUNK, Encoder, encode_batches


def paired_batches(
    gt: GroundTruth, num_points: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``[n]`` and two factor arrays ``[n, B, k]`` whose rows agree on the label's factor."""
    k = gt.num_factors
    labels = rng.integers(0, k, size=num_points)
    first = gt.sample_factors(num_points * batch_size, rng).astype(np.int64)
    second = gt.sample_factors(num_points * batch_size, rng).astype(np.int64)
    first = first.reshape(num_points, batch_size, k)
    second = second.reshape(num_points, batch_size, k)
    b = np.arange(num_points)
    second[b, :, labels] = first[b, :, labels]
    return labels, first, second


def pair_features(mu: np.ndarray) -> np.ndarray:
    """Mean absolute code difference of each batch of pairs: ``[m, 2B, d]`` → ``[m, d]``.

    Rows ``0..B-1`` of a batch are the first images of the pairs, rows ``B..2B-1`` the second.
    """
    half = mu.shape[1] // 2
    return np.abs(mu[:, :half] - mu[:, half:]).mean(axis=1)


def _features(
    gt: GroundTruth,
    encoder: Encoder,
    first: np.ndarray,
    second: np.ndarray,
    chunk_size: int,
    dim: int | None = None,
) -> np.ndarray:
    """Features ``[n, d]`` of the paired batches, the two halves of each pair encoded together."""
    pairs = np.concatenate([first, second], axis=1)
    return encode_batches(gt, encoder, pairs, chunk_size, pair_features, dim=dim)


def beta_vae_score(
    gt: GroundTruth,
    encoder: Encoder,
    random_state: RandomState,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, float]:
    """β-VAE score of ``encoder`` on ``gt`` (Higgins et al. 2017, dlib's defaults).

    Args:
        gt: the ground truth (all of its factors are labels; at least 2 factors).
        encoder: ``encode(uint8 [n, H, W, C]) -> (mu, logvar)``; the representation is ``mu``.
        random_state: int seed, ``np.random.Generator``/``RandomState`` or ``None`` (seed 0);
            also seeds the classifier.
        batch_size: pairs averaged into one feature vector (dlib 64).
        num_train, num_eval: feature vectors to fit and to evaluate the classifier.
        chunk_size: images per encoder call.

    Returns:
        ``{"train_accuracy", "eval_accuracy"}``.
    """
    batch_size = check_count(batch_size, "batch_size")
    num_train = check_count(num_train, "num_train", 2)
    num_eval = check_count(num_eval, "num_eval")
    chunk_size = check_count(chunk_size, "chunk_size")
    if gt.num_factors < 2:
        raise InvalidArgumentError(
            f"{gt.name} has {gt.num_factors} factor(s); the β-VAE score classifies which factor "
            "is fixed and needs at least 2"
        )
    rng = as_generator(random_state)
    train_labels, a, b = paired_batches(gt, num_train, batch_size, rng)
    if len(np.unique(train_labels)) < 2:
        raise InvalidArgumentError(
            f"num_train={num_train} drew a single factor as label; use more training points"
        )
    train_x = _features(gt, encoder, a, b, chunk_size)
    model = LogisticRegression(random_state=seed_from(rng))
    model.fit(train_x, train_labels)
    train_accuracy = float(np.mean(model.predict(train_x) == train_labels))

    eval_labels, a, b = paired_batches(gt, num_eval, batch_size, rng)
    eval_x = _features(gt, encoder, a, b, chunk_size, dim=train_x.shape[1])
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_labels))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}
