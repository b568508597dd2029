"""The Fig. 1 toy: its data, its measure, determinism, the paper's claim and the command line."""

from __future__ import annotations

import math

import pytest
import torch

import perturbed_disentanglement.benchmark.toy as toy
from perturbed_disentanglement.errors import InvalidArgumentError

CLAIM_STEPS = toy.STEPS  # the command line's default: 2,000 steps, about 10 s of one CPU core


def test_triangle_wave_has_slope_one_and_height_one() -> None:
    u = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0], dtype=toy.DTYPE)
    expected = torch.tensor([0.0, -1.0, -0.5, 0.0, 0.5, 1.0, 0.0, -1.0, 0.0], dtype=toy.DTYPE)
    torch.testing.assert_close(toy.triangle_wave(u), expected)


def test_data_is_a_thin_axis_aligned_band_moved_by_at_most_epsilon() -> None:
    data = toy.toy_data(num_points=4000, epsilon=0.1, seed=3)
    assert data.points.shape == data.factors.shape == (4000, 2)
    assert data.points.dtype == data.factors.dtype == torch.float64
    w1, w2 = data.factors.T
    assert w1.min() >= -1 and w1.max() <= 1
    assert abs(float(w2.std()) - toy.THICKNESS) < 0.1 * toy.THICKNESS
    # the factors are intact: x is w1 exactly, and y - ε·tri(x/ε) gives w2 back
    assert torch.equal(data.points[:, 0], w1)
    moved = (data.points - data.factors).norm(dim=1)
    assert float(moved.max()) <= 0.1 + 1e-12
    # globally still axis-aligned: PCA's first axis within a degree of x
    pca = toy.principal_axis(data.points)
    assert float(toy.line_angle(pca, torch.tensor(toy.GLOBAL_AXIS, dtype=toy.DTYPE))) < 1.0
    # locally along ±45°: neighbours along x differ along the local direction
    order = data.points[:, 0].argsort()
    clean_points = data.points - torch.stack([torch.zeros(4000), w2], 1).to(toy.DTYPE)
    steps = clean_points[order][1:] - clean_points[order][:-1]
    direction = toy.local_direction(data.points[order][:-1], 0.1)
    angles = toy.line_angle(steps, direction)
    assert float(angles.median()) < 1e-3


def test_data_is_seeded() -> None:
    a, b, c = toy.toy_data(seed=5), toy.toy_data(seed=5), toy.toy_data(seed=6)
    assert torch.equal(a.points, b.points) and torch.equal(a.factors, b.factors)
    assert not torch.equal(a.points, c.points)


def test_line_angle_ignores_sign_and_length() -> None:
    x = torch.tensor([1.0, 0.0], dtype=toy.DTYPE)
    assert float(toy.line_angle(torch.tensor([-3.0, 3.0], dtype=toy.DTYPE), x)) == pytest.approx(45)
    assert float(toy.line_angle(torch.tensor([0.0, -2.0], dtype=toy.DTYPE), x)) == pytest.approx(90)
    assert float(toy.line_angle(torch.tensor([-5.0, 0.0], dtype=toy.DTYPE), x)) == pytest.approx(0)


def test_alignment_of_hand_made_decoders() -> None:
    """A decoder that moves along x is 0° from the global axis and 45° from the local one."""
    data = toy.toy_data(num_points=500, seed=1)
    model = toy.make_vae("linear")
    with torch.no_grad():
        model.decoder.weight.copy_(torch.tensor([[2.0], [0.0]]))
    al = toy.alignment(model, data)
    assert al.latent == 0
    assert al.to_global == pytest.approx(0, abs=1e-9)
    assert al.to_local == pytest.approx(45, abs=1e-9)
    with torch.no_grad():
        model.decoder.weight.copy_(torch.tensor([[1.0], [1.0]]))
    al = toy.alignment(model, data)
    assert al.to_global == pytest.approx(45, abs=1e-9)
    assert 0 < al.to_local < 90  # 0° on the rising legs, 90° on the falling ones
    rising = toy.local_direction(data.points, data.epsilon)[:, 1] > 0
    # acos near 1 is ill-conditioned: one ulp below 1 is 1.2e-6° (a bound, not a recorded float)
    assert al.to_local == pytest.approx(90 * float((~rising).double().mean()), abs=1e-5)


