"""generation.screen on the smoke sub-grid: a record per milestone with the diagnostics, a rerun
that skips what is done, the summary table, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generation import screen


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kappa", "0"], "kappa"),
        (["--eps", "0.9"], "epsilon"),
        (["--milestones", "0"], "milestones"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, args, message) -> None:
    assert _run(tmp_path, *args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "work").exists()
    with pytest.raises(SystemExit):
        _run(tmp_path, "--rule", "best")


def _record(config: str, seed: int, mig_value: float, *, step: int = 100) -> dict:
    perturbed = config == "perturbed"
    return {
        "config": config,
        "rule": "balanced-rotation",
        "kappa": 1.0 if perturbed else None,
        "epsilon": 0.0 if config == "original" else 0.25,
        "beta": 32.0,
        "build_seed": 0,
        "seed": seed,
        "step": step,
        "mig": mig_value,
        "mig_per_factor": [mig_value, 3 * mig_value, 0.5],  # s's factors: a and b
        "s_entanglement": {"variance_fraction": {"a": 0.6, "b": 0.35, "c": 0.05}},
        "uptake": 0.5 if perturbed else None,
        "s_alignment": {"least_noise_nmi": 0.2, "follows_s": perturbed and seed == 0},
    }


def test_the_seed_comparison_is_the_means_ratio_and_welchs_p_against_original() -> None:
    from scipy import stats

    original = [0.40, 0.38, 0.42]
    perturbed = [0.20, 0.22, 0.19]
    records = [_record("original", k, v) for k, v in enumerate(original)]
    records += [_record("perturbed", k, v) for k, v in enumerate(perturbed)]
    records += [_record("noise", 0, 0.41)]  # one seed: no row
    records += [_record("perturbed", 0, 0.3, step=50), _record("perturbed", 1, 0.3, step=50)]
    table = screen.seed_comparison(records)
    rows = table.splitlines()[2:]
    assert len(rows) == 2  # original and perturbed at step 100; step 50 has no original beside it
    row = next(r for r in rows if r.startswith("| perturbed"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ratio = sum(perturbed) / sum(original)
    p = stats.ttest_ind(perturbed, original, equal_var=False).pvalue
    assert cells[2] == "0, 1, 2" and cells[5] == f"{ratio:.2f}×" and cells[6] == f"{p:.3g}"
    assert cells[3].startswith(f"**{sum(perturbed) / 3:.3f} ± ") and cells[11] == "1 of 3"
    assert cells[7] == f"{2 * sum(perturbed) / 3:.2f}" and cells[8] == "0.50"  # s's and the rest
    original_row = next(r for r in rows if r.startswith("| original"))
    assert "| 1.00× | – |" in original_row
    assert screen.seed_comparison(records[:3]).count("\n") == 3  # original alone: its own row
