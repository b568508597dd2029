"""Train K models of one architecture at once, as one stacked model (``torch.func`` + ``vmap``).

One small VAE leaves a GPU mostly idle, while the paper's tables need many seeds × configurations.
Here the K parameter sets are stacked along a new leading dimension
(:func:`torch.func.stack_module_state`) and the objective runs once under :func:`torch.func.vmap`
(:func:`torch.func.functional_call`), which turns each convolution into one grouped convolution and
each dense layer into one batched matrix product. Every run keeps what makes it a separate run:

* its own initial weights (``build_objective(model, hp, C, d, seed)``),
* its own randomness (its own :class:`~perturbed_disentanglement.batches.BatchStream`), its own
  image source (sources may differ as long as they share the channel count) and hyperparameters
  (passed to :meth:`Objective.forward` as per-model tensors);
* its own optimiser state: Adam is elementwise and all K models step together, so one Adam over the
  stacked parameters (one shared step count, hence identical bias corrections) is K separate Adams.

The loss that is backpropagated is the *sum* over the models of each model's loss: the models share
no parameter, so each one's gradient is exactly its own. As in :func:`training.training_step` the
VAE loss reaches only the VAE parameters and FactorVAE's discriminator loss only the
discriminator's, both from the same forward pass, both stepped once per step. Each result equals
``training.train`` of its run at the same precision up to float rounding (``tests/test_stacked.py``
checks it in float64, where rounding cannot be amplified into the weights), and each run can write
checkpoints in training's format, so a run trained in a stack can be resumed alone (or in a stack)
and loaded with ``training.load_model``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from . import checkpoint as ckpt
from .batches import BatchStream, images_to_input
from .errors import CheckpointError, InvalidArgumentError, TrainingDivergedError
from .ground_truth import GroundTruth
from .models import VAE
from .training import (
    DISCRIMINATOR_ADAM,
    VAE_ADAM,
    TrainResult,
    as_image_array,
    as_source,
    check_int,
    check_resume,
    network_autocast,
    prepare_checkpoint_dir,
    resolve_device,
    resolve_precision,
    run_config,
)
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
    """A run's settings after defaults, in the form training's checkpoints store them."""

    run: Run
    array: np.ndarray
    config: dict[str, Any]


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


def _resolve(run: Run, position: int, batch_size: int, arrays: dict[int, np.ndarray]) -> _Resolved:
    """Defaults and validation of one run, exactly as :func:`training.train` resolves them.

    ``arrays`` caches each distinct source's array: a procedural GroundTruth renders its whole
    grid (3 GB for dSprites) on every ``all_images()`` call, and K runs often share one.
    """
    where = f"run {position} ({run.label})"
    if id(run.images) not in arrays:
        arrays[id(run.images)] = as_image_array(run.images, name=f"{where} images")
    array = arrays[id(run.images)]
    try:
        config = run_config(
            run.model,
            run.images,
            array,
            dataset=run.dataset,
            hparams=run.hparams,
            latent_dim=run.latent_dim,
            seed=run.seed,
            batch_size=batch_size,
        )
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from exc
    return _Resolved(run, array, config)


def check_runs(runs: Sequence[Run | Mapping[str, Any]], batch_size: int = 64) -> list[_Resolved]:
    """The runs resolved and checked to form one stack (same model, channels and latent size)."""
    if isinstance(runs, (Run, Mapping, str)) or not isinstance(runs, Iterable):
        raise InvalidArgumentError("runs must be a sequence of Run (or mappings), one per model")
    arrays: dict[int, np.ndarray] = {}
    resolved = [_resolve(_as_run(r, i), i, batch_size, arrays) for i, r in enumerate(runs)]
    if not resolved:
        raise InvalidArgumentError("no runs to train: a stack needs K ≥ 1 runs")
    first = resolved[0].config
    for i, r in enumerate(resolved[1:], start=1):
        for key, what in (
            ("model", "model (one architecture); stack each model separately"),
            ("channels", "channel count (image sources may differ, their channels may not)"),
            ("latent_dim", "latent size"),
        ):
            if r.config[key] != first[key]:
                raise InvalidArgumentError(
                    f"run {i} ({r.run.label}) has {key}={r.config[key]!r} but run 0 has "
                    f"{first[key]!r}: all runs of a stack must share the {what}"
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
    with :func:`training.network_autocast` autocasts all K models as training does one.
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
    def unstack_into(self, objectives: Sequence[Objective]) -> None:
        """Copy model k's slice of the stacked state into ``objectives[k]``."""
        for k, objective in enumerate(objectives):
            for name, p in objective.named_parameters():
                p.copy_(self.params[name][k])
            for name, b in objective.named_buffers():
                b.copy_(self.buffers[name][k])


