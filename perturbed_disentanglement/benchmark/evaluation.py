"""Scoring one representation on one config: the benchmark's metrics, and a user's own encoder.

Every run of the harness, and :func:`evaluate_encoder` for a model trained elsewhere, is scored
the same way, with disentanglement_lib's protocols (Locatello et al., ICML 2019): MIG on
``num_train`` uniform grid samples; DCI and SAP fitted on those and tested on ``num_test`` others;
the FactorVAE score with its own votes; active units and the information level of the latent
that encodes each factor and ``s`` (paper Fig. 4c) on the training sample.

:func:`evaluate_representation` is three pieces, so that a GPU script can run the first two in
its main process and the CPU-bound classifier fits in a process pool, with the same code:
:func:`sample_codes` (dlib's samples, encoded), :func:`encoder_metrics` (everything that needs the
encoder or the training codes) and :func:`classifier_metrics` (DCI and SAP).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from ..metrics import (
    dci,
    encode_indices,
    factor_vae_score,
    histogram_discretize,
    information_level,
    mean_posterior_variance,
    mig,
    mutual_information_matrix,
    num_active_units,
    sap,
)
from ..metrics._random import RandomState, as_generator
from ..metrics.diagnostics import s_alignment
from .data import ConfigData, load_config

#: ``encode(uint8 images [n, 64, 64, C]) -> (mu [n, d], logvar [n, d] or None)``.
EncodeFn = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class EvaluationSizes:
    """Sample sizes of the metrics: dlib's by default, smaller for smoke runs.

    ``classifier_train``/``classifier_test``: DCI and SAP are fitted on the first
    ``classifier_train`` points of the training sample and tested on the first
    ``classifier_test`` of the test sample (None: all of them, dlib's protocol). Their
    scikit-learn fits are the slow part; a time-boxed run may give them fewer points.
    """

    num_train: int = 10_000
    num_test: int = 5_000
    factor_vae_train: int = 10_000
    factor_vae_eval: int = 5_000
    factor_vae_variance: int = 10_000
    classifier_train: int | None = None
    classifier_test: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return dict(self.__dict__)


def checked_encoder(encode_fn: EncodeFn) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``encode_fn`` made strict: float ``[n, d]`` finite μ (and log σ², zeros when it gives
    none, i.e. a deterministic encoder), or a clear error naming what came back."""

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = encode_fn(images)
        mu, logvar = out if isinstance(out, tuple) else (out, None)
        mu = _as_codes(mu, "mu", len(images))
        if logvar is None:
            logvar = np.zeros_like(mu)
        logvar = _as_codes(logvar, "logvar", len(images))
        if logvar.shape != mu.shape:
            raise InvalidArgumentError(
                f"the encoder returned logvar {list(logvar.shape)} for mu {list(mu.shape)}; "
                "expected the same shape"
            )
        return mu, logvar

    return encode


def _as_codes(value: object, name: str, n: int) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()  # a torch tensor
    try:
        codes = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"the encoder returned {type(value).__name__} for {name}; expected a float array [n, d]"
        ) from None
    if codes.ndim != 2 or codes.shape[0] != n or codes.shape[1] < 2:
        raise InvalidArgumentError(
            f"the encoder returned {name} of shape {list(codes.shape)} for {n} images; "
            f"expected [{n}, d] with d >= 2"
        )
    if not np.isfinite(codes).all():
        raise InvalidArgumentError(f"the encoder returned NaN or infinite values in {name}")
    return codes


def latent_of_each(
    mu: np.ndarray, factors: np.ndarray, s: np.ndarray, names: Sequence[str]
) -> dict[str, int]:
    """The latent most informative about each factor and about ``s`` (binned like MIG)."""
    binned = histogram_discretize(mu)
    s_bins = histogram_discretize(s[:, None].astype(np.float64))[:, 0]
    targets = np.concatenate([factors, s_bins[:, None]], axis=1)
    mi = mutual_information_matrix(binned, targets)
    return dict(zip([*names, "s"], (int(d) for d in np.argmax(mi, axis=0))))


@dataclass(frozen=True, eq=False)
class Codes:
    """One representation's codes of dlib's two uniform samples: what the metrics share.

    ``names``: the factors with two values or more (dlib drops the others; ``factors`` and
    ``factors_test`` hold their columns). ``train_idx``: the training sample's grid indices (the
    ``s`` of each point). ``logvar`` is the training sample's (the test sample's is not used).
    """

    names: tuple[str, ...]
    mu: np.ndarray
    logvar: np.ndarray
    factors: np.ndarray
    train_idx: np.ndarray
    mu_test: np.ndarray
    factors_test: np.ndarray

    def head(self, num_train: int | None, num_test: int | None) -> Codes:
        """The first ``num_train`` training and ``num_test`` test points (None: all): the
        classifiers' subset, small enough to send to another process."""
        n, m = slice(num_train), slice(num_test)
        return Codes(
            self.names,
            self.mu[n],
            self.logvar[n],
            self.factors[n],
            self.train_idx[n],
            self.mu_test[m],
            self.factors_test[m],
        )


