"""The reference stage (paper §4.1, SPEC §3): the most entangled β-VAE and its leading component s.

R restarts of a β-VAE with one latent per generative factor are trained on the original grid;
each is scored (MIG with disentanglement_lib's protocol, active units, mean posterior variance
per latent, information level per factor) and the restart with the **lowest** MIG is kept: the most
entangled alignment the architecture produces. A rule (:mod:`.s_rules`) picks a direction ``w`` in
its latent space — the paper's is the latent with the least injected noise, ``j = argmin_k E_x
σ²_k(x)`` over the whole grid — and

    s(x) = sign · (μ(x) · w − mean) / std      (mean, std over the grid; float64, stored float32)

with ``sign`` chosen so that s correlates positively with the factor it follows most (a fixed
convention: the encoder's sign is arbitrary). The record says how entangled ``s`` is
(:func:`~..metrics.diagnostics.s_entanglement`): the method needs an entangled direction. The
stored float32 ``s`` is the contract every later stage reads, so a build is byte-identical on every
machine.

A :class:`Reference` is the artifact: the chosen VAE's weights (safetensors), ``s`` for every grid
index in grid order (``s.npy``) and a JSON record of the protocol, every restart's metrics, the
choice, the standardisation constants, sha256 of ``s`` and of the weights, the ground truth it
was computed on and the package version. The shipped ones live in ``shipped/<dataset>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ArtifactError, InvalidArgumentError
from ..ground_truth import GroundTruth, sha256_of
from ..ground_truth.subgrid import SubGrid
from ..metrics import (
    encode_indices,
    information_level_by_factor,
    mean_posterior_variance,
    mig,
    num_active_units,
)
from ..metrics._random import as_generator
from ..metrics.diagnostics import s_entanglement
from ..training.models import VAE
from ..training.single import TrainResult, encode, train
from ..training.zoo import hyperparameters
from ..util.atomic import (
    fsync_dir,
    make_temp_dir,
    replace_dir,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
)
from ..util.lock import LOCK_FILE, exclusive, holder
from ..util.shared_array import shared_array
from .s_rules import DEFAULT_S_RULE, SChoice, check_rule, choose_s

#: The model whose restarts define s (paper §4.1).
REFERENCE_MODEL = "beta_vae"
#: Folder of the references shipped with the package.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
RECORD_FILE, S_FILE, WEIGHTS_FILE = "reference.json", "s.npy", "model.safetensors"
FORMAT = "perturbed-disentanglement/reference"
FORMAT_VERSION = 2
#: Versions :func:`load_reference` reads. Version 1 records predate the s rules and the
#: entanglement record: they were all made by the paper's rule, and the entanglement of their
#: ``s`` is computed when they are loaded (the grid's factors follow from its sizes).
READABLE_VERSIONS = (1, 2)
#: Images hashed for a ground truth's fingerprint (evenly spaced, first and last included).
FINGERPRINT_IMAGES = 4096


@dataclass(frozen=True)
class Preset:
    """How much compute the reference protocol gets.

    ``strides`` shrink each dataset's grid to a strided sub-grid (``smoke`` only: a real ground
    truth of a few thousand images, so every stage still runs); ``mig_points`` is dlib's MIG sample
    size, on which every restart is also scored for active units and posterior variances.
    """

    name: str
    restarts: int
    steps: int
    mig_points: int = 10_000
    checkpoint_every: int = 2_000
    strides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # seconds: a 1,536-image dSprites / 192-image Shapes3D sub-grid, for tests and --smoke builds
    "smoke": Preset(
        "smoke",
        restarts=2,
        steps=30,
        mig_points=1_000,
        checkpoint_every=10,
        strides={
            "dsprites": {"scale": 5, "orientation": 10, "posX": 4, "posY": 4},
            "shapes3d": {
                "floor_hue": 5,
                "wall_hue": 5,
                "object_hue": 5,
                "scale": 7,
                "orientation": 7,
            },
        },
    ),
    # what a 2-core CPU does in a few hours (1-3 h per dataset); the shipped references
    "cpu": Preset("cpu", restarts=3, steps=20_000),
    # the paper's protocol (dlib's 300,000 steps), for a GPU: restarts train stacked
    "paper": Preset("paper", restarts=10, steps=300_000, checkpoint_every=10_000),
}


def preset(name: str | Preset) -> Preset:
    """The preset called ``name`` (``smoke``, ``cpu`` or ``paper``)."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise InvalidArgumentError(
            f"unknown reference preset {name!r}; expected one of {', '.join(PRESETS)}"
        )
    return PRESETS[name]


