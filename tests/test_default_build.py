"""The README's main job at full size: `make build` (``python -m generation.build`` with every
default) on a fresh machine writes the whole verified perturbed-dsprites from the shipped reference,
``load_dataset`` reads it, and its shards are the bytes the developers built.

Minutes on 2 cores (3.7 min idle; 2.2 GB in a temporary folder): marked slow, and CI runs it,
because it is the promise the README makes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders.manifest import read_manifest
from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.perturbation.pattern import default_strength
from perturbed_disentanglement.reference.stage import load_reference

from .conftest import ROOT, _shared_dir, build_once

EXPECTED = json.loads((ROOT / "tests" / "data" / "dsprites_default_build.json").read_text())
ROWS = 737_280


@pytest.fixture(scope="session")
def default_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, str]:
    """The build with every default, once per session."""
    where = _shared_dir(tmp_path_factory, worker_id) / "default-build"
    out = where / "perturbed-dsprites"
    stdout = build_once(where, ["--out", str(out), "--workdir", str(where / "work")], timeout=3600)
    return out, stdout


@pytest.mark.slow
def test_the_default_build_is_whole_verified_and_loads(default_build: tuple[Path, str]) -> None:
    out, stdout = default_build
    assert "verified: yes" in stdout and "reference: shipped (cpu)" in stdout
    manifest = read_manifest(out)
    kappa, epsilon = default_strength("dsprites")
    assert manifest["build"]["kappa"] == kappa and manifest["build"]["epsilons"] == [epsilon]
    assert {c: v["rows"] for c, v in manifest["configs"].items()} == {
        "perturbed": ROWS,
        "noise": ROWS,
        "original": ROWS,
    }
    from datasets import load_dataset

    ds = load_dataset(str(out), split="train", cache_dir=str(out.parent / "hf-cache"))
    assert len(ds) == ROWS and ds.features["shape"].names == ["square", "ellipse", "heart"]
    rows = ds.select([0, ROWS // 2, ROWS - 1]).with_format("numpy")[:]
    gt = ground_truth("dsprites")
    ref = load_reference("dsprites", gt)
    np.testing.assert_array_equal(rows["index"], [0, ROWS // 2, ROWS - 1])
    np.testing.assert_array_equal(rows["s"], ref.s[rows["index"]])
    np.testing.assert_array_equal(rows["posX"], gt.factors(rows["index"])[:, 3])
    assert np.all(rows["epsilon"] == np.float32(epsilon))


@pytest.mark.slow
def test_the_default_build_gives_the_developers_bytes(default_build: tuple[Path, str]) -> None:
    """Determinism across machines: the shipped s, an integer pattern and keyed noise make the
    same bytes on any CPU; only another zlib or pyarrow may change the compressed shards (their
    pixels are then still checked by the build's verification)."""
    out, _ = default_build
    manifest = read_manifest(out)
    toolchain = {
        "zlib_version": manifest["png"]["perturbed"]["zlib_version"],
        "pyarrow_version": manifest["parquet"]["pyarrow_version"],
    }
    if toolchain != EXPECTED["toolchain"]:
        pytest.skip(f"built with {toolchain}, the expected bytes with {EXPECTED['toolchain']}")
    built = {s["path"]: s["sha256"] for c in manifest["configs"].values() for s in c["shards"]}
    assert built == EXPECTED["shards"]