def sample_codes(
    gt: GroundTruth,
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    sizes: EvaluationSizes,
    rng: RandomState,
) -> Codes:
    """dlib's training and test samples (uniform on the grid, training first) and their codes.

    ``encode``: a :func:`checked_encoder`. ``rng``: a seed, or a Generator whose stream continues
    (the two samples are its first draws, as in :func:`evaluate_representation`).
    """
    rng = as_generator(rng)
    keep = [k for k, n in enumerate(gt.factor_sizes) if n >= 2]  # dlib drops one-valued factors
    train_f = gt.sample_factors(sizes.num_train, rng).astype(np.int64)
    test_f = gt.sample_factors(sizes.num_test, rng).astype(np.int64)
    train_idx, test_idx = gt.index(train_f), gt.index(test_f)
    mu, logvar = encode_indices(gt, encode, train_idx)
    mu_test, _ = encode_indices(gt, encode, test_idx)
    return Codes(
        names=tuple(gt.factor_names[k] for k in keep),
        mu=mu,
        logvar=logvar,
        factors=train_f[:, keep],
        train_idx=train_idx,
        mu_test=mu_test,
        factors_test=test_f[:, keep],
    )


def encoder_metrics(
    gt: GroundTruth,
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    s: np.ndarray,
    codes: Codes,
    *,
    random_state: RandomState,
    sizes: EvaluationSizes,
    stochastic: bool,
) -> dict[str, Any]:
    """The metrics that need the encoder or the whole training sample: MIG, the FactorVAE score
    (which encodes its own batches), the latent of each factor and of ``s``, and the posterior
    variance metrics with the alignment of the code with ``s`` (None when not ``stochastic``). Cheap next to the encoding, so a GPU script
    runs them where the encoder lives. ``encode``: a :func:`checked_encoder`."""
    m = mig(codes.mu, codes.factors)
    fv = factor_vae_score(
        gt,
        encode,
        random_state,
        num_train=sizes.factor_vae_train,
        num_eval=sizes.factor_vae_eval,
        num_variance_estimate=sizes.factor_vae_variance,
    )
    factor_latent = latent_of_each(codes.mu, codes.factors, s[codes.train_idx], codes.names)
    level = information_level(codes.logvar) if stochastic else None
    alignment = s_alignment(codes.mu, codes.logvar, s[codes.train_idx]) if stochastic else None
    return {
        "mig": float(m["mig"]),
        "mig_per_factor": dict(zip(codes.names, np.asarray(m["mig_per_factor"]).tolist())),
        "factor_vae_score": float(fv["eval_accuracy"]),
        "active_units": num_active_units(codes.logvar) if stochastic else None,
        "mean_variance": mean_posterior_variance(codes.logvar).tolist() if stochastic else None,
        "factor_latent": factor_latent,
        "information_level": (
            {k: float(level[v]) for k, v in factor_latent.items()} if stochastic else None
        ),
        "s_alignment": alignment,
    }


def classifier_metrics(
    codes: Codes, sizes: EvaluationSizes, random_state: RandomState, n_jobs: int = 1
) -> dict[str, float]:
    """DCI and SAP: classifiers fitted on the first ``sizes.classifier_train`` training codes and
    tested on the first ``sizes.classifier_test`` test codes (None: all). Needs no encoder and is
    top-level, so a process pool can run it on codes computed elsewhere. ``n_jobs``: the fits in
    parallel processes (the values do not depend on it)."""
    c = codes.head(sizes.classifier_train, sizes.classifier_test)
    d = dci(c.mu, c.factors, c.mu_test, c.factors_test, random_state=random_state, n_jobs=n_jobs)
    sp = sap(c.mu, c.factors, c.mu_test, c.factors_test, random_state=random_state, n_jobs=n_jobs)
    return {
        "dci_disentanglement": float(d["disentanglement"]),
        "dci_completeness": float(d["completeness"]),
        "dci_informativeness": float(d["informativeness_test"]),
        "sap": float(sp["sap"]),
    }