def preset_ground_truth(gt: GroundTruth, chosen: str | Preset) -> GroundTruth:
    """``gt`` itself, or the preset's strided sub-grid of it (``smoke``)."""
    strides = preset(chosen).strides.get(gt.name)
    return SubGrid(gt, strides) if strides else gt


# --- pure pieces ---------------------------------------------------------------------------------
def grid_identity(gt: GroundTruth) -> dict[str, Any]:
    """What makes ``s`` belong to a ground truth: its structure and a fingerprint of its images.

    The fingerprint is a blake2b digest of :data:`FINGERPRINT_IMAGES` evenly spaced images
    (milliseconds on a rendered grid): it tells the procedural grid from an official file, a
    sub-grid from the full one, and a changed renderer from the one ``s`` was computed on.
    """
    n = len(gt)
    index = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_IMAGES)).round().astype(np.int64))
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(gt.image_shape), n)).encode())
    for start in range(0, len(index), 1024):
        h.update(np.ascontiguousarray(gt.images(index[start : start + 1024])).data)
    return {
        "name": gt.name,
        "source": "procedural" if gt.source == "procedural" else "official",
        "factor_names": list(gt.factor_names),
        "factor_sizes": [int(s) for s in gt.factor_sizes],
        "image_shape": [int(s) for s in gt.image_shape],
        "num_images": n,
        "fingerprint": h.hexdigest(),
    }


