"""The sweep on Ray: each run a task with the CPUs or GPU it needs, for sweeps beyond one machine.

``address=None`` starts a local Ray runtime; ``"auto"`` or ``"HOST:PORT"`` joins a cluster. Each
config is decoded once on the driver and put in Ray's object store; tasks on one machine read it
without copies. Records go to ``out``, which must be storage every worker can write (on a cluster: a
shared filesystem). Ray is optional: ``pip install 'perturbed-disentanglement[ray]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidArgumentError
from .data import ConfigData
from .evaluation import EvaluationSizes
from .execute import SweepOutcome, run_or_report, unfinished
from .plan import RunSpec


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError(
            "--ray needs Ray: pip install 'perturbed-disentanglement[ray]' (or run without --ray)"
        ) from None
    return ray


def _task(spec: RunSpec, data: ConfigData, out: str, kwargs: dict[str, Any]) -> str | None:
    return run_or_report(spec, data, out, progress=False, **kwargs)


def run_with_ray(
    specs: Sequence[RunSpec],
    load: Callable[[str], ConfigData],
    out: str | os.PathLike,
    *,
    address: str | None = None,
    preset: str,
    sizes: EvaluationSizes,
    checkpoint_every: int,
    device: str = "cpu",
    num_threads: int | None = None,
    log: Callable[[str], None] = print,
    adopt: str | os.PathLike | None = None,
    allow_training: bool = True,
) -> SweepOutcome:
    """Every unfinished run of ``specs`` as a Ray task; returns when all have ended."""
    ray = _import_ray()
    out = Path(out).resolve()
    todo, outcome = unfinished(specs, out)
    if not todo:
        return outcome
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpu = torch.device(device).type == "cuda"
    task = ray.remote(num_cpus=num_threads or 1, num_gpus=1 if gpu else 0)(_task)
    kwargs = dict(
        preset=preset,
        sizes=sizes,
        checkpoint_every=checkpoint_every,
        device="cuda" if gpu else device,  # Ray gives each task its own visible GPU
        num_threads=num_threads or 1,
        adopt=None if adopt is None else str(Path(adopt).resolve()),
        allow_training=allow_training,
    )
    try:
        pending = {}
        for config in dict.fromkeys(s.config for s in todo):
            ref = ray.put(load(config))
            for spec in (s for s in todo if s.config == config):
                pending[task.remote(spec, ref, str(out), kwargs)] = spec
        log(f"ray: {len(pending)} run(s) submitted to {ray.cluster_resources()}")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                error = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a lost worker: report, keep going
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                outcome.trained.append(spec.run_id)
                log(f"ray: run {spec.run_id} finished ({len(pending)} left)")
            else:
                outcome.failed[spec.run_id] = error
                log(f"ray: run {spec.run_id} failed: {error}")
    finally:
        if started_here:
            ray.shutdown()
    return outcome
