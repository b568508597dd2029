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


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SmokeBuild:
    """``python -m generation.build --smoke`` once per session (the first worker builds)."""
    root = _shared_dir(tmp_path_factory, worker_id) / "smoke-build"
    with FileLock(str(root) + ".lock"):
        done = root / "stdout.txt"
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            proc = subprocess.run(
                [sys.executable, "-m", "generation.build", "--smoke", "--no-progress"]
                + ["--out", str(root / NAME), "--workdir", str(root / "work")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
            done.write_text(proc.stdout)
    return SmokeBuild(root / NAME, root / "work", done.read_text())
