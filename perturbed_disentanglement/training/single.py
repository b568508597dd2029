"""Training one model of the zoo, with checkpoints and resumption (and the package's training API).

:func:`train` resolves what the run is (:class:`~.run_identity.RunIdentity`), how it computes
(:mod:`.precision`) and on how many CPU threads, resumes it from its newest checkpoint if there is
one (:mod:`.resume`) and hands one model to the shared loop (:func:`~.loop.train_loop`), which
:func:`~.stacked.train_stacked` drives with K models. A step (:func:`training_step`) is dlib's:
the VAE's Adam minimises ``loss`` and, for FactorVAE, the discriminator's Adam minimises
``discriminator_loss`` from the same forward pass (:func:`~.optimizers.optimisation_step`). All
the randomness of a run comes from one :class:`~.batches.BatchStream` and the initial weights from
:func:`~.zoo.build_objective`, so a run is fixed by its identity (and thread count) and a resumed
run equals an uninterrupted one bitwise (CPU).

Threads: CPU results differ in the last bits between thread counts, so a seed fixes the result for
a given thread count: torch's current count, or ``num_threads``. ``probe=True`` instead times 1
thread against torch's count on a throwaway copy and keeps the faster (:func:`probe_threads`): the
probe trades that reproducibility for speed on a shared machine. A resumed run reuses the thread
count its checkpoint stored (unless ``num_threads`` is given), so it continues bitwise.

:func:`encode` and :func:`load_model` (re-exported here) read trained models back.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from .batches import Batch, BatchStream, images_to_input
from .checkpoint import load_model, prepare_checkpoint_dir
from .encoding import encode
from .inputs import as_image_array, as_source, check_int
from .loop import LoopRun, TrainResult, train_loop
from .optimizers import Optimizers, make_optimizers, optimisation_step
from .precision import (
    AUTO_PRECISION,
    PrecisionPlan,
    network_autocast,
    resolve_device,
    resolve_precision,
)
from .resume import checkpoints_to_resume, restore_run
from .run_identity import BatchTransform, RunIdentity, apply_transform, data_fingerprint
from .zoo import Objective, build_objective, model_spec


def training_step(
    objective: Objective,
    optimizers: Optimizers,
    x: torch.Tensor,
    batch: Batch,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One optimisation step on the float batch ``x``; returns the detached loss terms."""
    noise = batch.noise.to(x.device, x.dtype, non_blocking=True)
    permutations = batch.permutations.to(x.device, non_blocking=True)
    with network_autocast(objective, x.device.type, autocast_dtype):
        terms = objective(x, noise, permutations)
    optimisation_step(terms, optimizers, objective)
    return {k: v.detach() for k, v in terms.items()}


def _input(
    source: torch.Tensor,
    batch: Batch,
    device: torch.device,
    plan: PrecisionPlan,
    transform: BatchTransform | None = None,
):
    """The model input of ``batch``: its images gathered (and ``transform``ed), moved and
    converted as ``plan`` says."""
    gathered = source.index_select(0, batch.indices)
    if transform is not None:
        images = apply_transform(transform, gathered.numpy(), batch.indices.numpy())
        gathered = torch.from_numpy(images)
    x = images_to_input(gathered.to(device, non_blocking=True), plan.dtype)
    return x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x


class _OneModel:
    """One objective as the loop drives it (a :class:`~.loop.Trainer` of K = 1)."""

    def __init__(
        self,
        objective: Objective,
        optimizers: Optimizers,
        stream: BatchStream,
        source: torch.Tensor,
        plan: PrecisionPlan,
        device: torch.device,
        transform: BatchTransform | None = None,
    ) -> None:
        self.objective, self.optimizers, self.stream = objective, optimizers, stream
        self.source, self.plan, self.device = source, plan, device
        self.transform = transform

    def next_batch(self) -> tuple[torch.Tensor, Batch]:
        batch = self.stream.next()
        return _input(self.source, batch, self.device, self.plan, self.transform), batch

    def step(self, inputs: tuple[torch.Tensor, Batch]) -> dict[str, torch.Tensor]:
        x, batch = inputs
        return training_step(
            self.objective, self.optimizers, x, batch, autocast_dtype=self.plan.autocast_dtype
        )

    def run_state(self, k: int) -> tuple[Objective, dict[str, torch.optim.Optimizer], BatchStream]:
        return self.objective, self.optimizers.as_dict(), self.stream

    def finish(self) -> list[Objective]:
        if self.plan.channels_last:
            self.objective = self.objective.to(memory_format=torch.contiguous_format)
        return [self.objective.eval()]


