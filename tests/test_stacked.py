"""Stacked training equals training the runs one by one, and its edges fail clearly.

The equivalence is checked in float64 (``precision="fp64"``): in float32, grouped and plain
convolutions round differently, Adam amplifies that through near-zero gradients, and how much
depends on the CPU's instruction set (AVX2 vs AVX-512), so no float32 bound on the weights after a
few Adam steps is both tight and portable. Float32 is checked where the maths bounds it: the first
step's loss terms, computed from identical weights.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from perturbed_disentanglement.errors import (
    CheckpointError,
    DataFormatError,
    InvalidArgumentError,
    TrainingDivergedError,
)
from perturbed_disentanglement.training import single as training
from perturbed_disentanglement.training.history import LossHistory
from perturbed_disentanglement.training.stacked import (
    Run,
    StackedObjective,
    encode_stacked,
    stack_adam_states,
    train_stacked,
    unstack_adam_state,
)
from perturbed_disentanglement.training.zoo import build_objective

STEPS = 4
BATCH = 8
LATENT = 4
LR = 1e-4

_rng = np.random.default_rng(1234)
SOURCE_A = _rng.integers(0, 256, (24, 64, 64, 1), dtype=np.uint8)
SOURCE_B = _rng.integers(0, 256, (17, 64, 64, 1), dtype=np.uint8)
SOURCE_RGB = _rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)

# Three runs per model: different seeds, hyperparameters and (for run 1) image source.
CASES = {
    "factor_vae": [{"gamma": 35.0}, {"gamma": 10.0}, {"gamma": 100.0}],
    "beta_tcvae": [{"beta": 6.0}, {"beta": 2.0}, {"beta": 10.0}],
    "beta_vae": [{"beta": 8.0}, {"beta": 1.0}, {"beta": 16.0}],
    "dip_vae_i": [{"lambda_od": 10.0}, {"lambda_od": 1.0}, {"lambda_od": 50.0}],
    "dip_vae_ii": [{"lambda_od": 10.0}, {"lambda_od": 2.0, "lambda_d_factor": 3.0}, {}],
    "ae": [{}, {}, {}],
}
FAST = ("factor_vae", "beta_tcvae")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run fastest single-threaded on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_runs(model: str) -> list[Run]:
    sources = [SOURCE_A, SOURCE_B, SOURCE_A]
    return [
        Run(model, images, seed=seed, hparams=hp, latent_dim=LATENT)
        for seed, hp, images in zip((5, 11, 23), CASES[model], sources)
    ]


def train_alone(
    run: Run, steps: int = STEPS, precision: str = "fp64", **kwargs
) -> training.TrainResult:
    return training.train(
        run.model,
        run.images,
        hparams=run.hparams,
        seed=run.seed,
        latent_dim=run.latent_dim,
        steps=steps,
        batch_size=BATCH,
        precision=precision,
        progress=False,
        **kwargs,
    )


@functools.cache
def alone_results(model: str) -> tuple[training.TrainResult, ...]:
    """``make_runs(model)`` trained one by one in float64 (shared by both strategies' tests)."""
    return tuple(train_alone(run) for run in make_runs(model))


def weight_mismatch(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest |Δw| between two models."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def update_mismatch(initial: torch.nn.Module, a: torch.nn.Module, b: torch.nn.Module) -> float:
    """‖(a − w₀) − (b − w₀)‖ / ‖b − w₀‖: how differently two runs moved from the same start."""
    with torch.no_grad():
        da = torch.cat([(p - q).flatten() for p, q in zip(a.parameters(), initial.parameters())])
        db = torch.cat([(p - q).flatten() for p, q in zip(b.parameters(), initial.parameters())])
        return float((da - db).norm() / db.norm())


# Bounds of the float64 comparison. Grouped and plain convolutions sum in different orders; in
# float64 that leaves ≤ 7e-13 relative in the updates after STEPS Adam steps and ≤ 2e-13 in any
# weight (measured for every model and strategy, the same with AVX2 and AVX-512 kernels). Adam
# divides each gradient by its running size, so a rounding-level gradient can take a full step of
# LR, but only where |gradient| exceeds Adam's eps (1e-8), far above float64 rounding (in float32
# it is not, and the same comparison reaches 1e-2 relative, depending on the CPU). A wrong
# hyperparameter gives 0.3 relative (test_tolerance_detects_a_swapped_hyperparameter).
UPDATE_BOUND = 1e-9
WEIGHT_BOUND = 1e-10


def assert_same_training(initial: torch.nn.Module, a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Equal up to float64 rounding: the updates agree to UPDATE_BOUND relative (the test) and no
    weight is off by WEIGHT_BOUND (catches a slice of another model or layer)."""
    relative = update_mismatch(initial, a, b)
    largest = weight_mismatch(a, b)
    assert relative <= UPDATE_BOUND, f"the updates differ by {relative:.2e} relative"
    assert largest <= WEIGHT_BOUND, f"a weight differs by {largest:.2e}"


def assert_same_history(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = 1e-10
) -> None:
    assert sorted(a) == sorted(b)
    np.testing.assert_array_equal(a["step"], np.arange(1, len(b["step"]) + 1))
    for name in b:
        scale = max(1.0, float(np.abs(b[name]).max()))
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize(
    "model", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in CASES]
)
def test_stacked_equals_one_by_one(model: str, strategy: str) -> None:
    runs = make_runs(model)
    stacked = train_stacked(
        runs, steps=STEPS, batch_size=BATCH, precision="fp64", strategy=strategy, progress=False
    )
    assert len(stacked) == len(runs)
    assert {r.extra["strategy"] for r in stacked} == {strategy}
    for run, result, alone in zip(runs, stacked, alone_results(model)):
        assert result.precision == alone.precision == "fp64"
        assert (result.model, result.seed, result.hparams) == (
            alone.model,
            alone.seed,
            alone.hparams,
        )
        assert result.steps == STEPS and result.extra["stack_size"] == 3
        initial = build_objective(model, alone.hparams, 1, LATENT, run.seed)
        assert weight_mismatch(initial, alone.objective) > 2 * LR  # training moved the weights
        assert_same_training(initial, result.objective, alone.objective)
        assert_same_history(result.history, alone.history)


def test_tolerance_detects_a_swapped_hyperparameter() -> None:
    """The comparison above is not vacuous: run 0 with run 1's β fails it by a wide margin."""
    runs = make_runs("beta_tcvae")[:2]
    stacked = train_stacked(
        runs, steps=STEPS, batch_size=BATCH, precision="fp64", strategy="vmap", progress=False
    )
    swapped = train_alone(Run("beta_tcvae", SOURCE_A, 5, runs[1].hparams, latent_dim=LATENT))
    initial = build_objective("beta_tcvae", {"beta": 6.0}, 1, LATENT, 5)
    assert update_mismatch(initial, stacked[0].objective, swapped.objective) > 1e6 * UPDATE_BOUND
    with pytest.raises(AssertionError, match="relative"):
        assert_same_training(initial, stacked[0].objective, swapped.objective)


@pytest.mark.parametrize("model", FAST)
def test_stacked_fp32_first_step_matches_one_by_one(model: str) -> None:
    """In float32 the first step's loss terms come from identical weights and batches: only the
    forward's summation order differs (measured ≤ 2e-7 relative, AVX2 and AVX-512)."""
    runs = make_runs(model)
    kwargs = {"steps": 1, "batch_size": BATCH, "precision": "fp32", "progress": False}
    stacked = train_stacked(runs, strategy="vmap", **kwargs)
    for run, result in zip(runs, stacked):
        alone = train_alone(run, steps=1, precision="fp32")
        assert result.precision == alone.precision == "fp32"
        assert_same_history(result.history, alone.history, rtol=1e-5)


def test_results_are_ordinary_objectives_and_encode_stacked_matches_encode() -> None:
    runs = [Run("beta_vae", SOURCE_RGB, seed=s, hparams={"beta": b}) for s, b in ((0, 1), (1, 4))]
    results = train_stacked(runs, steps=2, batch_size=4, strategy="vmap", progress=False)
    assert [r.latent_dim for r in results] == [6, 6]  # shapes3d's factors, as training.train
    mus = encode_stacked([r.objective for r in results], SOURCE_RGB, batch_size=4)
    assert mus.shape == (2, len(SOURCE_RGB), 6)
    for k, result in enumerate(results):
        assert result.objective.discriminator is None and not result.objective.training
        mu, _ = training.encode(result.objective, SOURCE_RGB)
        np.testing.assert_allclose(mus[k], mu, atol=1e-5)
    assert not np.allclose(mus[0], mus[1])


def test_bf16_autocast_path_runs_and_stays_close_to_fp32() -> None:
    runs = make_runs("beta_vae")[:2]
    kwargs = {"steps": 2, "batch_size": BATCH, "strategy": "vmap", "progress": False}
    exact = train_stacked(runs, precision="fp32", **kwargs)
    low = train_stacked(runs, precision="bf16", **kwargs)  # the GPU's default path, on the CPU
    for a, b in zip(low, exact):
        assert a.precision == "bf16"
        np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=2e-2)
        # two Adam steps move a weight by at most 2.0014·LR (for betas (0.9, 0.999) the second
        # step's m̂/√v̂ peaks at 1.0014), so two runs can differ by 4.003·LR, no more
        # (plus float32 rounding of the weights themselves: a few ulps of the largest one)
        largest = max(float(p.detach().abs().max()) for p in b.objective.parameters())
        rounding = 4 * torch.finfo(torch.float32).eps * largest
        assert weight_mismatch(a.objective, b.objective) <= 2 * 2.0014 * LR + rounding


def test_checkpoints_resume_in_a_stack_and_alone(tmp_path) -> None:
    """In float64, so that the run resumed alone can be compared with one never stacked."""
    runs = [
        Run("factor_vae", SOURCE_A, seed=s, latent_dim=LATENT, checkpoint_dir=tmp_path / f"r{s}")
        for s in (5, 6)
    ]
    train_stacked(
        runs, steps=3, batch_size=BATCH, precision="fp64", checkpoint_every=1, progress=False
    )
    kept = sorted(p.name for p in runs[0].checkpoint_dir.iterdir())
    assert kept == ["step-000000002", "step-000000003"]  # keep_checkpoints=2, as training
    resumed = train_stacked(runs, steps=5, batch_size=BATCH, precision="fp64", progress=False)
    plain = [Run(r.model, r.images, r.seed, latent_dim=LATENT) for r in runs]
    straight = train_stacked(plain, steps=5, batch_size=BATCH, precision="fp64", progress=False)
    for a, b in zip(resumed, straight):
        assert a.start_step == 3 and a.steps == 5
        for p, q in zip(a.objective.parameters(), b.objective.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)  # same ops: bitwise
        for name in b.history:
            np.testing.assert_array_equal(a.history[name], b.history[name])
    # training's own loader and trainer read the stacked runs' checkpoints
    loaded = training.load_model(runs[0].checkpoint_dir)
    for p, q in zip(loaded.parameters(), resumed[0].objective.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    continued = train_alone(runs[1], steps=7, checkpoint_dir=runs[1].checkpoint_dir)
    alone = train_alone(plain[1], steps=7)
    assert continued.start_step == 5
    initial = build_objective("factor_vae", alone.hparams, 1, LATENT, 6)
    assert_same_training(initial, continued.objective, alone.objective)
    with pytest.raises(CheckpointError, match="resume=False"):
        train_stacked(
            runs, steps=6, batch_size=BATCH, precision="fp64", resume=False, progress=False
        )
    other = Run("factor_vae", SOURCE_A, seed=9, latent_dim=LATENT, checkpoint_dir=tmp_path / "new")
    with pytest.raises(CheckpointError, match="only some runs"):
        train_stacked([runs[0], other], steps=6, batch_size=BATCH, precision="fp64", progress=False)


def test_adam_state_unstacks_and_restacks() -> None:
    objectives = [build_objective("beta_vae", {"beta": 1.0}, 1, LATENT, s) for s in (0, 1, 2)]
    stack = StackedObjective(objectives)
    opt = torch.optim.Adam(stack.vae_parameters(), lr=LR)
    terms = stack(
        torch.rand(3, 4, 1, 64, 64),
        torch.randn(3, 4, LATENT),
        torch.stack([torch.stack([torch.randperm(4) for _ in range(LATENT)])] * 3),
        {"beta": torch.tensor([1.0, 2.0, 3.0])},
    )
    terms["loss"].sum().backward()
    opt.step()
    states = [unstack_adam_state(opt, k) for k in range(3)]
    single = torch.optim.Adam(objectives[1].vae_parameters(), lr=LR)
    single.load_state_dict(states[1])  # fits an Adam over one model's own parameters
    again = torch.optim.Adam(stack.vae_parameters(), lr=LR)
    stack_adam_states(again, states)
    for index, slot in opt.state_dict()["state"].items():
        for key, value in slot.items():
            torch.testing.assert_close(again.state_dict()["state"][index][key], value)
    states[2]["state"][0]["step"] = states[2]["state"][0]["step"] + 1
    with pytest.raises(CheckpointError, match="different step counts"):
        stack_adam_states(again, states)


def test_divergence_names_the_run() -> None:
    history = LossHistory(3, labels=["run 0", "run 1", "run 2"])
    history.add(1, {"loss": torch.tensor([1.0, 2.0, 3.0])})
    history.add(2, {"loss": torch.tensor([1.0, float("nan"), 3.0])})
    with pytest.raises(TrainingDivergedError, match=r"step 2 in run 1"):
        history.flush()


@pytest.mark.parametrize(
    ("runs", "error", "match"),
    [
        ([], InvalidArgumentError, "K ≥ 1"),
        (Run("ae", SOURCE_A), InvalidArgumentError, "sequence"),
        ([Run("ae", SOURCE_A), Run("beta_vae", SOURCE_A)], InvalidArgumentError, "share the model"),
        ([Run("ae", SOURCE_A), Run("ae", SOURCE_RGB)], InvalidArgumentError, "channel count"),
        (
            [Run("ae", SOURCE_A, latent_dim=3), Run("ae", SOURCE_A, latent_dim=4)],
            InvalidArgumentError,
            "latent size",
        ),
        ([Run("beta_vae", SOURCE_A, hparams={"gamma": 1.0})], InvalidArgumentError, "gamma"),
        ([Run("nope", SOURCE_A)], InvalidArgumentError, "unknown model"),
        ([Run("ae", SOURCE_A.astype(np.float32))], DataFormatError, "uint8"),
        ([Run("ae", SOURCE_A[:, :32])], DataFormatError, "shape"),
        ([{"model": "ae", "imgs": SOURCE_A}], InvalidArgumentError, "expected keys"),
        ([42], InvalidArgumentError, "Run or a mapping"),
        (
            [
                Run("ae", SOURCE_A, checkpoint_dir="/tmp/x"),
                Run("ae", SOURCE_A, checkpoint_dir="/tmp/x"),
            ],
            InvalidArgumentError,
            "share a checkpoint_dir",
        ),
    ],
)
def test_bad_runs_are_rejected_clearly(runs, error, match) -> None:
    with pytest.raises(error, match=match):
        train_stacked(runs, steps=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1, "batch_size": 1}, "batch_size"),
        ({"steps": 1, "precision": "fp8"}, "precision"),
        ({"steps": 1, "device": "warp-drive"}, "device"),
        ({"steps": 1, "strategy": "scan"}, "strategy"),
    ],
)
def test_bad_settings_are_rejected_clearly(kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        train_stacked([Run("ae", SOURCE_A)], progress=False, **kwargs)


def test_encode_stacked_rejects_mismatches() -> None:
    a = build_objective("ae", {}, 1, 3, 0)
    b = build_objective("ae", {}, 1, 4, 0)
    with pytest.raises(InvalidArgumentError, match="latent sizes"):
        encode_stacked([a, b], SOURCE_A)
    with pytest.raises(InvalidArgumentError, match="channel"):
        encode_stacked([a], SOURCE_RGB)
    with pytest.raises(InvalidArgumentError, match="K ≥ 1"):
        encode_stacked([], SOURCE_A)


@pytest.mark.slow
def test_device_check_smoke_runs_every_section(tmp_path) -> None:
    """benchmarks/device_check.sh --smoke (tiny, CPU) completes and records every section."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", "benchmarks/device_check.sh", "--smoke"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    for section in ("equivalence", "stacking", "precision", "encoding"):
        assert "result" in report[section], report[section]
    assert {row["k"] for row in report["stacking"]["result"]} == {1, 2}


def test_a_shared_ground_truth_is_read_once_and_sets_the_latent_size() -> None:
    from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor

    class Counting(ArrayGroundTruth):
        calls = 0

        def all_images(self) -> np.ndarray:
            Counting.calls += 1
            return super().all_images()

    factors = [Factor("a", np.arange(4)), Factor("b", np.arange(6))]
    grid = Counting("dsprites", factors, SOURCE_A)
    results = train_stacked(
        [Run("beta_vae", grid, seed=s) for s in range(3)], steps=1, batch_size=4, progress=False
    )
    assert Counting.calls == 1  # a procedural grid renders 3 GB per all_images() call
    assert {r.latent_dim for r in results} == {2}  # the grid's number of factors


# --- resume guards and argument checks (review fixes) --------------------------------------------
def test_resume_refuses_other_data_or_precision(tmp_path) -> None:
    run = Run("ae", SOURCE_A, seed=1, latent_dim=LATENT, checkpoint_dir=tmp_path / "r")
    kwargs = dict(batch_size=BATCH, progress=False)
    train_stacked([run], steps=1, precision="fp32", **kwargs)
    other = Run("ae", 255 - SOURCE_A, seed=1, latent_dim=LATENT, checkpoint_dir=tmp_path / "r")
    with pytest.raises(CheckpointError, match="other images"):
        train_stacked([other], steps=2, precision="fp32", **kwargs)
    with pytest.raises(CheckpointError, match="precision="):
        train_stacked([run], steps=2, precision="bf16", **kwargs)
    relabelled = Run(
        "ae",
        SOURCE_A,
        seed=1,
        latent_dim=LATENT,
        dataset="shapes3d",
        checkpoint_dir=run.checkpoint_dir,
    )
    with pytest.raises(CheckpointError, match="dataset="):
        train_stacked([relabelled], steps=2, precision="fp32", **kwargs)
    # training's own trainer applies the same guard to a stacked run's checkpoint
    with pytest.raises(CheckpointError, match="other images"):
        training.train(
            "ae",
            255 - SOURCE_A,
            seed=1,
            latent_dim=LATENT,
            steps=2,
            precision="fp32",
            checkpoint_dir=run.checkpoint_dir,
            batch_size=BATCH,
            progress=False,
        )


@pytest.mark.parametrize("seed", ["x", 2**70, 1.7, -1])
def test_bad_seeds_are_rejected_like_training(seed) -> None:
    with pytest.raises(InvalidArgumentError, match="seed"):
        train_stacked([Run("ae", SOURCE_A, seed=seed)], steps=1, progress=False)


def test_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    runs = [Run("ae", SOURCE_A, seed=0), Run("ae", SOURCE_A, seed=1, checkpoint_dir=blocker)]
    steps: list[int] = []
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        train_stacked(
            runs, steps=2, batch_size=BATCH, progress=False, callback=lambda s, t: steps.append(s)
        )
    assert steps == []