def unstack_adam_state(optimizer: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """Model k's slice of an Adam over stacked parameters, as the ``state_dict()`` of an Adam over
    that model's own parameters (same order): nothing but the slices differs between models."""
    full = optimizer.state_dict()
    state = {
        index: {
            # the shared step count goes to the CPU, where a plain (unfused) Adam keeps it
            key: value.detach().cpu().clone()
            if key == "step" or value.ndim == 0
            else value[k].clone()
            for key, value in slot.items()
        }
        for index, slot in full["state"].items()
    }
    return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}


def stack_adam_states(
    optimizer: torch.optim.Optimizer, states: Sequence[Mapping[str, Any]]
) -> None:
    """Load K per-model Adam ``state_dict()``s into an Adam over the stacked parameters.

    The K states must have taken the same number of steps (they do when the K runs were
    checkpointed at the same step); otherwise their bias corrections would differ.
    """
    steps = {float(slot["step"]) for s in states for slot in s["state"].values() if "step" in slot}
    if len(steps) > 1:
        raise CheckpointError(f"the runs' optimizers have taken different step counts {steps}")
    indices = set(states[0]["state"])
    if any(set(s["state"]) != indices for s in states):
        raise CheckpointError("the runs' optimizer states cover different parameters")
    device = optimizer.param_groups[0]["params"][0].device
    stacked = {
        index: {
            key: (
                value.clone()
                if key == "step" or value.ndim == 0
                else torch.stack([s["state"][index][key] for s in states]).to(device)
            )
            for key, value in states[0]["state"][index].items()
        }
        for index in indices
    }
    optimizer.load_state_dict(
        {"state": stacked, "param_groups": optimizer.state_dict()["param_groups"]}
    )


def _adam(params: list[torch.Tensor], settings: Mapping[str, Any], device: torch.device) -> Any:
    # fused Adam is the same elementwise update in one kernel; on the CPU keep the reference loop
    return torch.optim.Adam(params, **settings, fused=device.type == "cuda" or None)


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
            BatchStream(
                r.config["seed"], r.config["num_images"], batch_size, r.config["latent_dim"]
            )
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


