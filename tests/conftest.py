"""Fixtures shared by several test files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
NAME = "perturbed-dsprites"


@dataclass(frozen=True)
class SmokeBuild:
    out: Path
    workdir: Path
    stdout: str


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base  # one folder per session


def build_once(where: Path, args: list[str], timeout: int) -> str:
    """``python -m generation.build ARGS`` into WHERE once per session, whichever xdist worker
    asks first (the others wait on the lock); returns its stdout."""
    done = where / "stdout.txt"
    with FileLock(str(where) + ".lock"):
        if not done.exists():
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir(parents=True)
            proc = subprocess.run(
                [sys.executable, "-m", "generation.build", "--no-progress", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
            done.write_text(proc.stdout)
    return done.read_text()


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SmokeBuild:
    """``python -m generation.build --smoke`` once per session."""
    root = _shared_dir(tmp_path_factory, worker_id) / "smoke-build"
    args = ["--smoke", "--out", str(root / NAME), "--workdir", str(root / "work")]
    stdout = build_once(root, args, timeout=900)
    return SmokeBuild(root / NAME, root / "work", stdout)
