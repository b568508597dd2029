"""Train K models of one architecture at once, as one stacked model (``torch.func`` + ``vmap``).

One small VAE leaves a GPU mostly idle, while the paper's tables need many seeds × configurations.
Here the K parameter sets are stacked along a new leading dimension
(:func:`torch.func.stack_module_state`) and the objective runs once under :func:`torch.func.vmap`
(:func:`torch.func.functional_call`), which turns each convolution into one grouped convolution and
each dense layer into one batched matrix product. Every run keeps what makes it a separate run:

* its own initial weights (``build_objective(model, hp, C, d, seed)``),
* its own randomness (its own :class:`~perturbed_disentanglement.training.batches.BatchStream`), its own
  image source (sources may differ as long as they share the channel count) and hyperparameters
  (passed to :meth:`Objective.forward` as per-model tensors);
* its own optimiser state: one Adam over the stacked parameters is K separate Adams
  (:mod:`.optimizers`).

The step is training's (:func:`.optimizers.optimisation_step`, on the sum of the K losses: the
models share no parameter, so each one's gradient is exactly its own), and the loop, the resume
path and the checkpoints are training's too (:mod:`.loop`, :mod:`.resume`), so each result equals
``training.train`` of its run at the same precision up to float rounding (``tests/test_stacked.py``
checks it in float64, where rounding cannot be amplified into the weights), and a run trained in a
stack can be resumed alone (or in a stack) and loaded with ``training.load_model``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ..errors import InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from .batches import BatchStream, images_to_input
from .checkpoint import prepare_checkpoint_dir
from .encoding import encode_stacked
from .inputs import as_image_array, as_source, check_int
from .loop import LoopRun, TrainResult, train_loop
from .optimizers import (
    Optimizers,
    make_optimizers,
    optimisation_step,
    stack_adam_states,
    unstack_adam_state,
)
from .precision import arithmetic, network_autocast, resolve_device, resolve_precision
from .resume import checkpoints_to_resume, restore_run
from .run_identity import RunIdentity
from .zoo import Objective, build_objective, model_spec


@dataclass(frozen=True)
class Run:
    """One run of a stack, with the meaning of :func:`training.train`'s arguments.

    ``images`` is uint8 ``[N, 64, 64, C]`` or a :class:`GroundTruth` (its whole grid). ``dataset``
    picks the default hyperparameters (inferred as in ``train``), ``hparams`` overrides them, and
    ``latent_dim`` defaults to the number of factors. With ``checkpoint_dir`` the run writes (and
    resumes from) checkpoints in training's format; ``name`` labels it in messages.
    """

    model: str
    images: np.ndarray | GroundTruth
    seed: int = 0
    hparams: Mapping[str, float] | None = None
    dataset: str | None = None
    latent_dim: int | None = None
    checkpoint_dir: str | os.PathLike | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{model_spec(self.model).name}(seed={self.seed})"


@dataclass
class _Resolved:
    """A run of the stack with its images as an array and its identity resolved."""

    run: Run
    array: np.ndarray
    identity: RunIdentity


# --- checks ------------------------------------------------------------------------------------
def _as_run(run: Run | Mapping[str, Any], position: int) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, Mapping):
        try:
            return Run(**run)
        except TypeError as exc:
            raise InvalidArgumentError(
                f"run {position}: {exc}; expected keys model, images and optionally seed, "
                "hparams, dataset, latent_dim, checkpoint_dir, name"
            ) from exc
    raise InvalidArgumentError(
        f"run {position}: expected a Run or a mapping, got {type(run).__name__}"
    )


def _resolve(
    run: Run, position: int, batch_size: int, precision: str, arrays: dict[int, np.ndarray]
) -> _Resolved:
    """Defaults and validation of one run, exactly as :func:`training.train` resolves them.

    ``arrays`` caches each distinct source's array: a procedural GroundTruth renders its whole
    grid (3 GB for dSprites) on every ``all_images()`` call, and K runs often share one.
    """
    where = f"run {position} ({run.label})"
    if id(run.images) not in arrays:
        arrays[id(run.images)] = as_image_array(run.images, name=f"{where} images")
    array = arrays[id(run.images)]
    try:
        identity = RunIdentity.resolve(
            run.model,
            run.images,
            array,
            dataset=run.dataset,
            hparams=run.hparams,
            latent_dim=run.latent_dim,
            seed=run.seed,
            batch_size=batch_size,
            precision=precision,
        )
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from exc
    return _Resolved(run, array, identity)


def check_runs(
    runs: Sequence[Run | Mapping[str, Any]], batch_size: int = 64, precision: str = "fp32"
) -> list[_Resolved]:
    """The runs resolved and checked to form one stack (same model, channels and latent size);
    ``precision`` is the name their checkpoints store."""
    if isinstance(runs, (Run, Mapping, str)) or not isinstance(runs, Iterable):
        raise InvalidArgumentError("runs must be a sequence of Run (or mappings), one per model")
    arrays: dict[int, np.ndarray] = {}
    resolved = [
        _resolve(_as_run(r, i), i, batch_size, precision, arrays) for i, r in enumerate(runs)
    ]
    if not resolved:
        raise InvalidArgumentError("no runs to train: a stack needs K ≥ 1 runs")
    first = resolved[0].identity
    for i, r in enumerate(resolved[1:], start=1):
        for key, what in (
            ("model", "model (one architecture); stack each model separately"),
            ("channels", "channel count (image sources may differ, their channels may not)"),
            ("latent_dim", "latent size"),
        ):
            if getattr(r.identity, key) != getattr(first, key):
                raise InvalidArgumentError(
                    f"run {i} ({r.run.label}) has {key}={getattr(r.identity, key)!r} but run 0 "
                    f"has {getattr(first, key)!r}: all runs of a stack must share the {what}"
                )
    dirs = [os.path.realpath(r.run.checkpoint_dir) for r in resolved if r.run.checkpoint_dir]
    if len(set(dirs)) != len(dirs):
        raise InvalidArgumentError(
            "two runs of the stack share a checkpoint_dir; give each its own"
        )
    return resolved


# --- stacking ----------------------------------------------------------------------------------
STRATEGIES = ("vmap", "loop")


def resolve_strategy(strategy: str, device: torch.device) -> str:
    """ "auto" → "vmap" on an accelerator, "loop" on the CPU (see :class:`StackedObjective`)."""
    if strategy == "auto":
        return "loop" if device.type == "cpu" else "vmap"
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(
            f"unknown strategy {strategy!r}; expected auto, {', '.join(STRATEGIES)}"
        )
    return strategy


class StackedObjective:
    """K objectives of one architecture as stacked parameters ``[K, ...]`` and one forward.

    ``strategy`` "vmap": one vmapped forward (grouped convolutions, batched matmuls): fills a
    GPU. "loop": the K models one after the other on slices of the same stacked parameters
    (``unbind``, so one backward node hands back all K gradients): plain convolutions, which is
    faster on a CPU, where mkldnn's grouped convolutions cost ~1.6× (benchmarks/bench_stacked.py).
    Both compute the same thing. ``skeleton`` is a parameter-free copy (on the meta device) of the
    first objective; :func:`functional_call` swaps model k's slices in, so patching ``skeleton``
    with :func:`.precision.network_autocast` autocasts all K models as training does one.
    """

    def __init__(self, objectives: Sequence[Objective], strategy: str = "vmap") -> None:
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        self.strategy = strategy
        if not objectives:
            raise InvalidArgumentError("a stack needs K ≥ 1 objectives")
        layouts = {tuple((n, tuple(p.shape)) for n, p in o.named_parameters()) for o in objectives}
        if len(layouts) != 1 or len({o.spec.name for o in objectives}) != 1:
            raise InvalidArgumentError("all stacked objectives must be the same model and shape")
        self.k = len(objectives)
        self.spec = objectives[0].spec
        self.params, self.buffers = stack_module_state(list(objectives))
        vae_ids = {id(p) for p in objectives[0].vae_parameters()}
        named = list(objectives[0].named_parameters())
        self.vae_names = [n for n, p in named if id(p) in vae_ids]
        self.discriminator_names = [n for n, p in named if id(p) not in vae_ids]
        self.skeleton = copy.deepcopy(objectives[0]).to("meta")
        self.hparam_names = tuple(sorted(objectives[0].hparams))
        self._forward = vmap(self._one, in_dims=0, randomness="error")

    def _one(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        noise: torch.Tensor,
        permutations: torch.Tensor,
        hparams: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        return functional_call(
            self.skeleton, (params, buffers), (x, noise, permutations), {"hparams": hparams}
        )

    def __call__(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        permutations: torch.Tensor,
        hparams: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Loss terms ``[K]`` for inputs ``[K, B, C, 64, 64]``, noise ``[K, B, d]``,
        shuffles ``[K, d, B]`` and hyperparameters ``{name: [K]}``."""
        if self.strategy == "vmap":
            return self._forward(self.params, self.buffers, x, noise, permutations, hparams)
        params = {n: p.unbind(0) for n, p in self.params.items()}
        buffers = {n: b.unbind(0) for n, b in self.buffers.items()}
        hps = {n: h.unbind(0) for n, h in hparams.items()}
        per_model = [
            self._one(
                {n: p[k] for n, p in params.items()},
                {n: b[k] for n, b in buffers.items()},
                x[k],
                noise[k],
                permutations[k],
                {n: h[k] for n, h in hps.items()},
            )
            for k in range(self.k)
        ]
        return {t: torch.stack([terms[t] for terms in per_model]) for t in per_model[0]}

    def vae_parameters(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.vae_names]

    def discriminator_parameters(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.discriminator_names]

    @torch.no_grad()
    def copy_into(self, k: int, objective: Objective) -> None:
        """Copy model k's slice of the stacked state into ``objective``."""
        for name, p in objective.named_parameters():
            p.copy_(self.params[name][k])
        for name, b in objective.named_buffers():
            b.copy_(self.buffers[name][k])

    def unstack_into(self, objectives: Sequence[Objective]) -> None:
        """Copy model k's slice of the stacked state into ``objectives[k]``, for every k."""
        for k, objective in enumerate(objectives):
            self.copy_into(k, objective)