class _StackedHistory:
    """Per-step loss terms of K models, fetched from the device in blocks (one sync each)."""

    def __init__(self, k: int) -> None:
        self.columns: list[dict[str, list[float]]] = [{} for _ in range(k)]
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.names: list[str] = []

    def add(self, step: int, terms: Mapping[str, torch.Tensor]) -> None:
        if not self.names:
            self.names = list(terms)
        self.pending.append(
            (step, torch.stack([terms[n].detach().double() for n in self.names], 1))
        )

    def flush(self, labels: Sequence[str]) -> list[dict[str, float]] | None:
        """Move pending rows to the host; raise TrainingDivergedError at the first non-finite."""
        if not self.pending:
            return None
        block = torch.stack([row for _, row in self.pending]).double().cpu().numpy()  # [S, K, T]
        steps = [step for step, _ in self.pending]
        self.pending.clear()
        finite = np.isfinite(block).all(axis=2)  # [S, K]
        if not finite.all():
            s = int(np.argmin(finite.all(axis=1)))
            bad = [labels[k] for k in np.flatnonzero(~finite[s])]
            raise TrainingDivergedError(
                f"training diverged at step {steps[s]} in {', '.join(bad)}: non-finite loss terms "
                f"(the other runs of the stack are unaffected; train them without these)"
            )
        for k, columns in enumerate(self.columns):
            columns.setdefault("step", []).extend(float(s) for s in steps)
            for j, name in enumerate(self.names):
                columns.setdefault(name, []).extend(block[:, k, j].tolist())
        return [dict(zip(self.names, block[-1, k].tolist())) for k in range(len(self.columns))]

    def arrays(self, k: int) -> dict[str, np.ndarray]:
        return {n: np.asarray(v, dtype=np.float64) for n, v in self.columns[k].items()}


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
    ``precision`` has training's meaning ("auto", "fp32", "bf16", "fp64"; the channels-last layout
    is not used: under vmap the K models are one grouped convolution). Runs with a ``checkpoint_dir``
    write training-format checkpoints every ``checkpoint_every`` steps and at the end; with
    ``resume`` (None: if all have one) the stack continues from them, which must all be at the same
    step and belong to the same runs (settings, precision and images, as
    :func:`training.check_resume` checks); checkpoint directories are created at once. Seeds are
    integers in [0, 2**63 - 1], as in ``train``. The CPU thread count is torch's current one
    (no probe), so a seed fixes the result for that count. ``sources_on_device`` (default: on a GPU) keeps the uint8 sources on the device.
    ``strategy``: "vmap" (one grouped forward), "loop" (the models in turn, same stacked state
    and optimizer) or "auto" (vmap on a GPU, loop on the CPU, where it is faster).
    ``callback(step, [terms of run k])`` is called after each host sync (every ``sync_every``
    steps: 1 on the CPU, 50 on a GPU). A NaN or infinite loss raises
    :class:`TrainingDivergedError` naming the runs that diverged.
    """
    steps = check_int("steps", steps, 0)
    batch_size = check_int("batch_size", batch_size, 2)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    keep = check_int("keep_checkpoints", keep_checkpoints, 1)
    resolved = check_runs(runs, batch_size)
    dev = resolve_device(device)
    plan = resolve_precision(precision, dev)
    precision_name = plan.name.replace("+channels_last", "")
    for r in resolved:
        r.config["precision"] = precision_name
    strategy = resolve_strategy(strategy, dev)
    if sync_every is None:
        sync_every = 1 if dev.type == "cpu" else 50
    sync_every = check_int("sync_every", sync_every, 1)
    on_device = dev.type != "cpu" if sources_on_device is None else bool(sources_on_device)
    k = len(resolved)
    labels = [f"run {i} ({r.run.label})" for i, r in enumerate(resolved)]
    for label, r in zip(labels, resolved):
        if r.run.checkpoint_dir is not None:
            prepare_checkpoint_dir(r.run.checkpoint_dir, f"{label}: checkpoint_dir")

    objectives = [
        build_objective(c["model"], c["hparams"], c["channels"], c["latent_dim"], c["seed"])
        for c in (r.config for r in resolved)
    ]
    objectives = [o.to(dev, plan.dtype).train() for o in objectives]
    restored = _restore(resolved, objectives, resume)
    start_step = restored[0].step if restored else 0
    stack = StackedObjective(objectives, strategy)
    hparams = {
        name: torch.tensor([o.hparams[name] for o in objectives], dtype=plan.dtype, device=dev)
        for name in stack.hparam_names
    }
    vae_params = stack.vae_parameters()
    disc_params = stack.discriminator_parameters()
    vae_opt = _adam(vae_params, VAE_ADAM, dev)
    disc_opt = _adam(disc_params, DISCRIMINATOR_ADAM, dev) if disc_params else None
    data = StackedBatches(resolved, batch_size, dev, on_device, plan.dtype)
    history = _StackedHistory(k)
    if restored:
        _load_restored(restored, vae_opt, disc_opt, data, history)

    def save(step: int) -> list[str | None]:
        history.flush(labels)
        stack.unstack_into(objectives)
        return [
            _save_run(r, objectives[i], vae_opt, disc_opt, i, data, history, step, keep)
            for i, r in enumerate(resolved)
        ]

    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=min(start_step, steps),
        disable=not progress,
        desc=f"{stack.spec.name} ×{k}",
        unit="step",
        dynamic_ncols=True,
    )
    saved: list[str | None] = [
        str(r.path) if r is not None else None for r in (restored or [None] * k)
    ]
    data_time = 0.0
    t0 = time.perf_counter()
    try:
        with network_autocast(stack.skeleton, dev.type, plan.autocast_dtype):
            for step in range(start_step + 1, steps + 1):
                t_data = time.perf_counter()
                x, noise, perms = data.next()
                data_time += time.perf_counter() - t_data
                terms = stack(x, noise, perms, hparams)
                vae_opt.zero_grad(set_to_none=True)
                terms["loss"].sum().backward(inputs=vae_params, retain_graph=bool(disc_params))
                if disc_opt is not None:
                    disc_opt.zero_grad(set_to_none=True)
                    terms["discriminator_loss"].sum().backward(inputs=disc_params)
                vae_opt.step()
                if disc_opt is not None:
                    disc_opt.step()
                history.add(step, terms)
                if step % sync_every == 0 or step == steps:
                    last = history.flush(labels)
                    if last is not None:
                        if callback is not None:
                            callback(step, last)
                        if progress:
                            mean = sum(t["loss"] for t in last) / k
                            bar.set_postfix({"mean loss": f"{mean:.4g}"}, refresh=False)
                if any(r.run.checkpoint_dir for r in resolved) and (
                    step % checkpoint_every == 0 or step == steps
                ):
                    saved = [s or old for s, old in zip(save(step), saved)]
                bar.update(1)
            history.flush(labels)
    finally:
        bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    trained = max(0, steps - start_step)
    stack.unstack_into(objectives)
    rate = trained * batch_size / wall if trained and wall > 0 else 0.0
    results = []
    for i, r in enumerate(resolved):
        objective = objectives[i].eval()
        c = r.config
        results.append(
            TrainResult(
                objective=objective,
                history=history.arrays(i),
                model=c["model"],
                hparams=dict(c["hparams"]),
                latent_dim=c["latent_dim"],
                seed=c["seed"],
                steps=max(steps, start_step),
                start_step=start_step,
                wall_time=wall,
                images_per_second=rate,
                data_fraction=data_time / wall if trained and wall > 0 else 0.0,
                precision=precision_name,
                device=str(dev),
                checkpoint=saved[i],
                extra={
                    "stack_size": k,
                    "strategy": strategy,
                    "stack_index": i,
                    "stack_images_per_second": rate * k,
                    "vae_optimizer_state": unstack_adam_state(vae_opt, i),
                    "discriminator_optimizer_state": (
                        None if disc_opt is None else unstack_adam_state(disc_opt, i)
                    ),
                    "batch_stream_state": data.streams[i].state(),
                },
            )
        )
    return results


# --- checkpoints in training's format ---------------------------------------------------------
def _per_model_optimizers(
    objective: Objective,
    vae_opt: torch.optim.Optimizer,
    disc_opt: torch.optim.Optimizer | None,
    k: int,
) -> dict[str, torch.optim.Optimizer]:
    """Per-model Adams (as ``training.make_optimizers`` builds them) holding model k's state."""
    vae = torch.optim.Adam(objective.vae_parameters(), **VAE_ADAM)
    vae.load_state_dict(unstack_adam_state(vae_opt, k))
    named: dict[str, torch.optim.Optimizer] = {"vae": vae}
    if disc_opt is not None:
        disc = torch.optim.Adam(objective.discriminator_parameters(), **DISCRIMINATOR_ADAM)
        disc.load_state_dict(unstack_adam_state(disc_opt, k))
        named["discriminator"] = disc
    return named


