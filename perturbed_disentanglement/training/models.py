"""The disentanglement_lib networks: conv encoder, deconv decoder, FactorVAE discriminator.

Layer by layer as in disentanglement_lib's ``architectures.py`` (``conv_encoder``, ``deconv_decoder``,
``fc_discriminator``). TensorFlow's "same" padding at stride 2 is padding 1 for kernel 4 and 0 for
kernel 2 on 64×64 inputs, so the shapes (and the arithmetic) match exactly. Weights start as TF1's
layers start them (Glorot-uniform kernels, zero biases), not with PyTorch's defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError

IMAGE_SIZE = 64


def init_like_tensorflow(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every dense and (transposed) conv layer.

    These are the defaults of the TF1 layers disentanglement_lib builds on. Glorot's bound
    depends on fan_in + fan_out only, so PyTorch's transposed-conv weight layout gives the same.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class Encoder(nn.Module):
    """conv 32-4-2, 32-4-2, 64-2-2, 64-2-2 (ReLU) → dense 256 (ReLU) → μ and log σ² heads."""

    def __init__(self, in_channels: int, latent_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1),  # 64 → 32
            nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1),  # 32 → 16
            nn.ReLU(),
            nn.Conv2d(32, 64, 2, stride=2),  # 16 → 8
            nn.ReLU(),
            nn.Conv2d(64, 64, 2, stride=2),  # 8 → 4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 256),
            nn.ReLU(),
        )
        self.mu = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """dense 256, dense 1024 (ReLU) → 4×4×64 → deconv 64-4-2, 32-4-2, 32-4-2 (ReLU), C-4-2 → logits."""

    def __init__(self, out_channels: int, latent_dim: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 1024),
            nn.ReLU(),
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),  # 4 → 8
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # 8 → 16
            nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),  # 16 → 32
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),  # 32 → 64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.dense(z).view(-1, 64, 4, 4))


class VAE(nn.Module):
    """Encoder + decoder; every model of the zoo (the AE included) shares this network."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise InvalidArgumentError(f"channels must be 1 or 3, got {channels}")
        if latent_dim < 1:
            raise InvalidArgumentError(f"latent_dim must be ≥ 1, got {latent_dim}")
        self.channels = channels
        self.latent_dim = latent_dim
        self.encoder = Encoder(channels, latent_dim)
        self.decoder = Decoder(channels, latent_dim)
        init_like_tensorflow(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ² of q(z|x) for float images ``[B, C, 64, 64]`` in [0, 1]."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``[B, C, 64, 64]``."""
        return self.decoder(z)


class Discriminator(nn.Module):
    """FactorVAE's discriminator: 6 × dense 1000 (leaky ReLU 0.2) → 2 logits (real, shuffled)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)
        init_like_tensorflow(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
