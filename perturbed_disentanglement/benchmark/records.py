"""One JSON record per benchmark run, and the results folder that holds them.

A results folder (``--out``) belongs to one dataset and one package version; ``results.json`` at its
root says which, and a sweep refuses a folder of another (records of different data or code must
not be averaged together). Every run writes ``runs/<run_id>/record.json`` atomically when it has
finished; its checkpoints live beside it in ``runs/<run_id>/checkpoints`` until then, so a crashed
run resumes and a finished one is skipped. A record is never overwritten by a different run: the
run id encodes everything that defines the run, and a rerun of a finished id is a no-op.

The record (``format_version`` 1)::

    {
      "format": "perturbed-disentanglement/benchmark-run", "format_version": 1,
      "package_version": "0.1.0",
      "run_id": "beta_vae-beta=8-perturbed-seed0-steps20000",
      "data": {"name": "perturbed-dsprites", "dataset": "dsprites", "config": "perturbed",
               "kind": "perturbed", "epsilon": 0.125, "num_images": 737280,
               "fingerprint": "<sha256 of the decoded images and s in grid order>"},
      "model": "beta_vae", "hparams": {"beta": 8.0},
      "regulariser": {"name": "beta", "value": 8.0},     # the zoo's grid parameter (None for AE)
      "seed": 0, "steps": 20000, "batch_size": 64, "preset": "cpu",
      "metrics": {
        "mig": float, "mig_per_factor": {factor: float},
        "dci_disentanglement": float, "dci_completeness": float, "dci_informativeness": float,
        "sap": float, "factor_vae_score": float,
        "active_units": int, "mean_variance": [float] * d,
        "reconstruction": float,                          # mean per-image Bernoulli loss (nats)
        "factor_latent": {factor: int, "s": int},         # latent most informative about each
        "information_level": {factor: float, "s": float}, # 1 - E sigma^2 of that latent (Fig. 4c)
        "s_alignment": {"nmi": [float] * d, "mean_variance": [float] * d, "least_noise": int,
                        "least_noise_nmi": float, "best": int, "best_nmi": float,
                        "follows_s": bool},                 # I(z_k; s) / H(s), binned like MIG
        "uptake": float | None                            # share of the perturbation the
      },                                                  # decoder reproduces (None: original)
                                                          # (σ metrics None for the AE: no σ head)
      "trajectory": [{"step": int, "mig": float, "mig_per_factor": {...}, "s_alignment": {...},
                      "uptake": float | None}],           # at 1/4, 1/2, 3/4 and all the steps
      "training": {"seconds": float, "steps_per_second": float, "device": str,
                   "precision": str, "num_threads": int, "final_loss": {term: float}},
      "evaluation": {"seconds": float, "random_state": int, "num_train": int, "num_test": int,
                     "factor_vae_train": int, "factor_vae_eval": int, "factor_vae_variance": int,
                     "classifier_train": int | None, "classifier_test": int | None}
    }                                 # classifier_*: DCI/SAP on the first n points (None: all)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ArtifactError
from ..util.atomic import write_json_atomic

FORMAT = "perturbed-disentanglement/benchmark-run"
FORMAT_VERSION = 1
RESULTS_FORMAT = "perturbed-disentanglement/benchmark-results"
RESULTS_FILE = "results.json"
RUNS_DIR = "runs"
RECORD_FILE = "record.json"
CHECKPOINT_DIR = "checkpoints"

#: The metrics every record carries, in the order tables show them.
METRICS = (
    "mig",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "sap",
    "factor_vae_score",
    "active_units",
    "reconstruction",
)

_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


def number_label(value: float) -> str:
    """``8.0`` -> ``"8"``, ``0.5`` -> ``"0.5"``: how numbers appear in run ids."""
    return f"{float(value):.6g}"


def run_id(model: str, hparams: Mapping[str, float], config: str, seed: int, steps: int) -> str:
    """A readable, filesystem-safe id that encodes everything that defines a run."""
    hp = "-".join(f"{k}={number_label(v)}" for k, v in sorted(hparams.items()))
    parts = [model, hp, config, f"seed{int(seed)}", f"steps{int(steps)}"]
    return _SAFE.sub("_", "-".join(p for p in parts if p))


def results_identity(dataset_name: str, dataset: str) -> dict[str, Any]:
    """What a results folder belongs to: the data it evaluates and the package version."""
    return {
        "format": RESULTS_FORMAT,
        "data": dataset_name,
        "dataset": dataset,
        "package_version": __version__,
    }


def open_results(out: str | os.PathLike, identity: Mapping[str, Any]) -> Path:
    """Create ``out`` for ``identity``, or check that an existing folder belongs to it."""
    root = Path(out)
    path = root / RESULTS_FILE
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{path} is corrupt ({exc}); expected a results identity") from exc
        for key in ("format", "data", "dataset", "package_version"):
            if stored.get(key) != identity[key]:
                raise ArtifactError(
                    f"{root} holds results for {key}={stored.get(key)!r}, but this sweep has "
                    f"{key}={identity[key]!r}; use another --out (records of different data or "
                    "package versions must not be mixed)"
                )
    else:
        if root.exists() and any(p.name != RUNS_DIR for p in root.iterdir()):
            raise ArtifactError(
                f"{root} already holds files that are not benchmark results; use another --out"
            )
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, dict(identity))
    (root / RUNS_DIR).mkdir(exist_ok=True)
    return root


def run_dir(out: str | os.PathLike, rid: str) -> Path:
    return Path(out) / RUNS_DIR / rid


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A record, checked for its format; a clear error for anything else."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from exc
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} is not a benchmark record of format {FORMAT} v{FORMAT_VERSION} "
            f"(got {record.get('format')!r} v{record.get('format_version')!r})"
        )
    missing = [m for m in METRICS if m not in record.get("metrics", {})]
    if missing:
        raise ArtifactError(f"{path} lacks the metrics {missing}")
    return record


def finished_record(out: str | os.PathLike, rid: str) -> dict[str, Any] | None:
    """The record of run ``rid`` if it has finished, else None."""
    path = run_dir(out, rid) / RECORD_FILE
    return read_record(path) if path.exists() else None


def write_record(out: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write a finished run's record atomically; refuse to replace a different one."""
    path = run_dir(out, record["run_id"]) / RECORD_FILE
    if path.exists():
        raise ArtifactError(f"{path} already holds a finished run; records are never overwritten")
    return write_json_atomic(path, dict(record))


def iter_records(out: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every finished record under ``out``, in run-id order."""
    for path in sorted((Path(out) / RUNS_DIR).glob(f"*/{RECORD_FILE}")):
        yield read_record(path)