def _save_run(
    r: _Resolved,
    objective: Objective,
    vae_opt: torch.optim.Optimizer,
    disc_opt: torch.optim.Optimizer | None,
    k: int,
    data: StackedBatches,
    history: _StackedHistory,
    step: int,
    keep: int,
) -> str | None:
    if r.run.checkpoint_dir is None:
        return None
    path = ckpt.save_checkpoint(
        r.run.checkpoint_dir,
        step=step,
        objective=objective,
        optimizers=_per_model_optimizers(objective, vae_opt, disc_opt, k),
        stream_state=data.streams[k].state(),
        history=history.arrays(k),
        config=r.config,
        keep=keep,
    )
    return str(path)


def _restore(
    resolved: Sequence[_Resolved], objectives: Sequence[Objective], resume: bool | None
) -> list[ckpt.Checkpoint] | None:
    """Read every run's newest checkpoint (all or none) and load its weights."""
    dirs = [r.run.checkpoint_dir for r in resolved]
    latest = [ckpt.latest_checkpoint(d) if d is not None else None for d in dirs]
    have = [p is not None for p in latest]
    if resume is False and any(have):
        raise CheckpointError(
            f"{sum(have)} run(s) already hold a checkpoint and resume=False; pass resume=True "
            "(or None) to continue them, or use empty directories"
        )
    if not any(have):
        if resume:
            raise CheckpointError("resume=True but no run of the stack holds a checkpoint")
        return None
    if not all(have):
        missing = [f"run {i} ({r.run.label})" for i, r in enumerate(resolved) if not have[i]]
        raise CheckpointError(
            f"only some runs hold a checkpoint (missing: {', '.join(missing)}); a stack resumes "
            "all its runs at the same step: resume them alone or start them afresh"
        )
    checkpoints = [ckpt.read_checkpoint(p) for p in latest]  # type: ignore[arg-type]
    steps = {c.step for c in checkpoints}
    if len(steps) != 1:
        raise CheckpointError(
            f"the runs' checkpoints are at different steps {sorted(steps)}; a stack resumes all "
            "its runs at the same step"
        )
    for r, c, objective in zip(resolved, checkpoints, objectives):
        check_resume(c.state, r.config, c.path, f"run {r.run.label}")
        ckpt.load_weights(objective, c)
    return checkpoints


