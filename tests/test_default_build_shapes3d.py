"""The default Shapes3D build at full size gives the bytes the developers built, on any CPU.

``python -m generation.build --dataset shapes3d`` writes 8.9 GB (480,000 rows in each of three
configs) and its grid cache (6.6 min on 2 idle cores at the previous κ 32, ε 0.1; 14.6 min with
``--jobs 1`` beside two trainings at κ 1, ε 0.25): more than CI can afford beside the
dSprites build it already runs, so this test is opt-in: ``PD_TEST_SHAPES3D_BUILD=1 pytest
tests/test_default_build_shapes3d.py``. What it guards: the recorded shard sha256 in
``tests/data/shapes3d_default_build.json`` follow the shipped reference, the default strength
(``DEFAULT_STRENGTH``) and the renderer; a change to any of them must re-record them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builders.manifest import read_manifest
from perturbed_disentanglement.perturbation.pattern import default_strength

from .conftest import ROOT, _shared_dir, build_once

RECORDED = ROOT / "tests" / "data" / "shapes3d_default_build.json"
ROWS = 480_000

opt_in = pytest.mark.skipif(
    os.environ.get("PD_TEST_SHAPES3D_BUILD") != "1",
    reason="opt-in (8.9 GB, 7-15 min): set PD_TEST_SHAPES3D_BUILD=1",
)


def test_the_recorded_bytes_are_of_the_default_strength() -> None:
    """Always run: a default changed without re-recording the bytes fails here, in seconds."""
    expected = json.loads(RECORDED.read_text())
    kappa, epsilon = default_strength("shapes3d")
    assert (expected["kappa"], expected["epsilons"]) == (kappa, [epsilon]), (
        "DEFAULT_STRENGTH['shapes3d'] changed: rebuild with PD_TEST_SHAPES3D_BUILD=1 and re-record"
    )


@pytest.fixture(scope="session")
def shapes3d_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, str]:
    where = _shared_dir(tmp_path_factory, worker_id) / "shapes3d-default-build"
    out = where / "perturbed-shapes3d"
    args = ["--dataset", "shapes3d", "--out", str(out), "--workdir", str(where / "work")]
    return out, build_once(where, args, timeout=7200)


@pytest.mark.slow
@opt_in
def test_the_default_shapes3d_build_is_whole_and_at_the_default_strength(shapes3d_build) -> None:
    out, stdout = shapes3d_build
    assert "verified: yes" in stdout and "reference: shipped" in stdout
    manifest = read_manifest(out)
    kappa, epsilon = default_strength("shapes3d")
    assert manifest["build"]["kappa"] == kappa and manifest["build"]["epsilons"] == [epsilon]
    assert {c: v["rows"] for c, v in manifest["configs"].items()} == {
        "perturbed": ROWS,
        "noise": ROWS,
        "original": ROWS,
    }


@pytest.mark.slow
@opt_in
def test_the_default_shapes3d_build_gives_the_developers_bytes(shapes3d_build) -> None:
    out, _ = shapes3d_build
    expected = json.loads(RECORDED.read_text())
    toolchain = record(out)["toolchain"]
    if toolchain != expected["toolchain"]:
        pytest.skip(f"built with {toolchain}, the expected bytes with {expected['toolchain']}")
    assert record(out)["shards"] == expected["shards"]


def record(out: Path) -> dict:
    """The record of a default build's bytes, from its manifest (how the committed one was made:
    ``python -m tests.test_default_build_shapes3d OUT``)."""
    manifest = read_manifest(out)
    return {
        "kappa": manifest["build"]["kappa"],
        "epsilons": manifest["build"]["epsilons"],
        "shards": {
            s["path"]: s["sha256"] for c in manifest["configs"].values() for s in c["shards"]
        },
        "toolchain": {
            "zlib_version": manifest["png"]["perturbed"]["zlib_version"],
            "pyarrow_version": manifest["parquet"]["pyarrow_version"],
        },
        "why": "sha256 of every shard of the default Shapes3D build (`python -m generation.build "
        "--dataset shapes3d`), made on the developers' machine; a build with the same zlib and "
        "pyarrow must give the same bytes on any CPU",
    }


if __name__ == "__main__":
    import sys

    RECORDED.write_text(json.dumps(record(Path(sys.argv[1])), indent=2, sort_keys=True) + "\n")
