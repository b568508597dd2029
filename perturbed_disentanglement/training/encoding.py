"""Encoding images with trained models: μ and log σ² of one model, μ of K models in one pass.

Batched, without gradients, in eval mode; the images are uint8 ``[N, 64, 64, C]`` (or a
GroundTruth's grid) converted batch by batch. ``precision`` chooses autocast only ("fp32" by
default: the perturbation's s and the metrics read μ): the arithmetic is otherwise the model's own.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ..errors import DataFormatError, InvalidArgumentError
from ..ground_truth.grid import GroundTruth
from . import checkpoint as ckpt
from .batches import images_to_input
from .inputs import as_image_array, as_source, check_int
from .models import VAE
from .precision import (
    ENCODE_PRECISIONS,
    check_precision,
    network_autocast,
    resolve_device,
    resolve_precision,
)
from .zoo import Objective


def _vae_of(model: Objective | VAE | str | os.PathLike) -> VAE:
    if isinstance(model, (str, os.PathLike)):
        model = ckpt.load_model(model)
    if isinstance(model, Objective):
        return model.vae
    if isinstance(model, VAE):
        return model
    raise InvalidArgumentError(
        f"model must be an Objective, a VAE or a checkpoint directory, got {type(model).__name__}"
    )


def encode(
    model: Objective | VAE | str | os.PathLike,
    images: np.ndarray | GroundTruth,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """μ and log σ² (float32 ``[N, d]``) of q(z|x) for uint8 images ``[N, 64, 64, C]``.

    Batched, without gradients, in eval mode (the model's mode is restored). ``device`` defaults to
    the model's; on a GPU the uint8 batches travel pinned and are converted there. ``precision``:
    "fp32" (default: s and the metrics read μ, so exact by default), "bf16" (autocast trunk, fp32
    heads) or "auto" (bf16 on a GPU, fp32 on the CPU); the arithmetic is otherwise the model's
    own (a model trained in "fp64" encodes in float64). ``num_threads`` sets torch's CPU threads
    for the call (on a machine shared with busy processes one thread can be several times faster
    than two; see benchmarks/bench_training.py).
    """
    vae = _vae_of(model)
    array = as_image_array(images)
    if array.shape[3] != vae.channels:
        raise DataFormatError(
            f"images have {array.shape[3]} channel(s) but the model expects {vae.channels}"
        )
    model_device = next(vae.parameters()).device
    input_dtype = next(vae.parameters()).dtype
    dev = model_device if device is None else resolve_device(device)
    dtype = resolve_precision(check_precision(precision, ENCODE_PRECISIONS), dev).autocast_dtype
    if batch_size is None:
        batch_size = 4096 if dev.type == "cuda" else 256
    batch_size = check_int("batch_size", batch_size)
    n, d = array.shape[0], vae.latent_dim
    mu = np.empty((n, d), np.float32)
    logvar = np.empty((n, d), np.float32)
    source = as_source(array)
    was_training = vae.training
    moved = dev != model_device
    net = vae.to(dev) if moved else vae
    net.eval()
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_int("num_threads", num_threads))
    try:
        with torch.inference_mode(), network_autocast(net, dev.type, dtype):
            for start in tqdm(range(0, n, batch_size), disable=not progress, desc="encode"):
                chunk = source[start : start + batch_size]
                if dev.type == "cuda":
                    chunk = chunk.pin_memory().to(dev, non_blocking=True)
                m, lv = net(images_to_input(chunk, input_dtype))
                mu[start : start + len(chunk)] = m.float().cpu().numpy()
                logvar[start : start + len(chunk)] = lv.float().cpu().numpy()
    finally:
        torch.set_num_threads(previous_threads)
        if moved:
            vae.to(model_device)
        vae.train(was_training)
    return mu, logvar


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
    convolutions. ``precision`` as in :func:`encode` ("fp32" by default: metrics read μ).
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
    plan = resolve_precision(check_precision(precision, ENCODE_PRECISIONS), dev)
    if batch_size is None:
        batch_size = 4096 if dev.type == "cuda" else 512
    batch_size = check_int("batch_size", batch_size, 1)
    nets = [copy.deepcopy(v).to(dev).eval() for v in vaes]
    params, buffers = stack_module_state(nets)
    params = {n: p.detach() for n, p in params.items()}
    params_dtype = next(iter(params.values())).dtype
    # The whole VAE is stacked (its forward is the encoder) so that network_autocast
    # gives the same precision split as encode: autocast trunk, fp32 heads.
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
