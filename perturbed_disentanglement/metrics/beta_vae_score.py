"""β-VAE disentanglement score, as computed by disentanglement_lib (``beta_vae_sklearn``).

Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework", ICLR 2017, §3. dlib's ``evaluation/metrics/beta_vae.py``: one training point is made
from a factor ``y`` drawn uniformly and two batches of 64 random points whose ``i``-th rows share
the value of ``y`` (each pair its own value; every other factor independent); its feature is the
mean over the batch of ``|mu(x1) - mu(x2)|`` per dimension and its label is ``y``. A
scikit-learn ``LogisticRegression`` with default settings is fitted on 10,000 such points and
scored on 5,000 fresh ones.

The random streams differ from dlib's (numpy ``Generator``); all pairs are drawn first and
encoded in large chunks, then reduced with a reshape.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..errors import InvalidArgumentError
from ..ground_truth import GroundTruth
from .sampling import DEFAULT_CHUNK, Encoder, RandomState, as_generator, check_count, encode_indices


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


def pair_features(mu_first: np.ndarray, mu_second: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean absolute code difference per batch: ``[n * B, d]`` twice → ``[n, d]``."""
    diff = np.abs(mu_first - mu_second)
    return diff.reshape(-1, batch_size, diff.shape[1]).mean(axis=1)


def _features(
    gt: GroundTruth, encoder: Encoder, first: np.ndarray, second: np.ndarray, chunk_size: int
) -> np.ndarray:
    """Features ``[n, d]`` of the paired batches, encoding both halves of a chunk together."""
    n, batch, k = first.shape
    per_chunk = max(1, chunk_size // (2 * batch))
    out = []
    for start in range(0, n, per_chunk):
        a = first[start : start + per_chunk].reshape(-1, k)
        b = second[start : start + per_chunk].reshape(-1, k)
        idx = np.concatenate([gt.index(a), gt.index(b)])
        mu, _ = encode_indices(gt, encoder, idx, len(idx))
        out.append(pair_features(mu[: len(a)], mu[len(a) :], batch))
    return np.concatenate(out, axis=0)


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
        random_state: int seed or ``np.random.Generator`` (also seeds the classifier).
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
    train_x = _features(gt, encoder, a, b, chunk_size)
    if len(np.unique(train_labels)) < 2:
        raise InvalidArgumentError(
            f"num_train={num_train} drew a single factor as label; use more training points"
        )
    model = LogisticRegression(random_state=int(rng.integers(0, 2**31 - 1)))
    model.fit(train_x, train_labels)
    train_accuracy = float(np.mean(model.predict(train_x) == train_labels))

    eval_labels, a, b = paired_batches(gt, num_eval, batch_size, rng)
    eval_x = _features(gt, encoder, a, b, chunk_size)
    if eval_x.shape[1] != train_x.shape[1]:
        raise InvalidArgumentError(
            f"the encoder returned {eval_x.shape[1]} dimensions for the evaluation batches but "
            f"{train_x.shape[1]} for the training batches"
        )
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_labels))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}
