"""Run a list of screen jobs, a few one-thread processes at once, resumable (issue 17, item 7).

    python -m generation.campaign docs/results/shapes3d-screen/jobs.txt \\
        --workdir ~/pd-runs/screen --out docs/results/shapes3d-screen --workers 2

A jobs file holds one :mod:`generation.screen` command per line, its arguments only (``--config
perturbed --kappa 1 --eps 0.25 --seed 3 --milestones 5000,10000``; ``#`` starts a comment);
``--workdir`` and ``--out`` are the campaign's, shared by every job. Jobs run in file order,
``--workers`` at a time, each a separate process on one thread (``OMP_NUM_THREADS=1``), with
its output in ``WORKDIR/logs/``. A screen skips every milestone whose record exists and resumes
its training from the last checkpoint, so an interrupted campaign continues where it stopped
when rerun, and a job whose milestones are all recorded costs seconds. Records appear in
``--out`` one milestone at a time: commit them as they come.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from generation import screen

#: Arguments a job may not set: the campaign owns them.
CAMPAIGN_ARGUMENTS = ("--workdir", "--out", "--summarise")


@dataclass(frozen=True)
class Job:
    """One line of a jobs file: the screen's arguments and where its output goes."""

    line: int
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        """A file name for the job's log: its line number and a hash of its arguments."""
        digest = hashlib.sha256(" ".join(self.args).encode()).hexdigest()[:8]
        return f"job{self.line:03d}-{digest}"


class JobsFileError(ValueError):
    """A jobs file that cannot be run as written."""


def read_jobs(path: Path) -> list[Job]:
    """The jobs of ``path`` in order; a clear error for a missing file or a job that sets what the
    campaign owns (checked for every line before anything runs)."""
    if not path.is_file():
        raise JobsFileError(f"{path}: no such jobs file")
    jobs = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        args = tuple(shlex.split(text, comments=True))
        if not args:
            continue
        owned = [a for a in args if a.split("=")[0] in CAMPAIGN_ARGUMENTS]
        if owned:
            raise JobsFileError(
                f"{path}:{number}: {' '.join(owned)} belongs to the campaign, not to a job "
                "(give --workdir and --out once, to generation.campaign)"
            )
        try:  # the screen's own parser, with the campaign's arguments filled in
            screen.parser().parse_args([*args, "--workdir", ".", "--out", "."])
        except SystemExit:
            raise JobsFileError(
                f"{path}:{number}: not a generation.screen job: {text.strip()}"
            ) from None
        jobs.append(Job(number, args))
    if not jobs:
        raise JobsFileError(f"{path}: no jobs (one generation.screen argument list per line)")
    return jobs


def run_job(job: Job, workdir: Path, out: Path) -> tuple[Job, int, float]:
    """Run one screen job in a child process on one thread; its return code and wall seconds."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "generation.screen", *job.args]
    cmd += ["--workdir", str(workdir), "--out", str(out)]
    t = time.perf_counter()
    with open(logs / f"{job.name}.log", "ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return job, rc, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m generation.campaign",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "jobs", type=Path, help="the jobs file: one generation.screen argument list a line"
    )
    p.add_argument("--workdir", type=Path, required=True, help="checkpoints, caches and logs")
    p.add_argument("--out", type=Path, required=True, help="folder of the JSON records")
    p.add_argument("--workers", type=int, default=2, help="jobs at once (one core each)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        jobs = read_jobs(a.jobs)
        if a.workers < 1:
            raise JobsFileError(f"--workers must be at least 1, got {a.workers}")
    except JobsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a.workdir.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    failed: list[Job] = []
    bar = tqdm(total=len(jobs), unit="job", desc="campaign", disable=a.no_progress)
    with ThreadPoolExecutor(max_workers=a.workers) as pool:
        futures = [pool.submit(run_job, job, a.workdir, a.out) for job in jobs]
        for future in as_completed(futures):
            job, rc, seconds = future.result()
            status = "done" if rc == 0 else f"FAILED (exit {rc})"
            bar.write(
                f"line {job.line}: {status} in {seconds / 60:.1f} min: {shlex.join(job.args)}"
            )
            if rc != 0:
                failed.append(job)
            bar.update()
    bar.close()
    if failed:
        logs = a.workdir / "logs"
        for job in sorted(failed, key=lambda j: j.line):
            print(f"failed: line {job.line}, log {logs / (job.name + '.log')}", file=sys.stderr)
        return 1
    print(f"all {len(jobs)} jobs done; records in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
