"""The build manifest (``manifest.json``) and the folder's ownership record.

The manifest is the provenance of a published dataset folder (SPEC §4): build parameters, seeds,
package version, the reference's restarts and the chosen one, the pattern, the PNG encoder and
Parquet writer with their versions, and every shard's sha256 and row count. It holds no times or
machine paths, so the same build gives the same manifest; the card is rendered from it and
``python -m generation.verify`` checks the folder against it.

The ownership record (:data:`STATE_FILE`, hidden, never uploaded) lists every file the package
wrote into the folder: a rebuild replaces or removes only those, and refuses a folder holding
anything else unless told to (``--overwrite``), so nothing it did not write is ever deleted.

An unfinished build is not a dataset, by construction: its card is :func:`unfinished_card`,
whose ``configs:`` is not a list, so ``datasets.load_dataset`` refuses the folder with a message
that says what to do, and its shards are staged in :data:`STAGING_DIR` (hidden: ``datasets``
ignores names that start with ``.``); they move into ``data/`` only once every row has verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from perturbed_disentanglement.errors import ArtifactError
from perturbed_disentanglement.util.atomic import write_json_atomic

MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
FIGURE_FILE = "images/samples.png"
STATE_FILE = ".perturbed-disentanglement-build.json"
FORMAT = "perturbed-disentanglement/dataset-manifest"
FORMAT_VERSION = 1
STATE_FORMAT = "perturbed-disentanglement/build-state"
#: where a build writes the folder it is making (shards, figure, manifest, card), inside the
#: output folder (same filesystem: the final moves are renames) and hidden from ``datasets``
STAGING_DIR = ".unfinished-build"
#: the line that marks the card of an unfinished build
UNFINISHED_MARKER = "<!-- perturbed-disentanglement: unfinished build -->"

_REQUIRED = (
    "format",
    "format_version",
    "name",
    "dataset",
    "smoke",
    "package_version",
    "ground_truth",
    "build",
    "reference",
    "s",
    "pattern",
    "png",
    "parquet",
    "features",
    "configs",
    "figure",
)


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest's canonical file content (sorted keys, indented: stable bytes)."""
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def manifest_sha256(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(manifest_text(manifest).encode()).hexdigest()


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically; returns its sha256."""
    write_json_atomic(Path(folder) / MANIFEST_FILE, manifest)
    return manifest_sha256(manifest)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest, checked for format and required entries (ArtifactError if not)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{folder} has no {MANIFEST_FILE}: it is not a finished build of this package "
            "(an interrupted build resumes when rerun with the same command)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: manifest format version {manifest.get('format_version')!r}; this package "
            f"reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks the entries {missing}")
    _check_structure(path, manifest)
    return manifest


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_structure(path: Path, manifest: dict[str, Any]) -> None:
    """The types and keys the verifier and the card read (ArtifactError naming the first bad one),
    so that an edited or inconsistent manifest is reported, never a traceback."""

    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise ArtifactError(f"{path}: {where} must be {what}")

    for key in ("ground_truth", "build", "reference", "s", "pattern", "parquet", "configs"):
        need(isinstance(manifest[key], dict), key, "an object")
    need(isinstance(manifest["dataset"], str), "dataset", "a string")
    need(isinstance(manifest["figure"], dict), "figure", "an object")
    for key in ("path", "sha256"):
        need(isinstance(manifest["figure"].get(key), str), f"figure.{key}", "a string")
    need(
        _is_int(manifest["ground_truth"].get("num_images"), 1),
        "ground_truth.num_images",
        "a positive integer",
    )
    need(isinstance(manifest["s"].get("sha256"), str), "s.sha256", "a string")
    need(
        _is_int(manifest["parquet"].get("row_group_rows"), 1),
        "parquet.row_group_rows",
        "a positive integer",
    )
    build = manifest["build"]
    need(
        isinstance(build.get("configs"), list)
        and all(isinstance(c, str) for c in build["configs"])
        and sorted(build["configs"]) == sorted(manifest["configs"]),
        "build.configs",
        "the list of the names in configs",
    )
    need(
        build.get("default_config") in manifest["configs"],
        "build.default_config",
        "one of the configs",
    )
    shard_keys = {"path": str, "sha256": str}
    for name, config in manifest["configs"].items():
        where = f"configs.{name}"
        need(isinstance(config, dict), where, "an object")
        need(isinstance(config.get("kind"), str), f"{where}.kind", "a string")
        need(
            isinstance(config.get("epsilon"), (int, float))
            and not isinstance(config["epsilon"], bool),
            f"{where}.epsilon",
            "a number",
        )
        for key in ("rows", "bytes"):
            need(_is_int(config.get(key)), f"{where}.{key}", "a non-negative integer")
        need(
            isinstance(config.get("shards"), list) and config["shards"],
            f"{where}.shards",
            "a non-empty list",
        )
        for i, shard in enumerate(config["shards"]):
            at = f"{where}.shards[{i}]"
            need(isinstance(shard, dict), at, "an object")
            for key, kind in shard_keys.items():
                need(isinstance(shard.get(key), kind), f"{at}.{key}", "a string")
            for key in ("rows", "bytes", "first_row"):
                need(_is_int(shard.get(key)), f"{at}.{key}", "a non-negative integer")


def listed_files(manifest: dict[str, Any]) -> list[str]:
    """Every file of the dataset a manifest describes (relative POSIX paths), README included."""
    files = [CARD_FILE, MANIFEST_FILE, manifest["figure"]["path"]]
    for config in manifest["configs"].values():
        files += [shard["path"] for shard in config["shards"]]
    return files


# --- an unfinished build ------------------------------------------------------------------
def unfinished_message(name: str, command: str) -> str:
    """What ``load_dataset`` says about an unfinished folder (the card's ``configs:`` value)."""
    return (
        f"UNFINISHED BUILD: this folder is not a dataset yet; a build of {name} into it was "
        f"interrupted or is still running. Rerun it to finish (finished shards are reused): "
        f"{command}"
    )


def unfinished_card(name: str, command: str) -> str:
    """The card of a folder being built: ``load_dataset`` fails on it, naming the problem.

    Its ``configs:`` is a string, not a list, so ``datasets`` raises ``ValueError: Expected
    configs to be a list, but got 'UNFINISHED BUILD: …'`` for every config; the build replaces
    it with the real card as its very last step.
    """
    # a JSON string is a YAML double-quoted scalar: any command line is quoted safely
    header = f"configs: {json.dumps(unfinished_message(name, command))}\n"
    return (
        f"---\n{header}---\n{UNFINISHED_MARKER}\n\n# Unfinished build of {name}\n\n"
        "This folder is not a dataset yet: its build was interrupted or is still running. "
        f"The shards being written are in `{STAGING_DIR}/` (hidden from `datasets`); they move "
        "into `data/` only once every row has been verified, and this card is then replaced by "
        "the dataset's. Until then `datasets.load_dataset` refuses the folder (the `configs:` "
        "above is deliberately not a list). Rerun the build to finish it; the shards already "
        "written are reused:\n\n"
        f"    {command}\n"
    )


def unfinished(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is an unfinished build (the message of its :func:`unfinished_card`, which
    names the command that finishes it), or None if it is not one. A folder without a card but
    with a staging folder is unfinished too."""
    folder = Path(folder)
    card = folder / CARD_FILE
    if not card.is_file():
        if (folder / STAGING_DIR).is_dir():
            return unfinished_message(folder.name, "python -m generation.build ... (as before)")
        return None
    try:
        with open(card, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if UNFINISHED_MARKER not in head:
        return None
    found = re.search(r"^configs: (\".*\")$", head, re.MULTILINE)
    try:
        return str(json.loads(found.group(1)))
    except (AttributeError, ValueError):
        return unfinished_message(folder.name, "python -m generation.build ... (as before)")


# --- the ownership record -------------------------------------------------------------------
def read_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ownership record, or None if absent or unreadable (then nothing is ours)."""
    path = Path(folder) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None
    if not isinstance(state.get("written"), list) or not isinstance(state.get("accepted"), list):
        return None
    return state


def new_state(accepted: list[str] | None = None) -> dict[str, Any]:
    """A fresh record: nothing written yet; ``accepted``: other files left alone on purpose."""
    return {
        "format": STATE_FORMAT,
        "written": [],
        "accepted": sorted(accepted or []),
        "complete": False,
        "verified_manifest": None,
    }


def write_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    state = {**state, "written": sorted(set(state["written"]))}
    write_json_atomic(Path(folder) / STATE_FILE, state)