def select_restart(migs: Sequence[float]) -> int:
    """Index of the restart with the lowest MIG (the most entangled; ties: the first)."""
    values = np.asarray(migs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InvalidArgumentError(f"need one MIG per restart, got shape {list(values.shape)}")
    if not np.all(np.isfinite(values)):
        raise InvalidArgumentError(f"every restart's MIG must be finite, got {values.tolist()}")
    return int(np.argmin(values))


def leading_latent(logvar: np.ndarray) -> tuple[int, np.ndarray]:
    """``(j, mean σ² per latent)`` with ``j = argmin_k E_x σ²_k(x)`` (paper eq. 6)."""
    variance = mean_posterior_variance(logvar)
    return int(np.argmin(variance)), variance


def standardise(mu_j: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Standardised float32 ``s`` of one latent over the grid, and the constants that made it.

    Mean and (population) standard deviation in float64; the sign makes ``s`` correlate positively
    with the factor (column of ``factors``, int ``[N, k]``) with which ``|corr|`` is largest.
    """
    x = np.asarray(mu_j, dtype=np.float64)
    if x.ndim != 1 or len(x) != len(factors):
        raise InvalidArgumentError(
            f"mu_j must be [N] with one value per factor row, got {list(x.shape)} and "
            f"{len(factors)} rows"
        )
    mean, std = float(x.mean()), float(x.std())
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise ArtifactError(f"the latent is constant or not finite over the grid (std={std})")
    z = (x - mean) / std
    f = np.asarray(factors, dtype=np.float64)
    fc = f - f.mean(axis=0)
    norms = np.sqrt((fc**2).sum(axis=0)) * math.sqrt(len(z))
    corr = np.divide(fc.T @ z, norms, out=np.zeros(f.shape[1]), where=norms > 0)
    k = int(np.argmax(np.abs(corr)))
    sign = -1.0 if corr[k] < 0 else 1.0
    s = (sign * z).astype(np.float32)
    return s, {"mean": mean, "std": std, "sign": sign, "sign_factor": k, "correlations": corr}


def s_sha256(s: np.ndarray) -> str:
    """sha256 of ``s`` as little-endian float32 bytes (what the record stores)."""
    return hashlib.sha256(np.ascontiguousarray(s, dtype="<f4").tobytes()).hexdigest()


# --- the artifact ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """A reference artifact: ``s`` (float32 ``[N]``, grid order), the VAE's weights, the record."""

    record: dict[str, Any]
    s: np.ndarray = field(repr=False)
    weights: dict[str, torch.Tensor] = field(repr=False)

    @property
    def dataset(self) -> str:
        return self.record["ground_truth"]["name"]

    @property
    def latent(self) -> int:
        return int(self.record["s"]["latent"])

    @property
    def rule(self) -> dict[str, Any]:
        """The s rule and its weights on the chosen VAE's encoder means (``s_rules.SChoice``)."""
        return self.record["s"]["rule"]

    @property
    def entanglement(self) -> dict[str, Any]:
        """How entangled ``s`` is with the factors (``metrics.diagnostics.s_entanglement``)."""
        return self.record["s"]["entanglement"]

    @property
    def chosen_mig(self) -> float:
        return float(self.record["restarts"][self.record["chosen"]]["mig"])

    def vae(self) -> VAE:
        """The chosen restart's VAE (eval mode, CPU)."""
        spec = self.record["model"]
        vae = VAE(int(spec["channels"]), int(spec["latent_dim"]))
        vae.load_state_dict(self.weights)
        return vae.eval()

    def check_ground_truth(self, gt: GroundTruth) -> None:
        """Raise :class:`ArtifactError` unless ``s`` was computed on ``gt``'s images."""
        expected, got = self.record["ground_truth"], grid_identity(gt)
        for key in ("name", "factor_names", "factor_sizes", "image_shape", "fingerprint"):
            if expected[key] != got[key]:
                hint = (
                    "; an official file needs s recomputed by the reference's encoder "
                    "(reference.recompute(gt))"
                    if key == "fingerprint" and expected["factor_sizes"] == got["factor_sizes"]
                    else ""
                )
                raise ArtifactError(
                    f"the reference's s was computed on another ground truth: {key} is "
                    f"{expected[key]!r} in the reference but {got[key]!r} for {gt!r}{hint}"
                )

    def save(self, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the artifact folder atomically (a complete folder or none)."""
        target = Path(out)
        if target.exists() and not overwrite:
            raise ArtifactError(f"{target} already exists; pass overwrite=True to replace it")
        if target.exists() and not _is_artifact_folder(target):
            raise ArtifactError(
                f"{target} is not a reference artifact (it holds other files, or its record is not "
                f"a {FORMAT} record); refusing to replace it: choose another output folder"
            )
        tmp = make_temp_dir(target)
        try:
            from safetensors.torch import save  # bytes: save_file would create a 0600 file

            write_npy_atomic(tmp / S_FILE, self.s.astype("<f4"))
            weights = save({k: v.contiguous() for k, v in self.weights.items()})
            write_bytes_atomic(tmp / WEIGHTS_FILE, weights)
            record = json.loads(json.dumps(self.record))
            record["format_version"] = FORMAT_VERSION  # a loaded format-1 record was upgraded
            record["model"]["file_sha256"] = sha256_of(tmp / WEIGHTS_FILE)
            write_json_atomic(tmp / RECORD_FILE, record)
            fsync_dir(tmp)
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def recompute(
        self, gt: GroundTruth, *, num_threads: int | None = None, progress: bool = True
    ) -> Reference:
        """This reference re-applied to ``gt`` (an official file of the same grid): s recomputed.

        The shipped encoder encodes ``gt``'s images; ``s`` is the rule's direction ``μ · w``
        standardised over ``gt``'s grid with the reference's sign. The record says so
        (``s.recomputed_on``).
        """
        self._check_sizes(gt)
        mu, _ = encode(self.vae(), gt.all_images(), num_threads=num_threads, progress=progress)
        x = mu.astype(np.float64) @ np.asarray(self.rule["weights"], np.float64)
        mean, std = float(x.mean()), float(x.std())
        sign = float(self.record["s"]["sign"])
        s = (sign * (x - mean) / std).astype(np.float32)
        record = json.loads(json.dumps(self.record))
        record["s"].update(
            mean=mean,
            std=std,
            sha256=s_sha256(s),
            recomputed_on=grid_identity(gt),
            note="s recomputed by the shipped encoder on these images, standardised over them",
        )
        record["ground_truth"] = record["s"]["recomputed_on"]
        record["s"]["entanglement"] = entanglement_of(s, gt)
        return Reference(record, s, self.weights)

    def with_rule(
        self,
        rule: str,
        gt: GroundTruth,
        *,
        encoding: tuple[np.ndarray, np.ndarray] | None = None,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> Reference:
        """This reference's VAE with another s rule: ``s`` recomputed on ``gt``'s grid.

        ``encoding``: the VAE's ``(mu, logvar)`` of every grid image, if already computed. The
        new ``s`` is computed on this CPU (float32 encodings differ in the last bits between
        CPUs, so a build from it is not byte-identical across machines, unlike a shipped ``s``).
        """
        check_rule(rule)
        self._check_sizes(gt)
        if encoding is None:
            encoding = encode(
                self.vae(), gt.all_images(), num_threads=num_threads, progress=progress
            )
        mu, logvar = encoding
        factors = gt.factors(np.arange(len(gt)))
        choice = choose_s(rule, mu, logvar, factors, list(gt.factor_names))
        s, constants = standardise(choice.direction(mu), factors)
        record = json.loads(json.dumps(self.record))
        record["s"] = s_section(choice, s, constants, logvar, gt)
        record["s"]["note"] = f"s recomputed with rule {rule!r} by the reference's encoder"
        record["package_version"] = __version__
        record["ground_truth"] = grid_identity(gt)
        return Reference(record, s, self.weights)

    def _check_sizes(self, gt: GroundTruth) -> None:
        if list(gt.factor_sizes) != self.record["ground_truth"]["factor_sizes"]:
            raise ArtifactError(
                f"cannot re-apply a {self.dataset} reference to {gt!r}: factor sizes "
                f"{list(gt.factor_sizes)} differ from {self.record['ground_truth']['factor_sizes']}"
            )


def entanglement_of(s: np.ndarray, gt: GroundTruth) -> dict[str, Any]:
    """:func:`~..metrics.diagnostics.s_entanglement` of a grid's ``s`` (one value per index)."""
    return s_entanglement(s, gt.factors(np.arange(len(gt))), list(gt.factor_names))


def s_section(
    choice: SChoice,
    s: np.ndarray,
    constants: Mapping[str, Any],
    logvar: np.ndarray,
    gt: GroundTruth,
) -> dict[str, Any]:
    """The record's ``s`` section: the rule, the standardisation, the entanglement, the hash."""
    return {
        "latent": choice.latents[0],
        "rule": choice.as_dict(),
        "mean_variance_grid": mean_posterior_variance(logvar).tolist(),
        "mean": constants["mean"],
        "std": constants["std"],
        "sign": constants["sign"],
        "sign_factor": gt.factor_names[constants["sign_factor"]],
        "factor_correlations": dict(
            zip(gt.factor_names, np.round(constants["correlations"], 6).tolist())
        ),
        "entanglement": entanglement_of(s, gt),
        "definition": "s = sign * (mu @ rule.weights - mean) / std over the grid",
        "dtype": "float32",
        "sha256": s_sha256(s),
        "file": S_FILE,
    }


def _factors_of_sizes(sizes: Sequence[int]) -> np.ndarray:
    """Every grid point's factor indices, in grid order (row-major, last fastest): int64 [N, k]."""
    return np.indices(tuple(sizes)).reshape(len(sizes), -1).T.astype(np.int64)


def _upgrade_version_1(record: dict[str, Any], s: np.ndarray) -> None:
    """Fill what a format-1 record lacks (it was made by the paper's rule; see READABLE_VERSIONS)."""
    part = record["s"]
    latent_dim = int(record["model"]["latent_dim"])
    weights = [1.0 if k == part["latent"] else 0.0 for k in range(latent_dim)]
    part.setdefault("rule", {"rule": "paper", "weights": weights, "latents": [part["latent"]]})
    if "entanglement" not in part:
        gt = record["ground_truth"]
        factors = _factors_of_sizes(gt["factor_sizes"])
        part["entanglement"] = s_entanglement(s, factors, list(gt["factor_names"]))
        part["entanglement"]["note"] = "computed on load: a format-1 record"


def _is_artifact_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a reference artifact and nothing else (safe to replace)."""
    if not folder.is_dir() or {p.name for p in folder.iterdir()} != {
        RECORD_FILE,
        S_FILE,
        WEIGHTS_FILE,
    }:
        return False
    try:
        return json.loads((folder / RECORD_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


#: The record's fields this package reads, and their types.
_RECORD_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "ground_truth": {
        "name": str,
        "factor_names": list,
        "factor_sizes": list,
        "image_shape": list,
        "num_images": int,
        "fingerprint": str,
    },
    "s": {"latent": int, "sha256": str, "sign": (int, float), "mean": float, "std": float},
    "model": {"channels": int, "latent_dim": int, "file_sha256": str},
}


def _check_record(record: dict[str, Any], path: Path) -> None:
    """Every field :class:`Reference` reads is present with its type, else an ArtifactError."""
    for section, fields in _RECORD_FIELDS.items():
        part = record.get(section)
        if not isinstance(part, dict):
            raise ArtifactError(f"{path}: the record has no {section!r} section")
        for key, kind in fields.items():
            value = part.get(key)
            if isinstance(value, bool) or not isinstance(value, kind):
                kinds = kind if isinstance(kind, tuple) else (kind,)
                raise ArtifactError(
                    f"{path}: record field {section}.{key} is {value!r}; expected a "
                    + " or ".join(k.__name__ for k in kinds)
                )
    restarts, chosen = record.get("restarts"), record.get("chosen")
    if (
        not isinstance(restarts, list)
        or not isinstance(chosen, int)
        or not 0 <= chosen < len(restarts)
    ):
        raise ArtifactError(f"{path}: the record's restarts and chosen restart do not match")


def _check_rule_record(record: dict[str, Any], path: Path) -> None:
    """The rule and entanglement of a (format-2, or upgraded format-1) record, else ArtifactError."""
    rule, entanglement = record["s"].get("rule"), record["s"].get("entanglement")
    weights = rule.get("weights") if isinstance(rule, dict) else None
    if (
        not isinstance(weights, list)
        or len(weights) != record["model"]["latent_dim"]
        or not all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights)
    ):
        raise ArtifactError(
            f"{path}: record field s.rule.weights must list one finite weight per latent "
            f"({record['model']['latent_dim']}), got {weights!r}"
        )
    if not isinstance(entanglement, dict) or not isinstance(
        entanglement.get("variance_fraction"), dict
    ):
        raise ArtifactError(f"{path}: the record has no s.entanglement.variance_fraction")


def load_reference(
    where: str | os.PathLike, gt: GroundTruth | None = None, *, shipped: bool | None = None
) -> Reference:
    """Load and check a reference artifact: a folder, or a dataset name for the shipped one.

    Checks the record's format, the sha256 of ``s`` and of the weights, ``s``'s length and
    finiteness, and with ``gt`` that ``s`` belongs to it (:meth:`Reference.check_ground_truth`).
    """
    folder = Path(where)
    if shipped or (
        shipped is None and not folder.exists() and str(where) in ("dsprites", "shapes3d")
    ):
        folder = SHIPPED_DIR / str(where)
        if not (folder / RECORD_FILE).exists():
            raise ArtifactError(
                f"no reference is shipped for {where!r} (looked in {folder}); train one with "
                f"`python -m generation.reference --dataset {where}`"
            )
    missing = [n for n in (RECORD_FILE, S_FILE, WEIGHTS_FILE) if not (folder / n).is_file()]
    if missing:
        raise ArtifactError(
            f"{folder} is not a complete reference artifact: missing {', '.join(missing)} "
            f"(expected {RECORD_FILE}, {S_FILE} and {WEIGHTS_FILE})"
        )
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / RECORD_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArtifactError(f"{folder / RECORD_FILE} is not a {FORMAT} record")
    if record.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{folder}: reference format version {record.get('format_version')!r}, this package "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    _check_record(record, folder / RECORD_FILE)
    try:
        s = np.load(folder / S_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / S_FILE} is not a readable .npy array: {exc}") from exc
    n = record["ground_truth"]["num_images"]
    if s.dtype != np.dtype("<f4") or s.shape != (n,):
        raise ArtifactError(
            f"{folder / S_FILE} must be float32 [{n}] (one s per grid index), got "
            f"{s.dtype} {list(s.shape)}"
        )
    if s_sha256(s) != record["s"]["sha256"]:
        raise ArtifactError(
            f"{folder / S_FILE}: sha256 {s_sha256(s)} differs from the record's "
            f"{record['s']['sha256']}: the file is corrupt or was modified"
        )
    if not np.all(np.isfinite(s)):
        raise ArtifactError(f"{folder / S_FILE} holds NaN or infinite values")
    if record["format_version"] == 1:
        _upgrade_version_1(record, s)
    _check_rule_record(record, folder / RECORD_FILE)
    if sha256_of(folder / WEIGHTS_FILE) != record["model"]["file_sha256"]:
        raise ArtifactError(
            f"{folder / WEIGHTS_FILE}: sha256 differs from the record's: corrupt or modified"
        )
    from safetensors.torch import load_file

    weights = load_file(folder / WEIGHTS_FILE)
    reference = Reference(record, s, weights)
    if gt is not None:
        reference.check_ground_truth(gt)
    return reference


# --- scoring one restart -----------------------------------------------------------------------
def evaluate_restart(
    vae: VAE,
    gt: GroundTruth,
    *,
    num_points: int = 10_000,
    random_state: int = 0,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """MIG (dlib's protocol: ``num_points`` uniform grid samples, μ, 20 bins) and, on the same
    sample, active units, mean σ² per latent and the information level of each factor's latent."""
    rng = as_generator(random_state)
    factors = gt.sample_factors(num_points, rng).astype(np.int64)
    keep = [k for k, n in enumerate(gt.factor_sizes) if n >= 2]  # dlib drops one-valued factors
    mu, logvar = encode_indices(
        gt, lambda x: encode(vae, x, num_threads=num_threads), gt.index(factors)
    )
    scores = mig(mu, factors[:, keep])
    factor_to_dim = np.argmax(scores["mutual_information"], axis=0)
    return {
        "mig": scores["mig"],
        "mig_per_factor": dict(
            zip([gt.factor_names[k] for k in keep], scores["mig_per_factor"].tolist())
        ),
        "active_units": num_active_units(logvar),
        "mean_variance": mean_posterior_variance(logvar).tolist(),
        "factor_latent": dict(
            zip([gt.factor_names[k] for k in keep], [int(d) for d in factor_to_dim])
        ),
        "information_level": dict(
            zip(
                [gt.factor_names[k] for k in keep],
                information_level_by_factor(logvar, factor_to_dim).tolist(),
            )
        ),
        "num_points": int(num_points),
    }


# --- the stage ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """Everything that decides the reference's result; a work directory belongs to one."""

    dataset: str
    preset: str
    restarts: int
    steps: int
    seed: int
    seeds: tuple[int, ...]
    model: str
    hparams: dict[str, float]
    latent_dim: int
    batch_size: int
    mig_points: int
    ground_truth: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def restart_seeds(seed: int, restarts: int) -> tuple[int, ...]:
    """Seeds of the R restarts: ``seed·1000 + r`` (distinct for distinct base seeds < 2⁵³/1000)."""
    return tuple(int(seed) * 1000 + r for r in range(restarts))


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_workdir(workdir: Path, protocol: Protocol) -> None:
    path = workdir / "protocol.json"
    wanted = json.loads(json.dumps(protocol.as_dict()))
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{path} is corrupt ({exc}); delete the work directory") from exc
        for key, value in wanted.items():
            if stored.get(key) != value:
                raise ArtifactError(
                    f"{workdir} holds a reference run with {key}={stored.get(key)!r}, but this run "
                    f"asks for {key}={value!r}; use another --workdir or the same settings"
                )
    else:
        write_json_atomic(path, wanted)


@dataclass(frozen=True)
class _Plan:
    """What every entry point of the stage derives from its arguments."""

    grid: GroundTruth
    protocol: Protocol
    checkpoint_every: int
    dirs: list[Path]


def _plan(
    gt: GroundTruth,
    preset_name: str | Preset,
    workdir: str | os.PathLike,
    seed: int,
    restarts: int | None,
    steps: int | None,
) -> _Plan:
    chosen_preset = preset(preset_name)
    restarts = _positive("restarts", chosen_preset.restarts if restarts is None else restarts)
    steps = _positive("steps", chosen_preset.steps if steps is None else steps)
    grid = preset_ground_truth(gt, chosen_preset)
    protocol = Protocol(
        dataset=grid.name,
        preset=chosen_preset.name,
        restarts=restarts,
        steps=steps,
        seed=int(seed),
        seeds=restart_seeds(seed, restarts),
        model=REFERENCE_MODEL,
        hparams=hyperparameters(REFERENCE_MODEL, grid.name),
        latent_dim=grid.num_factors,
        batch_size=64,
        mig_points=chosen_preset.mig_points,
        ground_truth=grid_identity(grid),
    )
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    _check_workdir(root, protocol)
    return _Plan(
        grid=grid,
        protocol=protocol,
        checkpoint_every=min(chosen_preset.checkpoint_every, steps),
        dirs=[root / f"restart-{r}" for r in range(restarts)],
    )


def _training_images(plan: _Plan, device: torch.device, log: Any) -> np.ndarray:
    """The grid's images for training: on the CPU a read-only memory map of one file in the work
    directory, written once, so that restarts training in parallel processes share one copy in the
    page cache (Shapes3D's grid is 5.9 GB: three private copies nearly fill a 24 GB machine)."""
    grid = plan.grid
    if device.type != "cpu":
        return grid.all_images()
    path = plan.dirs[0].parent / "grid" / f"images-{plan.protocol.ground_truth['fingerprint']}.npy"
    return shared_array(
        path,
        (len(grid), *grid.image_shape),
        lambda out: np.copyto(out, grid.all_images()),
        what="this grid's images",
        log=log,
    )


def _train_one(
    plan: _Plan,
    r: int,
    images: np.ndarray,
    *,
    device: torch.device,
    precision: str,
    num_threads: int | None,
    progress: bool,
    wait: bool,
    log: Any,
) -> TrainResult:
    """Train (or resume, or just load) restart ``r`` while holding its folder's lock."""
    seed = plan.protocol.seeds[r]
    with exclusive(plan.dirs[r], what=f"restart {r} ({plan.dirs[r]})", wait=wait, log=log):
        log(f"restart {r}/{plan.protocol.restarts - 1} (seed {seed})")
        return train(
            REFERENCE_MODEL,
            images,
            dataset=plan.grid.name,
            hparams=plan.protocol.hparams,
            latent_dim=plan.protocol.latent_dim,
            steps=plan.protocol.steps,
            seed=seed,
            device=device,
            checkpoint_dir=plan.dirs[r],
            checkpoint_every=plan.checkpoint_every,
            precision=precision,
            num_threads=num_threads,
            progress=progress,
        )


def _evaluation(
    plan: _Plan, r: int, result: TrainResult, num_threads: int | None
) -> dict[str, Any]:
    """Restart ``r``'s scores, from its cache when they were computed for this step."""
    cached = plan.dirs[r] / "evaluation.json"
    evaluation = json.loads(cached.read_text()) if cached.exists() else None
    if evaluation is None or evaluation.get("step") != result.steps:
        vae = result.objective.vae.cpu().eval()
        evaluation = evaluate_restart(
            vae,
            plan.grid,
            num_points=plan.protocol.mig_points,
            random_state=plan.protocol.seed,
            num_threads=num_threads,
        )
        evaluation.update(
            restart=r,
            seed=result.seed,
            step=result.steps,
            final_loss={k: float(v[-1]) for k, v in result.history.items() if k != "step"},
            num_threads=result.num_threads,
            precision=result.precision,
        )
        write_json_atomic(cached, evaluation)
    return evaluation


def _log_evaluation(log: Any, evaluation: dict[str, Any]) -> None:
    log(
        f"restart {evaluation['restart']}: MIG {evaluation['mig']:.4f}, "
        f"{evaluation['active_units']} active units, "
        f"mean σ² {np.round(evaluation['mean_variance'], 3).tolist()}"
    )


def train_restart(
    gt: GroundTruth,
    restart: int,
    *,
    preset_name: str | Preset = "cpu",
    workdir: str | os.PathLike,
    seed: int = 0,
    restarts: int | None = None,
    steps: int | None = None,
    device: str = "cpu",
    precision: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Train and score only restart ``restart`` of :func:`run_reference`'s protocol; its scores.

    Lets the restarts of one work directory train in parallel processes (one per core, or per
    machine on a shared filesystem): a later :func:`run_reference` with the same arguments finds
    this restart finished and scored. A restart already being trained by a live process is
    refused with :class:`~.lock.BusyError`.
    """
    plan = _plan(gt, preset_name, workdir, seed, restarts, steps)
    if isinstance(restart, bool) or not isinstance(restart, int | np.integer):
        raise InvalidArgumentError(f"restart must be an integer, got {restart!r}")
    if not 0 <= restart < plan.protocol.restarts:
        raise InvalidArgumentError(
            f"restart must be in [0, {plan.protocol.restarts - 1}] for "
            f"{plan.protocol.restarts} restarts, got {restart}"
        )
    dev = torch.device(device)
    result = _train_one(
        plan,
        int(restart),
        _training_images(plan, dev, log),
        device=dev,
        precision=precision,
        num_threads=num_threads,
        progress=progress,
        wait=False,
        log=log,
    )
    evaluation = _evaluation(plan, int(restart), result, num_threads)
    _log_evaluation(log, evaluation)
    return evaluation


def run_reference(
    gt: GroundTruth,
    *,
    preset_name: str | Preset = "cpu",
    workdir: str | os.PathLike,
    seed: int = 0,
    restarts: int | None = None,
    steps: int | None = None,
    device: str = "cpu",
    precision: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
    log: Any = print,
    s_rule: str = DEFAULT_S_RULE,
) -> Reference:
    """Train (or resume) the restarts in ``workdir``, score them, pick the lowest MIG, compute s
    by ``s_rule`` (:data:`~.s_rules.S_RULES`) from the chosen restart's whole-grid encoding.

    ``gt`` is the original ground truth; the ``smoke`` preset runs on its strided sub-grid. Every
    restart checkpoints into ``workdir/restart-<r>`` and every finished score and the chosen
    restart's whole-grid encoding are cached there, so an interrupted run resumes where it stopped
    and a finished one returns at once. On a GPU the restarts train stacked (one vmapped model).
    A restart that another process trains (:func:`train_restart`) is waited for, then loaded.
    """
    check_rule(s_rule)
    plan = _plan(gt, preset_name, workdir, seed, restarts, steps)
    grid, protocol, dirs = plan.grid, plan.protocol, plan.dirs
    restarts, steps = protocol.restarts, protocol.steps
    dev = torch.device(device)
    log(
        f"reference: {restarts} restart(s) of {REFERENCE_MODEL} × {steps:,} steps on "
        f"{grid!r} ({len(grid):,} images), device {dev}, work directory {Path(workdir)}"
    )
    images = _training_images(plan, dev, log)
    if dev.type == "cuda" and restarts > 1:
        from ..training.stacked import Run, train_stacked

        same = dict(dataset=grid.name, hparams=protocol.hparams, latent_dim=protocol.latent_dim)
        runs = [
            Run(REFERENCE_MODEL, images, seed=s, checkpoint_dir=d, name=f"restart-{r}", **same)
            for r, (s, d) in enumerate(zip(protocol.seeds, dirs))
        ]
        with ExitStack() as held:
            for r, d in enumerate(dirs):
                held.enter_context(exclusive(d, what=f"restart {r} ({d})", wait=True, log=log))
            results = train_stacked(
                runs,
                steps=steps,
                device=dev,
                precision=precision,
                checkpoint_every=plan.checkpoint_every,
                progress=progress,
            )
    else:
        # the restarts nobody else holds first, then wait for those other processes train
        order = sorted(range(restarts), key=lambda r: holder(dirs[r] / LOCK_FILE) is not None)
        trained = {
            r: _train_one(
                plan,
                r,
                images,
                device=dev,
                precision=precision,
                num_threads=num_threads,
                progress=progress,
                wait=True,
                log=log,
            )
            for r in order
        }
        results = [trained[r] for r in range(restarts)]
    evaluations = [_evaluation(plan, r, result, num_threads) for r, result in enumerate(results)]
    for evaluation in evaluations:
        _log_evaluation(log, evaluation)
    chosen = select_restart([e["mig"] for e in evaluations])
    vae = results[chosen].objective.vae.cpu().eval()
    cache = dirs[chosen] / "grid-encoding.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            mu, logvar = z["mu"], z["logvar"]
        if mu.shape != (len(grid), protocol.latent_dim):
            cache.unlink()
    if not cache.exists():
        log(f"encoding the whole grid with restart {chosen} (lowest MIG)")
        mu, logvar = encode(vae, images, num_threads=num_threads, progress=progress)
        write_atomic(cache, lambda f: np.savez(f, mu=mu, logvar=logvar))
    factors = grid.factors(np.arange(len(grid)))
    choice = choose_s(s_rule, mu, logvar, factors, list(grid.factor_names))
    s, constants = standardise(choice.direction(mu), factors)
    section = s_section(choice, s, constants, logvar, grid)
    if section["entanglement"]["dominated"]:
        e = section["entanglement"]
        log(
            f"WARNING: s is dominated by {e['dominant']} ({e['dominant_fraction']:.2f} of its "
            f"variance > {e['threshold']}): a pattern keyed to one factor entangles nothing; "
            "consider --s-rule balanced-rotation"
        )
    weights = {k: v.detach().cpu().clone() for k, v in vae.state_dict().items()}
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "ground_truth": protocol.ground_truth,
        "protocol": {
            **{k: v for k, v in protocol.as_dict().items() if k != "ground_truth"},
            "selection": "lowest MIG over the restarts (paper §4.1)",
            "mig": "disentanglement_lib: mig_points uniform grid samples, encoder mean, 20 bins",
            "device": str(dev),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "restarts": evaluations,
        "chosen": chosen,
        "s": section,
        "model": {
            "name": REFERENCE_MODEL,
            "channels": grid.num_channels,
            "latent_dim": protocol.latent_dim,
            "hparams": protocol.hparams,
            "file": WEIGHTS_FILE,
        },
    }
    return Reference(record, s, weights)