def _load_restored(
    checkpoints: Sequence[ckpt.Checkpoint],
    vae_opt: torch.optim.Optimizer,
    disc_opt: torch.optim.Optimizer | None,
    data: StackedBatches,
    history: _StackedHistory,
) -> None:
    """Optimizer moments, batch streams and histories of the checkpoints into the stack."""
    for name, optimizer in (("vae", vae_opt), ("discriminator", disc_opt)):
        if optimizer is None:
            continue
        states = []
        for c in checkpoints:
            # a throwaway Adam over CPU copies of the shapes reads training's format back
            shapes = [p[0] for p in optimizer.param_groups[0]["params"]]
            dummy = [torch.zeros_like(p, device="cpu") for p in shapes]
            single = torch.optim.Adam(dummy, **(VAE_ADAM if name == "vae" else DISCRIMINATOR_ADAM))
            try:
                ckpt.optimizer_from_parts(
                    single, c.tensors, c.state["optimizers"][name], f"optimizer/{name}"
                )
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"{c.path}: optimizer state {name!r} is missing or corrupt: {exc}"
                ) from exc
            states.append(single.state_dict())
        stack_adam_states(optimizer, states)
    for stream, c in zip(data.streams, checkpoints):
        stream.load_state(c.state["batch_stream_state"])
    for k, c in enumerate(checkpoints):
        columns = {n: list(map(float, v)) for n, v in c.history().items()}
        if len(columns.get("step", [])) != c.step:
            raise CheckpointError(f"{c.path}: loss history does not match its step")
        history.columns[k] = columns


# --- encoding ----------------------------------------------------------------------------------
@torch.no_grad()
def encode_stacked(
    models: Sequence[Objective | VAE],
    images: np.ndarray | GroundTruth,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Means μ ``[K, N, d]`` of the K models' encoders on all ``images``, in one vmapped pass.

    Encoding a whole grid (737,280 dSprites images) for 30 models one by one reads and converts
    every batch 30 times; stacked, each batch is read once and all K encoders run as grouped
    convolutions. ``precision`` as in ``training.encode`` ("fp32" by default: metrics read μ).
    """
    vaes = [m.vae if isinstance(m, Objective) else m for m in models]
    if not vaes:
        raise InvalidArgumentError("encode_stacked needs K ≥ 1 models")
    for v in vaes:
        if not isinstance(v, VAE):
            raise InvalidArgumentError(
                f"encode_stacked takes Objectives or VAEs, got {type(v).__name__}"
            )
    array = as_image_array(images)
    channels = {v.channels for v in vaes}
    if channels != {array.shape[3]}:
        raise InvalidArgumentError(
            f"the models take {sorted(channels)} channel(s) but the images have {array.shape[3]}"
        )
    latent = {v.latent_dim for v in vaes}
    if len(latent) != 1:
        raise InvalidArgumentError(f"the models have different latent sizes {sorted(latent)}")
    dev = next(vaes[0].parameters()).device if device is None else resolve_device(device)
    plan = resolve_precision(precision, dev)
    if batch_size is None:
        batch_size = 4096 if dev.type == "cuda" else 512
    batch_size = check_int("batch_size", batch_size, 1)
    nets = [copy.deepcopy(v).to(dev).eval() for v in vaes]
    params, buffers = stack_module_state(nets)
    params = {n: p.detach() for n, p in params.items()}
    params_dtype = next(iter(params.values())).dtype
    # The whole VAE is stacked (its forward is the encoder) so that training.network_autocast
    # gives the same precision split as training.encode: autocast trunk, fp32 heads.
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        return functional_call(skeleton, (p, b), (x,))[0]

    forward = vmap(one, in_dims=(0, 0, None))
    source = as_source(array)
    out = torch.empty(len(vaes), len(source), latent.pop(), dtype=torch.float32)
    with network_autocast(skeleton, dev.type, plan.autocast_dtype):
        for start in range(0, len(source), batch_size):
            chunk = source[start : start + batch_size]
            if dev.type == "cuda":
                chunk = chunk.pin_memory()
            x = images_to_input(chunk.to(dev, non_blocking=True), params_dtype)
            mu = forward(params, buffers, x)
            out[:, start : start + len(chunk)] = mu.float().cpu()
    return out.numpy()


__all__: Sequence[str] = (
    "Run",
    "StackedBatches",
    "StackedObjective",
    "check_runs",
    "resolve_strategy",
    "encode_stacked",
    "stack_adam_states",
    "train_stacked",
    "unstack_adam_state",
)