def test_two_latents_pick_the_one_with_least_noise() -> None:
    data = toy.toy_data(num_points=200, seed=1)
    model = toy.make_vae("mlp", latents=2, hidden=8)
    with torch.no_grad():
        model.encoder[-1].bias[2:] = torch.tensor([0.0, -3.0])
        model.encoder[-1].weight[2:] = 0
    assert toy.alignment(model, data).latent == 1
    assert toy.decoded_directions(model, data.points).shape == (200, 2, 2)


@pytest.mark.parametrize("kind", toy.KINDS)
def test_training_is_deterministic(kind: str) -> None:
    data = toy.toy_data(num_points=300, seed=2)
    threads = torch.get_num_threads()
    first, loss1 = toy.train_vae(kind, data.points, steps=25, seed=4, batch=64)
    second, loss2 = toy.train_vae(kind, data.points, steps=25, seed=4, batch=64)
    other, _ = toy.train_vae(kind, data.points, steps=25, seed=5, batch=64)
    assert torch.get_num_threads() == threads  # restored after training
    assert loss1 == loss2 and math.isfinite(loss1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(
        not torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), other.state_dict().values())
    )


@pytest.fixture(scope="module")
def trained() -> tuple[toy.ToyData, dict[str, toy.Alignment]]:
    data = toy.toy_data(seed=0)
    alignments = {}
    for kind in toy.KINDS:
        model, _ = toy.train_vae(kind, data.points, steps=CLAIM_STEPS, seed=0)
        alignments[kind] = toy.alignment(model, data)
    return data, alignments


def test_linear_vae_keeps_the_global_axis(trained) -> None:
    """Fig. 1b, left: the linear VAE encodes like PCA, along x, blind to the ±45° detail."""
    _, al = trained
    assert al["linear"].to_global < 5  # measured 0.8-1.1° over seeds 0-3
    assert al["linear"].to_local > 40
    assert float(al["linear"].per_point.max()) < 5  # a linear decoder: one direction everywhere


def test_nonlinear_vae_follows_the_local_perturbation(trained) -> None:
    """Fig. 1b, right: the MLP VAE's latent is rotated towards the local ±45° structure."""
    _, al = trained
    assert al["mlp"].to_global > 30  # measured 38.3-40.8° over seeds 0-3
    assert al["mlp"].to_local < 15  # measured 5.2-9.0°
    assert al["mlp"].to_global > al["linear"].to_global + 25


def test_cli_writes_a_png_and_prints_the_angles(tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "fig1.png"
    assert toy.main(["--out", str(out), "--steps", "5", "--seed", "1", "--epsilon", "0.2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["fig1.png"]  # no temporary left behind
    printed = capsys.readouterr().out
    assert "linear VAE: to the global axis" in printed and "mlp VAE" in printed
    assert "PCA: first axis" in printed and str(out) in printed


def test_cli_help_explains_itself(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        toy.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--out", "--seed", "--steps", "--epsilon", "linear", "PCA"):
        assert word in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps must be an integer >= 1"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
        (["--epsilon", "0"], "epsilon must be a finite number > 0"),
        (["--epsilon", "nan"], "epsilon must be a finite number > 0"),
        (["--epsilon", "0.7"], "epsilon must be <= 0.5"),
    ],
)
def test_cli_bad_arguments_are_clear_errors(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "never.png"
    assert toy.main(["--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: toy.toy_data(num_points=1), "num_points must be an integer >= 2"),
        (lambda: toy.toy_data(num_points=True), "num_points must be an integer >= 2"),
        (lambda: toy.toy_data(thickness=-0.1), "thickness must be a finite number >= 0"),
        (lambda: toy.make_vae("conv"), "kind must be one of"),
        (lambda: toy.make_vae("mlp", latents=0), "latents must be an integer >= 1"),
        (lambda: toy.train_vae("mlp", torch.zeros(5, 3), steps=1), "points must be [n, 2]"),
        (lambda: toy.train_vae("mlp", torch.zeros(5, 2), steps=1.5), "steps must be an integer"),
        (lambda: toy.train_vae("mlp", torch.zeros(5, 2), learning_rate=0), "learning_rate must"),
    ],
)
def test_bad_arguments_raise_invalid_argument_error(call, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[")):
        call()
