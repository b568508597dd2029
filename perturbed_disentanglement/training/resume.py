"""Resuming: which checkpoints K runs continue from (all or none, at one step), and restoring one.

One path for a model trained alone (K = 1) and for a stack: :func:`checkpoints_to_resume` finds
each run's newest checkpoint, applies ``resume`` (None: continue if there is one; True: there must
be one; False: there must be none) and checks that every checkpoint belongs to its run
(:meth:`~.run_identity.RunIdentity.check_checkpoint`); :func:`restore_run` loads one checkpoint into
a run's objective, per-model optimizers and batch stream. :func:`find_checkpoint` looks for a
run's checkpoint in another folder (e.g. one a screening campaign trained), by its identity.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError
from . import checkpoint as ckpt
from .batches import BatchStream
from .optimizers import Optimizers
from .run_identity import RunIdentity
from .zoo import Objective


def checkpoints_to_resume(
    identities: Sequence[RunIdentity],
    checkpoint_dirs: Sequence[str | os.PathLike | None],
    resume: bool | None,
    labels: Sequence[str],
) -> list[ckpt.Checkpoint] | None:
    """Each run's newest checkpoint, checked against its identity, or None to start afresh."""
    latest = [ckpt.latest_checkpoint(d) if d is not None else None for d in checkpoint_dirs]
    held = [p for p in latest if p is not None]
    alone = len(identities) == 1
    if held and resume is False:
        if alone:
            raise CheckpointError(
                f"{checkpoint_dirs[0]} already holds a checkpoint ({held[0].name}) and "
                "resume=False; pass resume=True (or None) to continue it, or use an empty directory"
            )
        raise CheckpointError(
            f"{len(held)} run(s) already hold a checkpoint and resume=False; pass resume=True "
            "(or None) to continue them, or use empty directories"
        )
    if not held:
        if resume:
            where = f"{checkpoint_dirs[0]} holds" if alone else "no run of the stack holds"
            raise CheckpointError(f"resume=True but {where} no checkpoint")
        return None
    if len(held) < len(latest):
        missing = [label for label, p in zip(labels, latest) if p is None]
        raise CheckpointError(
            f"only some runs hold a checkpoint (missing: {', '.join(missing)}); a stack resumes "
            "all its runs at the same step: resume them alone or start them afresh"
        )
    checkpoints = [ckpt.read_checkpoint(p) for p in held]
    steps = {c.step for c in checkpoints}
    if len(steps) != 1:
        raise CheckpointError(
            f"the runs' checkpoints are at different steps {sorted(steps)}; a stack resumes all "
            "its runs at the same step"
        )
    for identity, c, label in zip(identities, checkpoints, labels):
        identity.check_checkpoint(c.state, c.path, label)
    return checkpoints


def restore_run(
    checkpoint: ckpt.Checkpoint,
    objective: Objective,
    optimizers: Optimizers,
    stream: BatchStream,
) -> None:
    """Load ``checkpoint`` into a run's objective, optimizers and batch stream (its loss history
    is read by the loop), or say what is missing or corrupt."""
    ckpt.load_weights(objective, checkpoint)
    for name, optimizer in optimizers.as_dict().items():
        try:
            ckpt.optimizer_from_parts(
                optimizer,
                checkpoint.tensors,
                checkpoint.state["optimizers"][name],
                f"optimizer/{name}",
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{checkpoint.path}: optimizer state {name!r} is missing or corrupt: {exc}"
            ) from exc
    stream.load_state(checkpoint.state["batch_stream_state"])
    if len(checkpoint.history().get("step", ())) != checkpoint.step:
        raise CheckpointError(f"{checkpoint.path}: loss history does not match its step")


def find_checkpoint(
    identity: RunIdentity, root: str | os.PathLike, *, max_step: int
) -> Path | None:
    """The newest checkpoint under ``root`` (at any depth) that belongs to the run ``identity``
    (:meth:`~.run_identity.RunIdentity.check_checkpoint`: same model, hyperparameters, seed,
    batch size, precision and images) at a step ≤ ``max_step``; None if there is none.

    Continuing it is continuing that run: a checkpoint holds the weights, the optimizer moments
    and the batch stream, so the result is the one training from scratch gives (bitwise for the
    same thread count). Only the checkpoints' JSON is read; unreadable ones are passed over.
    """
    best, best_step = None, -1
    for state_file in sorted(Path(root).rglob(ckpt.STATE_FILE)):
        step = ckpt.step_of(state_file.parent)
        if step is None or step > max_step or step <= best_step:
            continue
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            identity.check_checkpoint(state, state_file.parent)
        except (OSError, ValueError, TypeError, CheckpointError):
            continue
        best, best_step = state_file.parent, step
    return best
