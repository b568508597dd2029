"""Publish a built dataset folder to the Hugging Face Hub.

    python -m builders.publish perturbed-dsprites --repo-id ORG/perturbed-dsprites --dry-run
    python -m builders.publish perturbed-dsprites --repo-id ORG/perturbed-dsprites

Refuses a folder that does not verify: the files (every shard's sha256 and row count, the card)
are checked now, and the rows must have passed a full verification of this very manifest (the
build's last stage or ``python -m generation.verify``; run here otherwise). Uploads exactly the
files the manifest lists (card, manifest, figure, shards), nothing else in the folder. The token
comes from huggingface_hub's usual places (``HF_TOKEN``, ``hf auth login``) and is never printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perturbed_disentanglement.errors import PerturbedDisentanglementError

from .manifest import listed_files, read_manifest, read_state
from .verification import stamp, verify_folder

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PublishError(PerturbedDisentanglementError):
    """Publishing was refused or failed; nothing (more) was uploaded."""


@dataclass
class UploadPlan:
    folder: Path
    repo_id: str
    files: list[tuple[str, int]]  # (relative path, bytes)
    manifest_sha256: str

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def format(self) -> str:
        lines = [f"{len(self.files)} file(s), {self.total_bytes / 1e6:,.1f} MB -> {self.repo_id}"]
        lines += [f"  {size / 1e6:>10,.2f} MB  {path}" for path, size in self.files]
        return "\n".join(lines)


def plan_upload(
    folder: str | Path,
    repo_id: str,
    *,
    reference: str | None = None,
    workdir: str | None = None,
    source: str | None = None,
    verify_checksum: bool = True,
    progress: bool = True,
    log: Any = print,
) -> UploadPlan:
    """Check the folder (see the module docstring) and list what would be uploaded."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise PublishError(
            f"--repo-id must look like ORG/NAME (e.g. me/perturbed-dsprites), got {repo_id!r}"
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder")
    report = verify_folder(folder, rows=False)
    if not report.ok:
        raise PublishError(f"{folder} does not verify; nothing was uploaded:\n{report.format()}")
    state = read_state(folder)
    if state is None or state.get("verified_manifest") != report.manifest_sha256:
        log("no full verification of this manifest on record: checking every row now")
        report = verify_folder(
            folder,
            reference=reference,
            workdir=workdir,
            source=source,
            verify_checksum=verify_checksum,
            progress=progress,
        )
        if not report.ok:
            raise PublishError(
                f"{folder} does not verify; nothing was uploaded:\n{report.format()}"
            )
        stamp(folder, report)
    manifest = read_manifest(folder)
    files = [(rel, (folder / rel).stat().st_size) for rel in listed_files(manifest)]
    return UploadPlan(folder, repo_id, files, report.manifest_sha256)


def publish(
    plan: UploadPlan,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Create the dataset repository (if needed) and upload the planned files; returns its URL."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found: log in with `hf auth login` or set HF_TOKEN; "
            "nothing was uploaded"
        )
    api = api or HfApi(token=token)
    try:
        url = api.create_repo(plan.repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(plan.folder),
            repo_id=plan.repo_id,
            repo_type="dataset",
            allow_patterns=[path for path, _ in plan.files],
            # shards of an earlier upload that this one no longer has; files uploaded in this
            # same commit are kept (huggingface_hub applies deletions before the additions)
            delete_patterns=["data/**", "images/**"],
            revision=revision,
            commit_message=f"Upload {plan.folder.name} (manifest {plan.manifest_sha256[:12]})",
        )
    except HfHubHTTPError as exc:  # its message names the request, never the token
        raise PublishError(f"the Hub refused the upload to {plan.repo_id}: {exc}") from exc
    return str(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m builders.publish",
        description="Upload a verified dataset folder to the Hugging Face Hub as a dataset repo.",
    )
    parser.add_argument("folder", help="the built dataset folder")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to upload to (default: main)")
    parser.add_argument("--reference", help="for the row check: the reference artifact used")
    parser.add_argument("--workdir", help="for the row check: the build's work directory")
    parser.add_argument("--source", help="for the row check: the official file, if one was used")
    parser.add_argument(
        "--no-verify-checksum",
        action="store_true",
        help="for the row check: accept a --source that is not the official file (as the build did)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        plan = plan_upload(
            args.folder,
            args.repo_id,
            reference=args.reference,
            workdir=args.workdir,
            source=args.source,
            verify_checksum=not args.no_verify_checksum,
            progress=not args.no_progress,
        )
        print(plan.format())
        if args.dry_run:
            print("dry run: nothing uploaded")
            return 0
        url = publish(plan, private=args.private, revision=args.revision)
    except PerturbedDisentanglementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
