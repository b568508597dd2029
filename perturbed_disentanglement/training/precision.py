"""Where and how precisely a run computes: the device, the precision plan, autocast of the networks.

``"fp32"`` is the exact reference. ``"fp64"`` keeps parameters, inputs and optimizer state in float64
(slow; for checks that must not depend on float32 rounding, e.g. that a stacked run equals its runs
trained one by one on any CPU). ``"bf16"`` runs the networks' trunks (not the loss terms) under
bfloat16 autocast. ``"auto"`` picks per device what measured fastest while staying close to fp32
(:data:`AUTO_PRECISION`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .models import VAE
from .zoo import Objective

PRECISIONS = ("auto", "fp32", "bf16", "fp64")
# Encoding reads μ in the model's own dtype; its precision only chooses autocast.
ENCODE_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class PrecisionPlan:
    """How a run computes: autocast dtype for the networks (None = none), memory format, and the
    dtype of parameters, inputs and optimizer state."""

    name: str
    autocast_dtype: torch.dtype | None
    channels_last: bool
    dtype: torch.dtype = torch.float32


# What ``precision="auto"`` means per device type. On our CPU (Xeon, avx512_bf16 but no AMX)
# bf16 autocast, channels-last and torch.compile measured no faster than plain fp32 (see
# benchmarks/bench_training.py and the README), so the CPU keeps exact fp32 arithmetic and gains
# its speed from the thread probe (training.probe_threads); GPUs use bf16 autocast.
AUTO_PRECISION = {
    "cpu": PrecisionPlan("fp32", None, False),
    "cuda": PrecisionPlan("bf16+channels_last", torch.bfloat16, True),
}


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    if precision not in allowed:
        raise InvalidArgumentError(
            f"precision must be one of {', '.join(allowed)}, got {precision!r}"
        )
    return precision


def resolve_precision(precision: str, device: torch.device) -> PrecisionPlan:
    """The :class:`PrecisionPlan` for ``precision`` ("auto", "fp32", "bf16", "fp64") on
    ``device``."""
    check_precision(precision)
    if precision == "fp32":
        return PrecisionPlan("fp32", None, False)
    if precision == "fp64":
        return PrecisionPlan("fp64", None, False, torch.float64)
    if precision == "bf16":
        return PrecisionPlan("bf16", torch.bfloat16, device.type == "cuda")
    return AUTO_PRECISION.get(device.type, PrecisionPlan("fp32", None, False))


def arithmetic(precision: Any) -> Any:
    """The numerics of a precision name: the memory layout does not make another run."""
    return precision.removesuffix("+channels_last") if isinstance(precision, str) else precision


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or a clear error if it is unknown or absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} requested but CUDA is not available")
    return dev


@contextlib.contextmanager
def network_autocast(
    objective: Objective | VAE, device_type: str, dtype: torch.dtype | None
) -> Iterator[None]:
    """Run the networks' trunks under autocast with fp32 outputs; the loss terms stay fp32.

    Autocasting the whole objective would also compute the Bernoulli cross-entropy, the KL and the
    DIP covariance (a matmul) in low precision. Instead the encoder's conv+dense trunk, the
    decoder and the discriminator run under autocast and hand fp32 tensors to the μ/log σ² heads
    and to the loss code. The forwards are patched on the instances for the duration only.
    """
    if dtype is None:
        yield
        return
    vae = objective.vae if isinstance(objective, Objective) else objective
    modules: list[nn.Module] = [vae.encoder.convs, vae.decoder]
    if isinstance(objective, Objective) and objective.discriminator is not None:
        modules.append(objective.discriminator)
    saved = []
    for module in modules:
        saved.append((module, module.__dict__.get("forward")))
        original = module.forward

        def forward(*args: Any, _original: Callable = original, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device_type, dtype=dtype):
                out = _original(*args, **kwargs)
            return out.float()

        module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                del module.forward
            else:
                module.forward = previous  # type: ignore[method-assign]
