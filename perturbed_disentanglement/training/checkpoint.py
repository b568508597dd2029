"""Training checkpoints: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is one directory ``<checkpoint_dir>/step-<step:09d>/`` holding ``weights.safetensors``
(model weights, optimizer moment tensors, loss history) and ``state.json`` (step, optimizer scalar
state and hyperparameters, model name, latent size, channels, package version, the batch-stream RNG
state, and the sha256 of the weights file). Both files are written into a hidden temporary
directory that is renamed into place in one ``os.rename``, so a crash never leaves a directory that
looks complete but is not; re-saving an existing step first renames the old directory aside (and
back if the new one cannot be put in place) and deletes it only once the new one is in. The sha256
catches files damaged afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, InvalidArgumentError
from ..ground_truth.official_files import sha256_of
from ..util.atomic import fsync_dir, replace_dir
from .precision import resolve_device
from .zoo import Objective

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{9})$")


@dataclass
class Checkpoint:
    """A checkpoint read back from disk: its JSON state and its tensors (on the CPU)."""

    path: Path
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return _strip_prefix(self.tensors, "model/")

    def history(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in _strip_prefix(self.tensors, "history/").items()}


def _strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _package_version() -> str:
    from .. import __version__

    return __version__


# --- optimizer state <-> (tensors, JSON) -------------------------------------------------------
def optimizer_to_parts(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict: moment tensors for safetensors, scalars for JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"{prefix}/{index}/{key}"] = value
            elif isinstance(value, torch.Tensor):
                scalars.setdefault(str(index), {})[key] = {
                    "value": value.item(),
                    "dtype": str(value.dtype).removeprefix("torch."),
                }
            else:
                scalars.setdefault(str(index), {})[key] = {"value": value, "dtype": None}
    groups = [dict(group) for group in sd["param_groups"]]
    for group in groups:
        if "betas" in group:
            group["betas"] = list(group["betas"])
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_parts(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    prefix: str,
) -> None:
    """Load what :func:`optimizer_to_parts` wrote back into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in _strip_prefix(tensors, prefix + "/").items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta["scalars"].items():
        for key, entry in entries.items():
            value = entry["value"]
            if entry["dtype"] is not None:
                value = torch.tensor(value, dtype=getattr(torch, entry["dtype"]))
            state.setdefault(int(index), {})[key] = value
    groups = [dict(group) for group in meta["param_groups"]]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- writing --------------------------------------------------------------------------------
