"""The dlib networks: shapes, parameter counts, TF-style initialisation; the zoo's checks."""

import math

import pytest
import torch
from torch import nn

from perturbed_disentanglement.errors import InvalidArgumentError
from perturbed_disentanglement.training.models import VAE, Discriminator
from perturbed_disentanglement.training.zoo import (
    MODELS,
    Objective,
    build_objective,
    hyperparameters,
)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_follow_dlib(channels):
    vae = VAE(channels, 6)
    x = torch.rand(2, channels, 64, 64)
    mu, logvar = vae(x)
    assert mu.shape == logvar.shape == (2, 6)
    assert vae.decode(mu).shape == (2, channels, 64, 64)
    shapes = []
    h = x
    for layer in vae.encoder.convs:
        h = layer(h)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(32, 32, 32), (32, 16, 16), (64, 8, 8), (64, 4, 4)]  # TF "same", stride 2


def test_discriminator_is_six_by_thousand():
    d = Discriminator(5)
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [1000] * 6 + [2]
    assert d(torch.zeros(3, 5)).shape == (3, 2)


def test_initialisation_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    vae = VAE(1, 5)
    for layer in vae.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            w = layer.weight
            receptive = w[0, 0].numel()
            bound = math.sqrt(6.0 / ((w.shape[0] + w.shape[1]) * receptive))
            assert w.abs().max() <= bound + 1e-7
            assert w.abs().max() > 0.9 * bound  # uniform on the whole interval, not smaller
            assert torch.count_nonzero(layer.bias) == 0


def test_build_objective_depends_on_the_seed_only():
    torch.manual_seed(123)
    a = build_objective("factor_vae", hyperparameters("factor_vae"), 1, 5, seed=4)
    state_after = torch.random.get_rng_state()
    b = build_objective("factor_vae", hyperparameters("factor_vae"), 1, 5, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state_after)  # global RNG untouched
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    c = build_objective("factor_vae", hyperparameters("factor_vae"), 1, 5, seed=5)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


@pytest.mark.parametrize("bad", ["abc", None, -1.0, float("inf"), float("nan")])
def test_bad_weights_are_clear_errors(bad):
    with pytest.raises(InvalidArgumentError, match="beta"):
        hyperparameters("beta_vae", beta=bad)
    with pytest.raises(InvalidArgumentError, match="beta"):
        Objective("beta_vae", {"beta": bad}, 1, 5)


def test_every_model_has_defaults_for_both_datasets():
    for name, spec in MODELS.items():
        for dataset in ("dsprites", "shapes3d"):
            hp = hyperparameters(name, dataset)
            assert set(hp) == set(spec.hyperparameter_names)
        if spec.grid_parameter is not None:
            assert spec.grid_parameter in spec.hyperparameter_names and len(spec.grid) == 6
