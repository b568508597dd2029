"""The loss history of K runs trained together (K = 1 for one model), synced in blocks.

Loss terms stay on the device until :meth:`LossHistory.flush` moves the pending steps to the host
in one transfer; a non-finite term raises :class:`TrainingDivergedError` naming the step, the run
(in a stack) and the terms, and nothing of that block is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import TrainingDivergedError


class LossHistory:
    """Per-step loss terms of ``k`` runs: ``"step"`` (1-based) and one column per term.

    ``initial`` holds each run's history so far (a resumed run's, from its checkpoint); ``labels``
    name the runs in a divergence message (None: a run trained alone, named by nothing).
    """

    def __init__(
        self,
        k: int = 1,
        initial: Sequence[Mapping[str, np.ndarray]] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.columns: list[dict[str, list[float]]] = [
            {name: list(map(float, values)) for name, values in (run or {}).items()}
            for run in (initial or [None] * k)
        ]
        self.labels = labels
        self.names: list[str] = []
        self.pending: list[tuple[int, torch.Tensor]] = []

    def add(self, step: int, terms: Mapping[str, torch.Tensor]) -> None:
        """Record one step's terms: scalars (one run) or ``[K]`` tensors (a stack)."""
        if not self.names:
            self.names = list(terms)
        row = torch.stack([terms[n].detach().double() for n in self.names], -1)
        self.pending.append((step, row.reshape(len(self.columns), len(self.names))))

    def flush(self) -> list[dict[str, float]] | None:
        """Move pending steps to the host; the last step's terms of each run, or None if none."""
        if not self.pending:
            return None
        block = torch.stack([row for _, row in self.pending]).double().cpu().numpy()  # [S, K, T]
        steps = [step for step, _ in self.pending]
        self.pending.clear()
        finite = np.isfinite(block).all(axis=2)  # [S, K]
        if not finite.all():
            s = int(np.argmin(finite.all(axis=1)))
            k = int(np.argmin(finite[s]))
            values = dict(zip(self.names, block[s, k].tolist()))
            bad = ", ".join(f"{n}={v}" for n, v in values.items() if not np.isfinite(v))
            where, advice = "", ""
            if self.labels is not None:
                where = " in " + ", ".join(self.labels[i] for i in np.flatnonzero(~finite[s]))
                advice = "; the other runs of the stack are unaffected: train them without these"
            raise TrainingDivergedError(
                f"training diverged at step {steps[s]}{where}: non-finite loss terms {bad} "
                f"(all terms: {values}){advice}"
            )
        for k, columns in enumerate(self.columns):
            columns.setdefault("step", []).extend(float(s) for s in steps)
            for j, name in enumerate(self.names):
                columns.setdefault(name, []).extend(block[:, k, j].tolist())
        return [dict(zip(self.names, block[-1, k].tolist())) for k in range(len(self.columns))]

    def steps(self, k: int = 0) -> int:
        """How many steps run k's history holds."""
        return len(self.columns[k].get("step", []))

    def arrays(self, k: int = 0) -> dict[str, np.ndarray]:
        """Run k's history as float64 arrays, one entry per step."""
        return {n: np.asarray(v, dtype=np.float64) for n, v in self.columns[k].items()}