def prepare_checkpoint_dir(checkpoint_dir: str | os.PathLike, what: str = "checkpoint_dir") -> Path:
    """Create ``checkpoint_dir`` (and its parents) now, before any training, or say why not."""
    path = Path(checkpoint_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        kind = "a file, not a directory" if path.is_file() else "not a usable directory"
        raise InvalidArgumentError(
            f"{what} {str(path)!r} is {kind} ({exc.strerror or exc}); give a directory path"
        ) from exc
    return path


def step_directory(checkpoint_dir: str | os.PathLike, step: int) -> Path:
    return Path(checkpoint_dir) / f"step-{step:09d}"


def save_checkpoint(
    checkpoint_dir: str | os.PathLike,
    *,
    step: int,
    objective: Objective,
    optimizers: Mapping[str, torch.optim.Optimizer],
    stream_state: str,
    history: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically and keep only the newest ``keep`` ones.

    ``optimizers`` maps a name ("vae", "discriminator") to its optimizer; ``config`` is stored
    in the JSON as is (model name, hyperparameters, seed, batch size, …).
    """
    from safetensors.torch import save_file

    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in objective.state_dict().items():
        tensors[f"model/{key}"] = value.detach().cpu().contiguous()
    optimizer_meta: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        moment_tensors, meta = optimizer_to_parts(optimizer, f"optimizer/{name}")
        tensors.update({k: v.detach().cpu().contiguous() for k, v in moment_tensors.items()})
        optimizer_meta[name] = meta
    for term, values in history.items():
        tensors[f"history/{term}"] = torch.from_numpy(np.ascontiguousarray(values, np.float64))

    state = {
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "torch_version": torch.__version__,
        "created_unix": time.time(),
        **dict(config),
        "step": int(step),
        "batch_stream_state": stream_state,
        "optimizers": optimizer_meta,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:09d}-", dir=root))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        state["weights_sha256"] = sha256_of(tmp / WEIGHTS_FILE)
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / WEIGHTS_FILE, "rb") as f:
            os.fsync(f.fileno())
        fsync_dir(tmp)
        target = step_directory(root, step)
        replace_dir(tmp, target)  # a crash in between leaves the old copy in a .tmp-step-… dir

    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return target


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints and any stale temporary dirs."""
    steps = sorted(_complete_steps(root))
    for step in steps[: max(0, len(steps) - max(1, keep))]:
        shutil.rmtree(step_directory(root, step), ignore_errors=True)
    for entry in root.iterdir():
        if entry.name.startswith(".tmp-step-") and entry.is_dir():
            # another process might be writing it right now only if two runs share a directory,
            # which we do not support; a crashed writer leaves these behind
            shutil.rmtree(entry, ignore_errors=True)


def _complete_steps(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return [
        int(m.group(1)) for e in root.iterdir() if (m := _STEP_DIR.match(e.name)) and e.is_dir()
    ]


# --- reading --------------------------------------------------------------------------------
def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory under ``checkpoint_dir``, or None."""
    steps = _complete_steps(Path(checkpoint_dir))
    return step_directory(checkpoint_dir, max(steps)) if steps else None


def step_of(path: str | os.PathLike) -> int | None:
    """The step of a ``step-…`` checkpoint directory, or None if ``path`` is not one by its name."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint: a ``step-…`` directory, or a checkpoint root (its newest checkpoint).

    Raises :class:`CheckpointError` when there is none, or when a file is missing, unreadable,
    or does not match the sha256 recorded when it was written.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not (p / STATE_FILE).exists():
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"{p}: no checkpoint found (expected a directory with {STATE_FILE} and "
                f"{WEIGHTS_FILE}, or a checkpoint root with step-XXXXXXXXX/ subdirectories)"
            )
        p = latest
    hint = "delete this step directory to fall back to an older checkpoint"
    try:
        with open(p / STATE_FILE, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{p}: {STATE_FILE} is unreadable or corrupt ({exc}); {hint}"
        ) from exc
    required = ("format_version", "step", "model", "hparams", "channels", "latent_dim")
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{p}: {STATE_FILE} lacks {', '.join(missing)}; {hint}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {state['format_version']} is not supported "
            f"(this version reads format {FORMAT_VERSION})"
        )
    weights = p / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{p}: {WEIGHTS_FILE} is missing; {hint}")
    digest = sha256_of(weights)
    if digest != state.get("weights_sha256"):
        raise CheckpointError(
            f"{p}: {WEIGHTS_FILE} is corrupt (sha256 {digest[:16]}…, the checkpoint recorded "
            f"{str(state.get('weights_sha256'))[:16]}…); {hint}"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:  # pragma: no cover - hash caught it
        raise CheckpointError(f"{p}: {WEIGHTS_FILE} cannot be read ({exc}); {hint}") from exc
    return Checkpoint(p, state, tensors)


def load_weights(objective: Objective, checkpoint: Checkpoint) -> None:
    """Copy the checkpoint's model weights into ``objective``; mismatches are CheckpointErrors."""
    try:
        objective.load_state_dict(checkpoint.model_state(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{checkpoint.path}: the weights do not fit model {checkpoint.state['model']!r} "
            f"(channels {checkpoint.state['channels']}, latent_dim "
            f"{checkpoint.state['latent_dim']}): {exc}"
        ) from exc


def load_model(checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Objective:
    """The trained :class:`Objective` in ``checkpoint_dir`` (a checkpoint, or a root: its newest
    checkpoint), on ``device``, in eval mode."""
    device = resolve_device(device)
    checkpoint = read_checkpoint(checkpoint_dir)
    s = checkpoint.state
    try:
        objective = Objective(
            str(s["model"]), dict(s["hparams"]), int(s["channels"]), int(s["latent_dim"])
        )
    except (InvalidArgumentError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{checkpoint.path}: the stored model settings are invalid: {exc}"
        ) from exc
    weights = checkpoint.model_state()
    if weights:  # a run trained in float64 ("fp64") comes back in float64
        objective = objective.to(next(iter(weights.values())).dtype)
    load_weights(objective, checkpoint)
    return objective.to(device).eval()
