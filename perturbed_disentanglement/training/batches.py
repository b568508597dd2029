"""The randomness of one training run, drawn from one seeded generator in a fixed order.

Every step draws, in this order: the batch's image indices (uniform with replacement, as
disentanglement_lib samples observations), the reparameterisation noise ε ``[B, d]`` and the FactorVAE
shuffles ``[d, B]`` (drawn for every model so that the stream does not depend on the model). Because
the draws live on the CPU and do not depend on the device or on other models, a run trained alone and
the same run trained inside a stack of K models see identical batches, and a resumed run continues
the stream exactly where the checkpoint left it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import torch

from ..errors import CheckpointError, InvalidArgumentError


@dataclass
class Batch:
    indices: torch.Tensor  # int64 [B], rows of the image source
    noise: torch.Tensor  # float32 [B, d]
    permutations: torch.Tensor  # int64 [d, B]


class BatchStream:
    """Seeded stream of :class:`Batch` draws for one model."""

    def __init__(self, seed: int, num_images: int, batch_size: int, latent_dim: int) -> None:
        if num_images < 1:
            raise InvalidArgumentError(f"the image source is empty (num_images={num_images})")
        if batch_size < 2:
            raise InvalidArgumentError(f"batch_size must be ≥ 2, got {batch_size}")
        self.num_images = num_images
        self.batch_size = batch_size
        self.latent_dim = latent_dim
        self.generator = torch.Generator().manual_seed(int(seed))

    def next(self) -> Batch:
        g, b, d = self.generator, self.batch_size, self.latent_dim
        indices = torch.randint(self.num_images, (b,), generator=g)
        noise = torch.randn(b, d, generator=g)
        permutations = torch.argsort(torch.rand(d, b, generator=g), dim=1)
        return Batch(indices, noise, permutations)

    def state(self) -> str:
        """The generator state as text, for a JSON checkpoint."""
        return base64.b64encode(self.generator.get_state().numpy().tobytes()).decode("ascii")

    def load_state(self, state: str) -> None:
        try:
            raw = base64.b64decode(state.encode("ascii"), validate=True)
            self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt checkpoint
            raise CheckpointError(f"corrupt batch-stream state in checkpoint: {exc}") from exc


def images_to_input(batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images ``[B, H, W, C]`` (0..255) → ``[B, C, H, W]`` in [0, 1] (float32 by default),
    the model input."""
    return batch.permute(0, 3, 1, 2).to(dtype).div_(255.0)
