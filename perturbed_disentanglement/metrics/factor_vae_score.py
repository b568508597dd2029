"""FactorVAE disentanglement score, as computed by disentanglement_lib.

Kim & Mnih, "Disentangling by Factorising", ICML 2018 (arXiv:1802.05983), §4. dlib's
``evaluation/metrics/factor_vae.py`` with the ``unsupervised_study_v1`` settings:

1. Global scale: the variance (``ddof=1``) of every code dimension over 10,000 random points.
   Dimensions whose *standard deviation* is below ``prune_threshold`` = 0.05 are pruned as
   collapsed to the prior (dlib's ``_prune_dims`` compares ``sqrt(variance) >= threshold``).
2. One vote: pick a factor uniformly, draw a batch of 64 points that share its value (the first
   row's) and are otherwise random, take the variance of each active dimension over the batch
   divided by its global variance, and vote (factor, argmin dimension).
3. The classifier maps each dimension to the factor that gave it most votes (majority vote).
   Accuracy = share of votes that agree with it, on 10,000 training and 5,000 evaluation votes.

Differences from dlib, all deliberate: the votes are counted in the *original* dimension's
column (dlib counts the argmin's position among the active dimensions, a relabelling that does
not change the accuracy); ``num_active_dims`` is the number of unpruned dimensions (dlib returns
the total number of dimensions, ``len`` of a boolean mask); a dimension with zero global
variance is always pruned (dlib would divide by zero when the threshold is 0). The random
streams differ from dlib's (numpy ``Generator``), so the numbers match dlib's in distribution,
not digit for digit.

All the ``num_train + num_eval`` batches are drawn first and encoded in large chunks
(``chunk_size`` images), then reduced with a reshape: about 1M images, never one batch per call.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..ground_truth import GroundTruth
from ._checks import check_count, check_real
from ._random import RandomState, as_generator
from .sampling import DEFAULT_CHUNK, Encoder, encode_batches, sample_codes


def fixed_factor_batches(
    gt: GroundTruth, num_batches: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num_batches`` random factors and batches ``[num_batches, batch_size, k]`` fixing them.

    In batch ``b`` every row takes the first row's value of factor ``fixed[b]``; the other
    factors are uniform and independent.
    """
    k = gt.num_factors
    fixed = rng.integers(0, k, size=num_batches)
    rows = gt.sample_factors(num_batches * batch_size, rng).astype(np.int64)
    rows = rows.reshape(num_batches, batch_size, k)
    b = np.arange(num_batches)
    rows[b, :, fixed] = rows[b, 0, fixed][:, None]
    return fixed, rows


def active_dimensions(global_variances: np.ndarray, prune_threshold: float) -> np.ndarray:
    """Boolean mask of the dimensions kept: standard deviation ``>= prune_threshold`` and > 0."""
    return (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)


def votes_from_variances(
    local_variances: np.ndarray,
    global_variances: np.ndarray,
    active: np.ndarray,
    fixed: np.ndarray,
    num_factors: int,
) -> np.ndarray:
    """Vote matrix ``[k, d]`` from per-batch variances ``[n, d]`` and the fixed factors ``[n]``.

    Each batch votes for (its fixed factor, the active dimension of least normalised variance).
    """
    dims = np.flatnonzero(active)
    ratio = local_variances[:, dims] / global_variances[dims]
    winner = dims[np.argmin(ratio, axis=1)]
    votes = np.zeros((num_factors, len(global_variances)), dtype=np.int64)
    np.add.at(votes, (fixed, winner), 1)
    return votes


def majority_vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of the votes ``[k, d]`` that fall on ``classifier[dim]`` (the factor predicted)."""
    total = votes.sum()
    if total == 0:
        raise InvalidArgumentError("no votes to score; expected at least one batch")
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / total)


def batch_variances(mu: np.ndarray) -> np.ndarray:
    """Variance (ddof=1) of each code dimension within each batch: ``[m, B, d]`` → ``[m, d]``."""
    return mu.var(axis=1, ddof=1)


def factor_vae_score(
    gt: GroundTruth,
    encoder: Encoder,
    random_state: RandomState,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, float | int]:
    """FactorVAE score of ``encoder`` on ``gt`` (Kim & Mnih 2018, dlib's defaults).

    Args:
        gt: the ground truth (all of its factors are scored).
        encoder: ``encode(uint8 [n, H, W, C]) -> (mu, logvar)``; the representation is ``mu``.
        random_state: int seed, ``np.random.Generator``/``RandomState`` or ``None`` (seed 0).
        batch_size: points per vote (dlib 64, at least 2 for a variance).
        num_train, num_eval: votes used to fit and to evaluate the majority-vote classifier.
        num_variance_estimate: points for the global variances (at least 2).
        prune_threshold: minimum standard deviation of a kept dimension (dlib 0.05).
        chunk_size: images per encoder call.

    Returns:
        ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``; accuracies are 0 and
        ``num_active_dims`` 0 when every dimension is pruned, as in dlib.
    """
    batch_size = check_count(batch_size, "batch_size", 2)
    num_train = check_count(num_train, "num_train")
    num_eval = check_count(num_eval, "num_eval")
    num_variance_estimate = check_count(num_variance_estimate, "num_variance_estimate", 2)
    chunk_size = check_count(chunk_size, "chunk_size")
    prune_threshold = check_real(prune_threshold, "prune_threshold")
    rng = as_generator(random_state)

    mu, _ = sample_codes(gt, encoder, num_variance_estimate, rng, chunk_size)
    global_variances = mu.var(axis=0, ddof=1)
    active = active_dimensions(global_variances, prune_threshold)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    k = gt.num_factors
    fixed_train, rows_train = fixed_factor_batches(gt, num_train, batch_size, rng)
    fixed_eval, rows_eval = fixed_factor_batches(gt, num_eval, batch_size, rng)
    d = len(global_variances)
    local_train = encode_batches(gt, encoder, rows_train, chunk_size, batch_variances, dim=d)
    local_eval = encode_batches(gt, encoder, rows_eval, chunk_size, batch_variances, dim=d)
    train_votes = votes_from_variances(local_train, global_variances, active, fixed_train, k)
    eval_votes = votes_from_variances(local_eval, global_variances, active, fixed_eval, k)
    classifier = np.argmax(train_votes, axis=0)
    return {
        "train_accuracy": majority_vote_accuracy(train_votes, classifier),
        "eval_accuracy": majority_vote_accuracy(eval_votes, classifier),
        "num_active_dims": int(active.sum()),
    }
