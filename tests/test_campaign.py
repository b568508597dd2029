"""generation.campaign: a jobs file run two processes at once, a rerun that resumes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generation import campaign

SMOKE = "--dataset dsprites --smoke --points 500 --uptake-points 64"


def test_a_campaign_runs_every_job_and_a_rerun_redoes_nothing(tmp_path: Path, capsys) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "# two settings of the smoke screen\n"
        f"{SMOKE} --config original --milestones 4\n"
        "\n"
        f"{SMOKE} --config perturbed --kappa 2 --eps 0.2 --milestones 4  # the pattern\n"
    )
    args = [str(jobs), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert campaign.main([*args, "--no-progress"]) == 0
    records = sorted((tmp_path / "out").glob("*.json"))
    assert sorted(json.loads(p.read_text())["config"] for p in records) == ["original", "perturbed"]
    logs = sorted((tmp_path / "work" / "logs").glob("job*.log"))
    assert [p.name[:6] for p in logs] == ["job002", "job004"]
    written = {p: p.stat().st_mtime_ns for p in records}
    assert campaign.main([*args, "--no-progress"]) == 0  # every milestone recorded: no retraining
    assert {p: p.stat().st_mtime_ns for p in records} == written
    assert "all 2 jobs done" in capsys.readouterr().out


def test_a_failing_job_fails_the_campaign_and_names_its_log(tmp_path: Path, capsys) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{SMOKE} --config perturbed --kappa 0 --milestones 4\n")
    args = [str(jobs), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert campaign.main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "failed: line 1" in err and "job001-" in err
    log = next((tmp_path / "work" / "logs").glob("job001-*.log")).read_text()
    assert "kappa" in log


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--config original --out elsewhere\n", "belongs to the campaign"),
        ("--config original --workdir=w\n", "belongs to the campaign"),
        ("# nothing\n\n", "no jobs"),
        ("--config original\n--kappa x\n", "2: not a generation.screen job"),
    ],
)
def test_bad_jobs_files_are_refused_before_anything_runs(tmp_path, capsys, text, message) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(text)
    args = [str(jobs), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert campaign.main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "work").exists()


def test_a_missing_jobs_file_is_named(tmp_path, capsys) -> None:
    args = [str(tmp_path / "none.txt"), "--workdir", str(tmp_path), "--out", str(tmp_path)]
    assert campaign.main(args) == 2 and "no such jobs file" in capsys.readouterr().err


def test_the_committed_jobs_files_are_campaigns() -> None:
    """Every jobs file committed beside screen records parses, line by line, as screen jobs."""
    found = sorted(Path(__file__).parents[1].glob("docs/results/*/jobs.txt"))
    assert found
    for path in found:
        assert campaign.read_jobs(path)
