"""The one-call GPU benchmark (benchmarks/gpu_benchmark.sh): its step budgeting and setup checks,
and its ``--smoke`` mode end to end on the CPU (records the harness's ``--report-only`` reads)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from perturbed_disentanglement.benchmark.records import iter_records

from .conftest import ROOT, SmokeBuild

SCRIPT = ROOT / "benchmarks" / "gpu_benchmark.py"


@pytest.fixture(scope="module")
def gb() -> ModuleType:
    """benchmarks/gpu_benchmark.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_benchmark"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# --- budgeting ------------------------------------------------------------------------------------
def test_choose_steps_fills_what_is_left_after_evaluation_and_report(gb: ModuleType) -> None:
    steps, seconds = gb.choose_steps(
        rate=100.0,
        seconds_left=400.0,
        restart=10.0,
        evaluation=80.0,
        reserve=50.0,
        warmup_steps=400,
        max_steps=300_000,
    )
    assert seconds == 260.0
    assert steps == 400 + int(260 * 100 * 0.95)


def test_choose_steps_keeps_the_warmup_and_the_cap(gb: ModuleType) -> None:
    common = dict(restart=5.0, evaluation=60.0, reserve=50.0, warmup_steps=400)
    over = gb.choose_steps(rate=100.0, seconds_left=30.0, max_steps=300_000, **common)
    assert over == (400, 0.0)  # the budget is spent: the warm-up's steps are the run
    capped, _ = gb.choose_steps(rate=1e6, seconds_left=400.0, max_steps=300_000, **common)
    assert capped == 300_000


def test_steady_rate_skips_the_first_sync(gb: ModuleType) -> None:
    # the first sync pays the start-up (here 5 s); then 50 steps per 0.5 s
    syncs = [(50, 5.0), (100, 5.5), (150, 6.0), (200, 6.5)]
    assert gb.steady_rate(syncs, 200, 6.5) == pytest.approx(100.0)
    assert gb.steady_rate([(3, 1.0)], 3, 1.5) == pytest.approx(2.0)  # too few syncs: average


def test_evaluation_estimate_counts_gpu_part_and_fit_waves(gb: ModuleType) -> None:
    # 15 runs, 15 workers: one wave of fits (×1.3 margin) after one run's GPU part
    assert gb.evaluation_estimate(15, 1.0, 20.0, 15) == pytest.approx(1.0 + 26.0)
    assert gb.evaluation_estimate(30, 1.0, 20.0, 15) == pytest.approx(1.0 + 52.0)
    assert gb.evaluation_estimate(15, 3.0, 1.0, 15) == pytest.approx(45.0)  # GPU part dominates


# --- setup checks ---------------------------------------------------------------------------------
def test_missing_packages_are_named_with_how_to_carry_wheels(
    gb: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert gb.missing_modules({"json": "json", "no_such_module_xyz": "no-such-pkg"}) == [
        "no-such-pkg"
    ]
    monkeypatch.setattr(gb, "REQUIRED", {**gb.REQUIRED, "no_such_module_xyz": "no-such-pkg"})
    args = gb.parse_args(["--smoke"])
    summary = gb.Summary(tmp_path / "s.json")
    with pytest.raises(gb.SetupError, match=r"no-such-pkg.*--fetch-wheels.*out/wheels"):
        gb.preflight(args, gb.resolve_mode(args), gb.Clock(10), summary)


def test_full_run_without_the_shipped_reference_says_so(
    gb: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import perturbed_disentanglement.reference.stage as reference

    monkeypatch.setattr(reference, "SHIPPED_DIR", tmp_path / "references")
    args = gb.parse_args(["--device", "cpu"])
    with pytest.raises(gb.SetupError, match=r"reference/shipped/dsprites.*--data DIR.*--smoke"):
        gb.preflight(args, gb.resolve_mode(args), gb.Clock(10), gb.Summary(tmp_path / "s.json"))


# --- the smoke run end to end ---------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_run_writes_records_that_report_only_renders(
    smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    out, export = tmp_path / "results", tmp_path / "export"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_benchmark.sh", "--smoke", "--data", str(smoke_build.out)]
        + ["--workdir", str(tmp_path / "work"), "--out", str(out), "--export", str(export)]
        + ["--no-report"],  # rendered below, as a user would
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "steps/s" in proc.stdout and "MIG original" in proc.stdout

    summary = json.loads((export / "gpu_benchmark.json").read_text())
    assert summary["status"] == "ok"
    assert summary["steps_per_second"] > 0 and summary["images_per_second"] > 0
    assert summary["steps"] >= summary["phases"]["warmup"]["steps"]
    assert set(summary["mig"]) == {"original", "perturbed", "noise"}
    assert summary["exported"] == ["results.tar.gz"]

    records = list(iter_records(out))  # the harness's reader checks format and metrics
    assert {(r["data"]["config"], r["seed"]) for r in records} == {
        (c, s) for c in ("original", "perturbed", "noise") for s in (0, 1)
    }
    for r in records:
        assert r["model"] == "beta_vae" and r["steps"] == summary["steps"]
        assert r["preset"] == "gpu_benchmark_smoke"
        assert r["training"]["stacked_runs"] == 6
        assert r["evaluation"]["num_train"] == 300 and r["evaluation"]["classifier_train"] == 150
        assert all(math.isfinite(r["metrics"][m]) for m in ("mig", "dci_disentanglement", "sap"))
        assert r["data"]["name"] == str(smoke_build.out)

    with tarfile.open(export / "results.tar.gz") as tar:
        packed = {n for n in tar.getnames() if n.endswith("record.json")}
    assert packed == {f"results/runs/{r['run_id']}/record.json" for r in records}

    report = subprocess.run(
        [sys.executable, "-m", "perturbed_disentanglement.benchmark", "--report-only"]
        + ["--out", str(out), "--data", str(smoke_build.out)]
        + ["--cache-dir", str(tmp_path / "work" / "hf-cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "## Table 1: original vs perturbed" in text and "## Table 2: original vs noise" in text
    assert "gpu_benchmark_smoke" in text