def probe_threads(
    objective: Objective,
    source: torch.Tensor,
    plan: PrecisionPlan,
    batch_size: int,
    *,
    rounds: int = 3,
    transform: BatchTransform | None = None,
) -> tuple[int, dict[int, float]]:
    """The fastest CPU thread count among {1, torch's current count}, timed on a throwaway copy.

    On a machine shared with other busy processes, OpenMP's threads wait on each other and two
    threads can be several times slower than one (measured on our 2-core box, see
    benchmarks/bench_training.py); on an idle machine all threads win. The probe trains a deep copy
    of the objective on its own batch stream, so the run itself is untouched. Returns the chosen
    count and the median seconds per step of each candidate.
    """
    current = torch.get_num_threads()
    candidates = sorted({1, current})
    if len(candidates) == 1:
        return current, {}
    probe = copy.deepcopy(objective)
    optimizers = make_optimizers(probe)
    stream = BatchStream(0, source.shape[0], batch_size, probe.vae.latent_dim)
    device = next(probe.parameters()).device
    times: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for r in range(rounds + 1):  # round 0 warms each candidate up
            for n in candidates:
                torch.set_num_threads(n)
                batch = stream.next()
                t = time.perf_counter()
                x = _input(source, batch, device, plan, transform)
                training_step(probe, optimizers, x, batch, autocast_dtype=plan.autocast_dtype)
                if r:
                    times[n].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(current)
    medians = {n: float(np.median(v)) for n, v in times.items()}
    return min(medians, key=medians.__getitem__), medians


def identity_of(
    model: str,
    images: np.ndarray | GroundTruth,
    *,
    dataset: str | None = None,
    hparams: Mapping[str, float] | None = None,
    latent_dim: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    transform: BatchTransform | None = None,
    array: np.ndarray | None = None,
) -> RunIdentity:
    """The identity :func:`train` gives a run of these arguments: what its checkpoints record,
    so that a checkpoint found elsewhere can be shown to be this run's
    (:func:`~.resume.find_checkpoint`). ``array``: ``images`` as uint8, if already at hand."""
    return RunIdentity.resolve(
        model_spec(model).name,
        images,
        as_image_array(images) if array is None else array,
        dataset=dataset,
        hparams=hparams,
        latent_dim=latent_dim,
        seed=seed,
        batch_size=batch_size,
        precision=resolve_precision(precision, resolve_device(device)).name,
        transform=transform,
    )


