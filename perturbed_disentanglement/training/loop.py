"""The training loop, shared by one model (:func:`.training.train`) and K stacked models
(:func:`.stacked.train_stacked`), and the :class:`TrainResult` it returns per run.

What differs between the two is behind :class:`Trainer`: how a step's batches are drawn, how a step
is taken, and how run k's objective, optimizers and batch stream look for its checkpoint. The loop
owns the rest: host syncs (every ``sync_every`` steps) with the divergence check and the callback,
the progress bar, checkpoints in the one format (every ``checkpoint_every`` steps and at the end),
and the timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from . import checkpoint as ckpt
from .batches import BatchStream
from .history import LossHistory
from .run_identity import RunIdentity
from .zoo import Objective


@dataclass
class TrainResult:
    """A finished run: the trained objective, its loss history and how fast it ran.

    ``history`` maps ``"step"`` (1-based) and every loss term to float64 arrays with one entry per
    step since step 1 (a resumed run includes the steps before the checkpoint). ``wall_time``,
    ``images_per_second`` and ``data_fraction`` (share of step time spent gathering and converting
    batches) cover the steps trained in this call only (not the thread probe, see ``extra``).
    ``num_threads`` is the CPU thread count the run used.
    """

    objective: Objective
    history: dict[str, np.ndarray]
    model: str
    hparams: dict[str, float]
    latent_dim: int
    seed: int
    steps: int
    start_step: int
    wall_time: float
    images_per_second: float
    data_fraction: float
    precision: str
    device: str
    checkpoint: str | None = None
    num_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return float(self.history["loss"][-1])


class Trainer(Protocol):
    """One model or K stacked models, as the loop drives them."""

    def next_batch(self) -> Any:
        """The next step's inputs, drawn from the runs' batch streams (timed as data time)."""

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step; the loss terms (scalars, or ``[K]`` for a stack)."""

    def run_state(self, k: int) -> tuple[Objective, dict[str, torch.optim.Optimizer], BatchStream]:
        """Run k's objective, named per-model optimizers and batch stream, for its checkpoint."""

    def finish(self) -> list[Objective]:
        """The K trained objectives, in eval mode."""


@dataclass(frozen=True)
class LoopRun:
    """What the loop needs of each run: its identity, where it checkpoints, and what else its
    checkpoints store (``train`` stores the thread count it ran with)."""

    identity: RunIdentity
    checkpoint_dir: str | os.PathLike | None = None
    stored: dict[str, Any] = field(default_factory=dict)


def train_loop(
    trainer: Trainer,
    runs: Sequence[LoopRun],
    resumed: Sequence[ckpt.Checkpoint] | None,
    *,
    steps: int,
    device: torch.device,
    checkpoint_every: int,
    keep_checkpoints: int,
    sync_every: int,
    progress: bool,
    description: str,
    callback: Callable[[int, list[dict[str, float]]], None] | None = None,
    labels: Sequence[str] | None = None,
    num_threads: int = 0,
) -> list[TrainResult]:
    """Train the runs to ``steps``; one :class:`TrainResult` per run.

    ``resumed`` are the checkpoints the runs continue from (already restored into ``trainer``,
    all at one step), or None for a fresh start. ``callback(step, [terms of run k])`` is called
    after every host sync; ``labels`` name the runs of a stack in a divergence message.
    """
    start_step = resumed[0].step if resumed else 0
    history = LossHistory(len(runs), [c.history() for c in resumed] if resumed else None, labels)
    saved: list[str | None] = [str(c.path) for c in resumed] if resumed else [None] * len(runs)

    def save(step: int) -> None:
        history.flush()  # never write a checkpoint after a diverged step
        for k, run in enumerate(runs):
            if run.checkpoint_dir is None:
                continue
            objective, optimizers, stream = trainer.run_state(k)
            path = ckpt.save_checkpoint(
                run.checkpoint_dir,
                step=step,
                objective=objective,
                optimizers=optimizers,
                stream_state=stream.state(),
                history=history.arrays(k),
                config=run.identity.state() | run.stored,
                keep=keep_checkpoints,
            )
            saved[k] = str(path)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=min(start_step, steps),
        disable=not progress,
        desc=description,
        unit="step",
        dynamic_ncols=True,
    )
    checkpointing = any(run.checkpoint_dir is not None for run in runs)
    data_time = 0.0
    t0 = time.perf_counter()
    try:
        for step in range(start_step + 1, steps + 1):
            t_data = time.perf_counter()
            batch = trainer.next_batch()
            data_time += time.perf_counter() - t_data
            history.add(step, trainer.step(batch))
            if step % sync_every == 0 or step == steps:
                last = history.flush()
                if last is not None:
                    if callback is not None:
                        callback(step, last)
                    if progress and (step % max(sync_every, 10) == 0 or step == steps):
                        bar.set_postfix(_postfix(last), refresh=False)
            if checkpointing and (step % checkpoint_every == 0 or step == steps):
                save(step)
            bar.update(1)
        history.flush()
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    trained = max(0, steps - start_step)
    timed = trained > 0 and wall > 0
    objectives = trainer.finish()
    return [
        TrainResult(
            objective=objective,
            history=history.arrays(k),
            model=run.identity.model,
            hparams=dict(run.identity.hparams),
            latent_dim=run.identity.latent_dim,
            seed=run.identity.seed,
            steps=max(steps, start_step),
            start_step=start_step,
            wall_time=wall,
            images_per_second=trained * run.identity.batch_size / wall if timed else 0.0,
            data_fraction=data_time / wall if timed else 0.0,
            precision=run.identity.precision,
            device=str(device),
            checkpoint=saved[k],
            num_threads=num_threads,
        )
        for k, (run, objective) in enumerate(zip(runs, objectives))
    ]


def _postfix(last: list[dict[str, float]]) -> dict[str, str]:
    """The progress bar's loss display: every term of one run, the mean loss of a stack."""
    if len(last) == 1:
        return {k: f"{v:.4g}" for k, v in last[0].items() if k != "step"}
    return {"mean loss": f"{sum(t['loss'] for t in last) / len(last):.4g}"}