# --- data --------------------------------------------------------------------------------------
class StackedBatches:
    """Each run's batch from its own stream, gathered from its own source and stacked.

    Sources shared by several runs are held once. With ``on_device`` the sources live on the
    device (a step then moves only indices, noise and shuffles; uint8 dSprites is 3 GB).
    """

    def __init__(
        self,
        runs: Sequence[_Resolved],
        batch_size: int,
        device: torch.device,
        on_device: bool,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        sources: dict[int, torch.Tensor] = {}
        self.source_of_run: list[int] = []
        for r in runs:
            key = id(r.run.images)
            if key not in sources:
                source = as_source(r.array)
                sources[key] = source.to(device) if on_device else source
            self.source_of_run.append(key)
        self.sources = sources
        self.streams = [
            BatchStream(r.identity.seed, r.identity.num_images, batch_size, r.identity.latent_dim)
            for r in runs
        ]
        self.device = device
        self.dtype = dtype

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs ``[K, B, C, 64, 64]``, noise ``[K, B, d]`` and shuffles ``[K, d, B]``."""
        batches = [s.next() for s in self.streams]
        dev = self.device
        indices = torch.stack([b.indices for b in batches])
        noise = torch.stack([b.noise for b in batches]).to(dev, self.dtype, non_blocking=True)
        perms = torch.stack([b.permutations for b in batches]).to(dev, non_blocking=True)
        if len(self.sources) == 1:
            source = next(iter(self.sources.values()))
            raw = source.index_select(0, indices.flatten().to(source.device, non_blocking=True))
        else:
            raw = torch.cat(
                [
                    self.sources[key].index_select(0, idx.to(self.sources[key].device))
                    for key, idx in zip(self.source_of_run, indices)
                ]
            )
        x = images_to_input(raw.to(dev, non_blocking=True), self.dtype)
        return x.view(*indices.shape, *x.shape[1:]), noise, perms


class _StackedModels:
    """K objectives stacked, as the loop drives them (a :class:`~.loop.Trainer` of K runs).

    ``objectives`` and ``per_run`` (each run's own Adams) hold run k's state for its checkpoint:
    they are filled from the stack only when a checkpoint is written, and at the end.
    """

    def __init__(
        self,
        objectives: Sequence[Objective],
        per_run: Sequence[Optimizers],
        stack: StackedObjective,
        optimizers: Optimizers,
        data: StackedBatches,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        self.objectives, self.per_run = list(objectives), list(per_run)
        self.stack, self.optimizers, self.data = stack, optimizers, data
        self.autocast_dtype = autocast_dtype
        self.hparams = {  # per-model hyperparameters, as tensors [K]
            name: torch.tensor(
                [o.hparams[name] for o in objectives], dtype=data.dtype, device=data.device
            )
            for name in stack.hparam_names
        }

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.data.next()

    def step(self, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        x, noise, permutations = inputs
        with network_autocast(self.stack.skeleton, x.device.type, self.autocast_dtype):
            terms = self.stack(x, noise, permutations, self.hparams)
        optimisation_step(terms, self.optimizers, self.stack)
        return terms

    def run_state(self, k: int) -> tuple[Objective, dict[str, torch.optim.Optimizer], BatchStream]:
        self.stack.copy_into(k, self.objectives[k])
        for name, optimizer in self.optimizers.as_dict().items():
            self.per_run[k].as_dict()[name].load_state_dict(unstack_adam_state(optimizer, k))
        return self.objectives[k], self.per_run[k].as_dict(), self.data.streams[k]

    def finish(self) -> list[Objective]:
        self.stack.unstack_into(self.objectives)
        return [o.eval() for o in self.objectives]


# --- training ----------------------------------------------------------------------------------
def train_stacked(
    runs: Sequence[Run | Mapping[str, Any]],
    *,
    steps: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    checkpoint_every: int = 5000,
    keep_checkpoints: int = 2,
    resume: bool | None = None,
    sources_on_device: bool | None = None,
    strategy: str = "auto",
    progress: bool = True,
    sync_every: int | None = None,
    callback: Callable[[int, list[dict[str, float]]], None] | None = None,
) -> list[TrainResult]:
    """Train the K ``runs`` together as one stacked model; one :class:`TrainResult` per run.

    All runs must be the same model with the same latent size and channel count; seeds,
    hyperparameters and image sources may differ. Each result equals
    ``training.train(run.model, run.images, ..., precision=precision)`` up to float rounding.
    ``precision`` has training's meaning ("auto", "fp32", "bf16", "fp64"; the channels-last
    layout is not used: under vmap the K models are one grouped convolution). Runs with a
    ``checkpoint_dir`` write training-format checkpoints every ``checkpoint_every`` steps and at
    the end; with ``resume`` (None: if all have one) the stack continues from them, which must all
    be at the same step and belong to the same runs (settings, precision and images, as
    :class:`~.run_identity.RunIdentity` checks); checkpoint directories are created at once. Seeds
    are integers in [0, 2**63 - 1], as in ``train``. The CPU thread count is torch's current one
    (no probe), so a seed fixes the result for that count. ``sources_on_device`` (default: on a
    GPU) keeps the uint8 sources on the device. ``strategy``: "vmap" (one grouped forward),
    "loop" (the models in turn, same stacked state and optimizer) or "auto" (vmap on a GPU, loop
    on the CPU, where it is faster). ``callback(step, [terms of run k])`` is called after each
    host sync (every ``sync_every`` steps: 1 on the CPU, 50 on a GPU). A NaN or infinite loss
    raises :class:`TrainingDivergedError` naming the runs that diverged.
    """
    steps = check_int("steps", steps, 0)
    batch_size = check_int("batch_size", batch_size, 2)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    keep = check_int("keep_checkpoints", keep_checkpoints, 1)
    dev = resolve_device(device)
    plan = resolve_precision(precision, dev)
    # checkpoints store the arithmetic only: under vmap there is no channels-last layout
    resolved = check_runs(runs, batch_size, arithmetic(plan.name))
    strategy = resolve_strategy(strategy, dev)
    if sync_every is None:
        sync_every = 1 if dev.type == "cpu" else 50
    sync_every = check_int("sync_every", sync_every, 1)
    on_device = dev.type != "cpu" if sources_on_device is None else bool(sources_on_device)
    k = len(resolved)
    labels = [f"run {i} ({r.run.label})" for i, r in enumerate(resolved)]
    dirs = [r.run.checkpoint_dir for r in resolved]
    for label, d in zip(labels, dirs):
        if d is not None:
            prepare_checkpoint_dir(d, f"{label}: checkpoint_dir")
    identities = [r.identity for r in resolved]
    resumed = checkpoints_to_resume(identities, dirs, resume, labels)

    objectives = [
        build_objective(i.model, i.hparams, i.channels, i.latent_dim, i.seed).to(dev, plan.dtype)
        for i in identities
    ]
    per_run = [make_optimizers(o) for o in objectives]
    data = StackedBatches(resolved, batch_size, dev, on_device, plan.dtype)
    for c, o, opt, stream in zip(resumed or (), objectives, per_run, data.streams):
        restore_run(c, o, opt, stream)
    stack = StackedObjective([o.train() for o in objectives], strategy)
    # fused Adam is the same elementwise update in one kernel; on the CPU keep the reference loop
    optimizers = make_optimizers(stack, fused=dev.type == "cuda" or None)
    if resumed is not None:
        for name, optimizer in optimizers.as_dict().items():
            stack_adam_states(optimizer, [opt.as_dict()[name].state_dict() for opt in per_run])
    results = train_loop(
        _StackedModels(objectives, per_run, stack, optimizers, data, plan.autocast_dtype),
        [LoopRun(i, d) for i, d in zip(identities, dirs)],
        resumed,
        steps=steps,
        device=dev,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep,
        sync_every=sync_every,
        progress=progress,
        description=f"{stack.spec.name} ×{k}",
        callback=callback,
        labels=labels,
    )
    for i, result in enumerate(results):
        result.extra = {
            "stack_size": k,
            "strategy": strategy,
            "stack_index": i,
            "stack_images_per_second": result.images_per_second * k,
            "vae_optimizer_state": unstack_adam_state(optimizers.vae, i),
            "discriminator_optimizer_state": (
                None
                if optimizers.discriminator is None
                else unstack_adam_state(optimizers.discriminator, i)
            ),
            "batch_stream_state": data.streams[i].state(),
        }
    return results


__all__: Sequence[str] = (
    "Run",
    "StackedBatches",
    "StackedObjective",
    "check_runs",
    "encode_stacked",
    "resolve_strategy",
    "stack_adam_states",
    "train_stacked",
    "unstack_adam_state",
)