def train(
    model: str,
    images: np.ndarray | GroundTruth,
    *,
    dataset: str | None = None,
    hparams: Mapping[str, float] | None = None,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    latent_dim: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 5000,
    keep_checkpoints: int = 2,
    resume: bool | None = None,
    precision: str = "auto",
    num_threads: int | None = None,
    probe: bool | None = None,
    progress: bool = True,
    sync_every: int | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    transform: BatchTransform | None = None,
) -> TrainResult:
    """Train one zoo model on uint8 images ``[N, 64, 64, C]`` (or a GroundTruth's grid).

    ``dataset`` selects the default hyperparameters (inferred from a GroundTruth's name, else from
    the channels: 1 → dsprites, 3 → shapes3d); ``hparams`` overrides them (validated by the zoo).
    ``latent_dim`` defaults to the number of factors (a GroundTruth's, else the dataset's).
    ``precision``: "auto", "fp32", "bf16" or "fp64" (see :mod:`.precision`).
    With ``checkpoint_dir`` a checkpoint is written every ``checkpoint_every`` steps and at the
    end, and an existing one is resumed (``resume=None``: if present; ``True``: required;
    ``False``: refuse a directory that already holds one, which must be the same run: same
    settings, precision and images, see :class:`~.run_identity.RunIdentity`); the directory is
    created at once. ``num_threads`` sets torch's CPU threads for the run (None: torch's current
    count, or on resume the count the checkpoint stored), so a seed fixes the result for that
    thread count. ``probe=True`` (CPU, fresh runs) instead times 1 thread against torch's count on
    a throwaway copy and keeps the faster: it trades that reproducibility for speed on a shared
    machine; ``probe=None``/``False`` never probes. The count is stored in checkpoints. ``seed`` is
    an integer in [0, 2**63 - 1]; ``keep_checkpoints`` ≥ 1. ``callback(step, terms)`` is called
    after every host sync (every ``sync_every`` steps: 1 on the CPU, 50 on a GPU).
    ``transform(images, indices)`` is applied to each gathered batch (uint8 in, uint8 out, e.g.
    a perturbation computed on the fly: a perturbed grid then needs no copy in memory); a run with
    it is the same run, bitwise, as one on the transformed images held in memory (the identity's
    fingerprint is taken on transformed rows). Raises :class:`TrainingDivergedError` on a NaN/inf
    loss.
    """
    spec = model_spec(model)
    steps = check_int("steps", steps, minimum=0)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every)
    keep_checkpoints = check_int("keep_checkpoints", keep_checkpoints)
    if num_threads is not None:
        num_threads = check_int("num_threads", num_threads)
    array = as_image_array(images)
    dev = resolve_device(device)
    plan = resolve_precision(precision, dev)
    identity = identity_of(
        spec.name,
        images,
        dataset=dataset,
        hparams=hparams,
        latent_dim=latent_dim,
        seed=seed,
        batch_size=batch_size,
        device=dev,
        precision=precision,
        transform=transform,
        array=array,
    )
    if sync_every is None:
        sync_every = 1 if dev.type == "cpu" else 50
    sync_every = check_int("sync_every", sync_every)
    if checkpoint_dir is not None:
        checkpoint_dir = prepare_checkpoint_dir(checkpoint_dir)
    elif resume:
        raise InvalidArgumentError("resume=True needs a checkpoint_dir")
    resumed = checkpoints_to_resume([identity], [checkpoint_dir], resume, ["this run"])

    objective = build_objective(
        identity.model, identity.hparams, identity.channels, identity.latent_dim, identity.seed
    ).to(dev, plan.dtype)
    if plan.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    optimizers = make_optimizers(objective)
    stream = BatchStream(
        identity.seed, identity.num_images, identity.batch_size, identity.latent_dim
    )
    if resumed:
        restore_run(resumed[0], objective, optimizers, stream)
    source = as_source(array)
    objective.train()

    previous_threads = torch.get_num_threads()
    thread_times: dict[int, float] = {}
    probe_seconds = 0.0
    stored = resumed[0].state.get("num_threads") if resumed else None
    if num_threads is not None:
        threads = num_threads
    elif isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1:
        threads = stored  # the resumed run keeps its thread count: bitwise continuation
    elif probe and dev.type == "cpu":
        t_probe = time.perf_counter()
        threads, thread_times = probe_threads(
            objective, source, plan, identity.batch_size, transform=transform
        )
        probe_seconds = time.perf_counter() - t_probe
    else:
        threads = previous_threads
    torch.set_num_threads(threads)  # for this run only
    try:
        (result,) = train_loop(
            _OneModel(objective, optimizers, stream, source, plan, dev, transform),
            [LoopRun(identity, checkpoint_dir, {"num_threads": threads})],
            resumed,
            steps=steps,
            device=dev,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            sync_every=sync_every,
            progress=progress,
            description=spec.name,
            callback=None if callback is None else lambda step, last: callback(step, last[0]),
            num_threads=threads,
        )
    finally:
        torch.set_num_threads(previous_threads)
    result.extra = {"thread_probe_seconds_per_step": thread_times, "probe_seconds": probe_seconds}
    return result


__all__: Sequence[str] = (
    "AUTO_PRECISION",
    "Optimizers",
    "PrecisionPlan",
    "TrainResult",
    "as_image_array",
    "data_fingerprint",
    "encode",
    "identity_of",
    "load_model",
    "make_optimizers",
    "network_autocast",
    "probe_threads",
    "resolve_device",
    "resolve_precision",
    "train",
    "training_step",
)
