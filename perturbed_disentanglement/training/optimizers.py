"""dlib's optimizers, built in one place, the optimisation step they take, and Adam state of stacks.

The VAE's Adam minimises ``loss`` on the VAE's parameters and, for FactorVAE, the discriminator's
Adam minimises ``discriminator_loss`` from the same forward pass on the discriminator's parameters
only (:func:`optimisation_step`). One Adam over K stacked models (parameters ``[K, ...]``) is K
separate Adams: Adam is elementwise and the K models step together (one shared step count, hence
identical bias corrections); :func:`unstack_adam_state` and :func:`stack_adam_states` convert
between the two forms.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import CheckpointError

# Adam settings of disentanglement_lib (SPEC §5); the discriminator's are FactorVAE's.
VAE_ADAM = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}
DISCRIMINATOR_ADAM = {"lr": 1e-4, "betas": (0.5, 0.9), "eps": 1e-8}


class Trainable(Protocol):
    """An objective, or K of them stacked: which parameters each loss trains."""

    def vae_parameters(self) -> list[torch.Tensor]: ...

    def discriminator_parameters(self) -> list[torch.Tensor]: ...


@dataclass
class Optimizers:
    """The VAE's Adam and, for FactorVAE, the discriminator's Adam."""

    vae: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer | None = None

    def as_dict(self) -> dict[str, torch.optim.Optimizer]:
        named = {"vae": self.vae}
        if self.discriminator is not None:
            named["discriminator"] = self.discriminator
        return named


def make_optimizers(model: Trainable, *, fused: bool | None = None) -> Optimizers:
    """dlib's optimizers: Adam(1e-4, (0.9, 0.999), 1e-8) on the VAE, Adam(1e-4, (0.5, 0.9)) on D.

    ``fused=True`` is the same elementwise update in one kernel (a GPU option; the CPU keeps the
    reference loop)."""
    vae = torch.optim.Adam(model.vae_parameters(), **VAE_ADAM, fused=fused)
    disc_params = model.discriminator_parameters()
    disc = torch.optim.Adam(disc_params, **DISCRIMINATOR_ADAM, fused=fused) if disc_params else None
    return Optimizers(vae, disc)


def optimisation_step(
    terms: Mapping[str, torch.Tensor], optimizers: Optimizers, model: Trainable
) -> None:
    """Backpropagate ``loss`` into the VAE parameters only and ``discriminator_loss`` (FactorVAE)
    into the discriminator's only (``backward(inputs=…)``), then step both optimizers once.

    Losses of K stacked models (``[K]``) are summed: the models share no parameter, so each one's
    gradient is exactly its own.
    """

    def total(loss: torch.Tensor) -> torch.Tensor:
        return loss.sum() if loss.ndim else loss

    vae, disc = optimizers.vae, optimizers.discriminator
    vae.zero_grad(set_to_none=True)
    if disc is not None:
        disc.zero_grad(set_to_none=True)
    # FactorVAE's two losses share the discriminator pass: keep the graph for the second backward
    total(terms["loss"]).backward(inputs=model.vae_parameters(), retain_graph=disc is not None)
    if disc is not None:
        total(terms["discriminator_loss"]).backward(inputs=model.discriminator_parameters())
    vae.step()
    if disc is not None:
        disc.step()


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
