"""generation.screen on the smoke sub-grid: a record per milestone with the diagnostics, a rerun
that skips what is done, the summary table, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generation import screen
from perturbed_disentanglement.reference.strength import isolated_s


def _run(tmp_path: Path, *args: str) -> int:
    return screen.main(
        [
            "--dataset",
            "dsprites",
            "--smoke",
            "--milestones",
            "4,8",
            "--points",
            "500",
            "--uptake-points",
            "64",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "records"),
            *args,
        ]
    )


@pytest.mark.parametrize("config", ["perturbed", "original"])
def test_a_screen_writes_a_record_per_milestone_with_the_diagnostics(tmp_path, config) -> None:
    args = ["--config", config, "--rule", "balanced-rotation", "--kappa", "2", "--eps", "0.2"]
    assert _run(tmp_path, *args) == 0
    records = sorted((tmp_path / "records").glob("*.json"))
    assert [json.loads(p.read_text())["step"] for p in records] == [4, 8]
    r = json.loads(records[-1].read_text())
    assert 0 <= r["mig"] <= 1 and r["rule"] == "balanced-rotation" and r["config"] == config
    assert (r["uptake"] is None) == (config == "original")
    assert set(r["s_alignment"]) >= {"nmi", "least_noise", "follows_s"}
    assert r["s_entanglement"]["variance_fraction"] and r["s_choice"]["rule"] == "balanced-rotation"
    written = records[-1].stat().st_mtime_ns
    assert _run(tmp_path, *args) == 0  # a rerun finds every milestone done
    assert records[-1].stat().st_mtime_ns == written
    assert screen.main(["--summarise", "--out", str(tmp_path / "records"), "--workdir", "x"]) == 0
    table = (tmp_path / "records" / "screen.md").read_text()
    assert table.count("\n| " + config) == 2 and "MIG posX" in table


def test_the_isolated_rule_draws_an_s_that_no_factor_explains(tmp_path) -> None:
    args = ["--config", "perturbed", "--rule", "isolated", "--kappa", "1", "--eps", "0.2"]
    assert _run(tmp_path, *args, "--build-seed", "3") == 0
    r = json.loads(sorted((tmp_path / "records").glob("*step8.json"))[0].read_text())
    assert r["name"] == "perturbed-isolated-k1-eps0.2-seed0"
    assert r["s_choice"] == {"rule": "isolated", "seed": 3}
    # independent of the factors: each explains a sampling share of its variance, about 0
    assert max(r["s_entanglement"]["variance_fraction"].values()) < 0.05
    assert r["uptake"] is not None and set(r["s_alignment"]) >= {"nmi", "least_noise"}
    s = isolated_s(100_000, 3)
    assert s.dtype == np.float32 and abs(s.mean()) < 0.01 and abs(s.var() - 1) < 0.01
    assert np.abs(s).max() <= np.sqrt(3) and np.array_equal(s, isolated_s(100_000, 3))
    assert not np.array_equal(s, isolated_s(100_000, 4))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kappa", "0"], "kappa"),
        (["--eps", "0.9"], "epsilon"),
        (["--milestones", "0"], "milestones"),
        (["--config", "noise", "--rule", "isolated"], "use it with --config perturbed"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, args, message) -> None:
    assert _run(tmp_path, *args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "work").exists()
    with pytest.raises(SystemExit):
        _run(tmp_path, "--rule", "best")