#: The order of a record's metrics (those of :func:`evaluate_representation`).
METRIC_ORDER = (
    "mig",
    "mig_per_factor",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "sap",
    "factor_vae_score",
    "active_units",
    "mean_variance",
    "factor_latent",
    "information_level",
    "s_alignment",
)


def evaluate_representation(
    gt: GroundTruth,
    encoder: EncodeFn,
    s: np.ndarray,
    *,
    random_state: int = 0,
    sizes: EvaluationSizes = EvaluationSizes(),
    n_jobs: int = 1,
    stochastic: bool | None = None,
) -> dict[str, Any]:
    """The benchmark's metrics of ``encoder`` on ``gt`` (whose grid ``s`` belongs to).

    Returns the ``metrics`` part of a record except ``reconstruction`` (which needs a decoder).
    The posterior-variance metrics (active units, mean σ², information levels) are None for a
    deterministic encoder (``stochastic=False``, e.g. the AE, whose σ head is never trained;
    None: whether ``encoder`` returns a log σ²). ``n_jobs``: DCI's and SAP's fits in parallel
    processes (the values do not depend on it).

    The composition of :func:`sample_codes`, :func:`classifier_metrics` and
    :func:`encoder_metrics`, in this order: a Generator ``random_state`` is drawn from in the
    order it always was (the samples, DCI, SAP, then the FactorVAE score).
    """
    encode = checked_encoder(encoder)
    s = np.asarray(s)
    if stochastic is None:  # a deterministic encoder returns μ alone
        first = encoder(gt.images(np.arange(min(2, len(gt)))))
        stochastic = isinstance(first, tuple) and first[1] is not None
    if s.shape != (len(gt),):
        raise InvalidArgumentError(
            f"s must have one value per grid point ({len(gt)}), got {s.shape}"
        )
    codes = sample_codes(gt, encode, sizes, random_state)
    scores = classifier_metrics(codes, sizes, random_state, n_jobs)
    scores.update(
        encoder_metrics(
            gt, encode, s, codes, random_state=random_state, sizes=sizes, stochastic=stochastic
        )
    )
    return {k: scores[k] for k in METRIC_ORDER}


def survival(original: Mapping[str, Any], other: Mapping[str, Any], metric: str) -> float | None:
    """How much of the original score survives: ``other / original`` (None when it is 0)."""
    base = float(original[metric])
    return None if base == 0 else float(other[metric]) / base


#: The metrics the robustness summary compares (scores where higher means more disentangled).
ROBUSTNESS_METRICS = ("mig", "dci_disentanglement", "sap", "factor_vae_score")


def robustness_summary(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: the share of the ``original`` score that survives ``perturbed`` and ``noise``.

    A representation that disentangles for the dataset's correlations loses much more to the
    perturbation than to noise of the same ε (paper Tables 1–2); one that is robust loses little
    to either.
    """
    if "original" not in scores:
        raise InvalidArgumentError("the robustness summary needs the original config's scores")
    out = {}
    for metric in ROBUSTNESS_METRICS:
        row: dict[str, Any] = {"original": float(scores["original"][metric])}
        for config in ("perturbed", "noise"):
            if config in scores:
                row[config] = float(scores[config][metric])
                row[f"{config}_survival"] = survival(scores["original"], scores[config], metric)
        out[metric] = row
    return out


def evaluate_encoder(
    encode_fn: EncodeFn,
    data: str = "perturbed-dsprites",
    *,
    configs: Sequence[str] = ("original", "perturbed", "noise"),
    random_state: int = 0,
    sizes: EvaluationSizes = EvaluationSizes(),
    cache_dir: str | None = None,
    progress: bool = True,
    loaded: Mapping[str, ConfigData] | None = None,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Score a user's encoder on the configs of a published dataset, with a robustness summary.

    ``encode_fn(uint8 images [n, 64, 64, C])`` returns ``mu`` or ``(mu, logvar)`` (arrays or torch
    tensors, ``[n, d]``); images are raw bytes, so scale them as the model expects. ``data`` is a
    Hub id or a local dataset folder; ``loaded`` passes configs already in memory. Returns
    ``{"data", "configs": {config: metrics}, "robustness": {metric: {...}}}``.
    """
    scores = {}
    for config in configs:
        cd = (loaded or {}).get(config) or load_config(
            data, config, cache_dir=cache_dir, progress=progress
        )
        scores[config] = evaluate_representation(
            cd.ground_truth, encode_fn, cd.s, random_state=random_state, sizes=sizes, n_jobs=n_jobs
        )
    result: dict[str, Any] = {"data": str(data), "configs": scores}
    if "original" in scores:
        result["robustness"] = robustness_summary(scores)
    return result
