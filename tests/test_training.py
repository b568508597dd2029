"""Training loop, checkpoints, resumption, divergence, input validation and encoding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from perturbed_disentanglement.errors import (
    CheckpointError,
    DataFormatError,
    InvalidArgumentError,
    TrainingDivergedError,
)
from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor
from perturbed_disentanglement.training import checkpoint as ckpt
from perturbed_disentanglement.training import single as training
from perturbed_disentanglement.training.batches import BatchStream, images_to_input
from perturbed_disentanglement.training.single import encode, load_model, train
from perturbed_disentanglement.training.zoo import MODELS, build_objective, hyperparameters

FAST = {"batch_size": 8, "progress": False, "num_threads": 1}


def _squares(n: int = 48, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Binary images of one 12-px square at random positions (uint8 0/255)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 64, 64, channels), np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, 52, size=(n, 2))):
        out[i, r : r + 12, c : c + 12] = 255
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _squares()


@pytest.fixture
def one_thread():
    """Tests that call the model directly use one thread (the CI box is shared and small)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- learning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_short_run_lowers_the_loss(images: np.ndarray, model: str) -> None:
    result = train(model, images, steps=60, **FAST)
    loss = result.history["loss"]
    assert len(loss) == 60 and np.isfinite(loss).all()
    assert result.history["step"].tolist() == list(range(1, 61))
    # ≥ 5 % lower (with dlib's Glorot-uniform init every model is 11-16 % lower by step 60,
    # while the first 40 steps of the plain AE move its loss by only ~1 %)
    assert loss[-5:].mean() < 0.95 * loss[:5].mean(), loss
    assert result.images_per_second > 0 and 0 <= result.data_fraction < 1
    assert result.latent_dim == 5  # dSprites' number of factors for a bare 1-channel array
    if model == "factor_vae":
        assert np.isfinite(result.history["discriminator_loss"]).all()


def test_same_seed_same_weights_other_seed_differs(images: np.ndarray) -> None:
    a = train("beta_tcvae", images, steps=4, seed=1, precision="fp32", **FAST)
    b = train("beta_tcvae", images, steps=4, seed=1, precision="fp32", **FAST)
    c = train("beta_tcvae", images, steps=4, seed=2, precision="fp32", **FAST)
    assert _same_weights(a.objective, b.objective)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    assert not _same_weights(a.objective, c.objective)


def test_training_step_keeps_the_two_gradients_apart(one_thread) -> None:
    """VAE params get ∂loss only, discriminator params ∂discriminator_loss only."""
    objective = build_objective("factor_vae", hyperparameters("factor_vae"), 1, 3, seed=0)
    reference = copy.deepcopy(objective)
    stream = BatchStream(0, 16, 6, 3)
    batch = stream.next()
    x = images_to_input(torch.from_numpy(_squares(16)).index_select(0, batch.indices))
    optimizers = training.make_optimizers(objective)
    for opt in optimizers.as_dict().values():  # no update, so grads can be compared afterwards
        for group in opt.param_groups:
            group["lr"] = 0.0
    training.training_step(objective, optimizers, x, batch)
    terms = reference(x, batch.noise, batch.permutations)
    vae_grads = torch.autograd.grad(terms["loss"], reference.vae_parameters(), retain_graph=True)
    disc_grads = torch.autograd.grad(
        terms["discriminator_loss"], reference.discriminator_parameters()
    )
    for p, g in zip(objective.vae_parameters(), vae_grads):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(objective.discriminator_parameters(), disc_grads):
        torch.testing.assert_close(p.grad, g)
    assert optimizers.discriminator.defaults["betas"] == (0.5, 0.9)
    assert optimizers.vae.defaults["betas"] == (0.9, 0.999)


def test_bf16_stays_close_to_fp32(images: np.ndarray) -> None:
    exact = train("beta_vae", images, steps=12, precision="fp32", **FAST)
    mixed = train("beta_vae", images, steps=12, precision="bf16", **FAST)
    assert mixed.precision == "bf16"
    np.testing.assert_allclose(mixed.history["loss"], exact.history["loss"], rtol=5e-3)


# --- checkpoints --------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


def _stop_at(step: int):
    def callback(s: int, terms: dict[str, float]) -> None:
        if s == step:
            raise _Interrupt

    return callback


def test_resume_equals_uninterrupted_bitwise(images: np.ndarray, tmp_path: Path) -> None:
    kwargs = dict(steps=9, seed=3, precision="fp32", checkpoint_every=3, **FAST)
    full = train("factor_vae", images, checkpoint_dir=tmp_path / "full", **kwargs)
    with pytest.raises(_Interrupt):  # a crash after step 5: the last checkpoint is step 3
        train("factor_vae", images, checkpoint_dir=tmp_path / "cut", callback=_stop_at(5), **kwargs)
    assert ckpt.latest_checkpoint(tmp_path / "cut").name == "step-000000003"
    resumed = train("factor_vae", images, checkpoint_dir=tmp_path / "cut", **kwargs)
    assert resumed.start_step == 3
    assert _same_weights(full.objective, resumed.objective)
    for key in full.history:
        np.testing.assert_array_equal(full.history[key], resumed.history[key])
    # the optimizer moments saved at the end agree too
    a = ckpt.read_checkpoint(tmp_path / "full").tensors
    b = ckpt.read_checkpoint(tmp_path / "cut").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and load_model gives back the trained weights
    assert _same_weights(load_model(tmp_path / "cut"), full.objective)


def test_checkpoint_contents_and_pruning(images: np.ndarray, tmp_path: Path) -> None:
    train("beta_vae", images, steps=6, checkpoint_dir=tmp_path, checkpoint_every=2, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000004", "step-000000006"]
    state = json.loads((tmp_path / "step-000000006" / ckpt.STATE_FILE).read_text())
    assert state["step"] == 6 and state["model"] == "beta_vae" and state["latent_dim"] == 5
    assert state["hparams"] == {"beta": 8.0} and state["channels"] == 1
    assert state["package_version"] and state["batch_stream_state"]
    assert state["optimizers"]["vae"]["param_groups"][0]["lr"] == 1e-4


def test_half_written_checkpoint_is_ignored(images: np.ndarray, tmp_path: Path) -> None:
    train("ae", images, steps=2, checkpoint_dir=tmp_path, **FAST)
    stale = tmp_path / ".tmp-step-000000009-crashed"
    stale.mkdir()
    (stale / ckpt.WEIGHTS_FILE).write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000000002"
    result = train("ae", images, steps=4, checkpoint_dir=tmp_path, **FAST)
    assert result.start_step == 2 and not stale.exists()


def test_nan_loss_raises_and_keeps_last_good_checkpoint(
    images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = training.training_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            terms["kl"] = torch.tensor(float("nan"))
            terms["loss"] = torch.tensor(float("inf"))
        return terms

    monkeypatch.setattr(training, "training_step", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"step 5.*kl=nan.*loss=inf"):
        train("beta_vae", images, steps=8, checkpoint_dir=tmp_path, checkpoint_every=2, **FAST)
    good = ckpt.read_checkpoint(tmp_path)
    assert good.step == 4 and np.isfinite(good.history()["loss"]).all()


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_checkpoint_raises(images: np.ndarray, tmp_path: Path) -> None:
    train("beta_vae", images, steps=2, checkpoint_dir=tmp_path, **FAST)
    step_dir = ckpt.latest_checkpoint(tmp_path)
    _corrupt(step_dir / ckpt.WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="corrupt"):
        train("beta_vae", images, steps=4, checkpoint_dir=tmp_path, **FAST)
    (step_dir / ckpt.STATE_FILE).write_text('{"step": 2, "mod')
    with pytest.raises(CheckpointError, match="state.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "nowhere")


def test_mismatched_checkpoint_raises(images: np.ndarray, tmp_path: Path) -> None:
    train("beta_vae", images, steps=2, latent_dim=4, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match="latent_dim=4"):
        train("beta_vae", images, steps=4, latent_dim=5, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match="model="):
        train("dip_vae_i", images, steps=4, latent_dim=4, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match="channels="):
        train("beta_vae", _squares(48, 3), steps=4, latent_dim=4, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match="resume=False"):
        train("beta_vae", images, steps=4, latent_dim=4, checkpoint_dir=tmp_path, resume=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        train("beta_vae", images, steps=4, checkpoint_dir=tmp_path / "empty", resume=True)


def test_thread_probe_choice_is_stored_and_reused(images: np.ndarray, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    first = train(
        "beta_vae",
        images,
        steps=3,
        batch_size=8,
        progress=False,
        probe=True,
        checkpoint_dir=tmp_path,
    )
    assert first.num_threads in {1, before} and torch.get_num_threads() == before
    if before > 1:
        assert set(first.extra["thread_probe_seconds_per_step"]) == {1, before}
    state = ckpt.read_checkpoint(tmp_path).state
    assert state["num_threads"] == first.num_threads
    resumed = train(
        "beta_vae", images, steps=5, batch_size=8, progress=False, checkpoint_dir=tmp_path
    )
    assert resumed.num_threads == first.num_threads and resumed.extra["probe_seconds"] == 0.0


# --- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 64, 64, 1), np.float32), "uint8.*float"),
        (np.zeros((4, 1, 64, 64), np.uint8), "NCHW"),
        (np.zeros((4, 64, 64), np.uint8), "channel axis"),
        (np.zeros((4, 32, 32, 1), np.uint8), r"\[N, 64, 64, C\]"),
        (np.zeros((4, 64, 64, 2), np.uint8), "C = 1 or 3"),
        (np.zeros((0, 64, 64, 1), np.uint8), "empty"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_bad_image_arrays_are_refused(bad, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        train("beta_vae", bad, steps=1, **FAST)


def test_bad_arguments_are_refused(images: np.ndarray) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown model"):
        train("gan", images, steps=1, **FAST)
    with pytest.raises(InvalidArgumentError, match="no hyperparameter 'gamma'"):
        train("beta_vae", images, steps=1, hparams={"gamma": 3.0}, **FAST)
    with pytest.raises(InvalidArgumentError, match="≥ 0"):
        train("beta_vae", images, steps=1, hparams={"beta": -1.0}, **FAST)
    with pytest.raises(InvalidArgumentError, match="precision"):
        train("beta_vae", images, steps=1, precision="fp8", **FAST)
    with pytest.raises(InvalidArgumentError, match="steps"):
        train("beta_vae", images, steps=-1, **FAST)


def test_ground_truth_sets_latent_size_and_readonly_arrays_work() -> None:
    arr = _squares(12)
    arr.setflags(write=False)
    gt = ArrayGroundTruth(
        "toy", [Factor("a", np.arange(3.0)), Factor("b", np.arange(4.0))], arr, source="test"
    )
    result = train("beta_vae", gt, steps=2, **FAST)
    assert result.latent_dim == 2 and result.objective.vae.latent_dim == 2


# --- encoding ------------------------------------------------------------------------------------
def test_encode_shapes_dtypes_and_batch_size_invariance(images: np.ndarray, one_thread) -> None:
    objective = build_objective("beta_vae", hyperparameters("beta_vae"), 1, 5, seed=0)
    objective.train()
    mu, logvar = encode(objective, images, batch_size=7)
    assert mu.shape == logvar.shape == (len(images), 5)
    assert mu.dtype == logvar.dtype == np.float32
    assert objective.training  # mode restored
    mu2, logvar2 = encode(objective.vae, images, batch_size=48)
    np.testing.assert_allclose(mu, mu2, atol=1e-5)
    np.testing.assert_allclose(logvar, logvar2, atol=1e-5)
    with torch.no_grad():
        ref_mu, _ = objective.vae(images_to_input(torch.from_numpy(images[:3])))
    np.testing.assert_allclose(mu[:3], ref_mu.numpy(), atol=1e-5)
    mu_bf16, _ = encode(objective, images, batch_size=16, precision="bf16")
    np.testing.assert_allclose(mu_bf16, mu, atol=0.05)


def test_encode_refuses_bad_input(images: np.ndarray) -> None:
    objective = build_objective("ae", hyperparameters("ae"), 1, 3, seed=0)
    with pytest.raises(DataFormatError, match="channel"):
        encode(objective, _squares(4, channels=3))
    with pytest.raises(DataFormatError, match="uint8"):
        encode(objective, images.astype(np.float64) / 255)
    with pytest.raises(InvalidArgumentError, match="Objective, a VAE"):
        encode(42, images)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="precision"):  # a model's dtype is its own
        encode(objective, images, precision="fp64")


# --- determinism, resume guards and argument checks (review fixes) -------------------------------
def test_default_run_does_not_probe_and_uses_the_current_thread_count(
    images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """precision="auto" on the CPU, ≥ 200 steps: fp32 at torch's count, no timing-dependent probe."""

    def no_probe(*args, **kwargs):
        raise AssertionError("the thread probe ran without probe=True")

    monkeypatch.setattr(training, "probe_threads", no_probe)
    seen: list[int] = []

    def record(step: int, terms: dict) -> None:
        seen.append(torch.get_num_threads())
        raise _Interrupt

    before = torch.get_num_threads()
    with pytest.raises(_Interrupt):  # stop after step 1: only the thread choice matters here
        train("ae", images, steps=400, batch_size=8, progress=False, callback=record)
    assert seen == [before] and torch.get_num_threads() == before


def test_resume_reuses_the_stored_thread_count_at_any_precision(
    images: np.ndarray, tmp_path: Path
) -> None:
    kwargs = dict(batch_size=8, progress=False, precision="fp32", checkpoint_dir=tmp_path)
    train("ae", images, steps=2, num_threads=1, **kwargs)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        resumed = train("ae", images, steps=3, **kwargs)
    finally:
        torch.set_num_threads(before)
    assert resumed.start_step == 2 and resumed.num_threads == 1
    assert ckpt.read_checkpoint(tmp_path).state["num_threads"] == 1


def test_resume_refuses_other_data_precision_or_dataset(images: np.ndarray, tmp_path: Path) -> None:
    kwargs = dict(latent_dim=5, checkpoint_dir=tmp_path, **FAST)
    train("ae", images, steps=2, precision="fp32", **kwargs)
    state = ckpt.read_checkpoint(tmp_path).state
    assert state["dataset"] == "dsprites" and state["precision"] == "fp32"
    assert state["data_fingerprint"] == training.data_fingerprint(images)
    with pytest.raises(CheckpointError, match="other images"):
        train("ae", 255 - images, steps=4, precision="fp32", **kwargs)
    with pytest.raises(CheckpointError, match="precision="):
        train("ae", images, steps=4, precision="bf16", **kwargs)
    with pytest.raises(CheckpointError, match="dataset="):
        train("ae", images, steps=4, precision="fp32", dataset="shapes3d", **kwargs)
    # "auto" on the CPU is fp32 arithmetic: the same run
    assert train("ae", images, steps=3, precision="auto", **kwargs).start_step == 2


def test_data_fingerprint_samples_rows_across_the_whole_array() -> None:
    rows = np.zeros((100_000, 8), np.uint8)
    base = training.data_fingerprint(rows)
    assert training.data_fingerprint(rows.copy()) == base
    for index in (0, -1):
        changed = rows.copy()
        changed[index] = 1
        assert training.data_fingerprint(changed) != base
    assert training.data_fingerprint(rows[:-1]) != base  # N is part of it
    # a whole dSprites-sized grid (3 GB if materialised) is sampled, not read
    grid = np.broadcast_to(np.zeros((1, 64, 64, 1), np.uint8), (737_280, 64, 64, 1))
    assert training.data_fingerprint(grid) != training.data_fingerprint(grid[:-1])


def test_resaving_a_step_is_atomic(
    images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while re-saving a step leaves the old checkpoint of that step intact."""
    train("ae", images, steps=2, checkpoint_dir=tmp_path, **FAST)
    target = ckpt.latest_checkpoint(tmp_path)
    old = ckpt.read_checkpoint(target)
    real_rename = ckpt.os.rename
    failed: list[str] = []

    def failing_rename(src, dst):  # the first move of the new directory into place fails
        if not failed and Path(src).name.startswith(".tmp-step-") and Path(dst) == target:
            failed.append(str(src))
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", failing_rename)
    objective = load_model(tmp_path)
    optimizers = training.make_optimizers(objective).as_dict()

    def resave() -> None:
        ckpt.save_checkpoint(
            tmp_path,
            step=2,
            objective=objective,
            optimizers=optimizers,
            stream_state=old.state["batch_stream_state"],
            history=old.history(),
            config={"model": "ae", "hparams": {}, "channels": 1, "latent_dim": 5},
        )

    with pytest.raises(OSError, match="disk full"):
        resave()
    monkeypatch.undo()
    assert failed
    again = ckpt.read_checkpoint(target)
    assert again.state == old.state
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    # and a successful re-save replaces it, leaving nothing behind
    resave()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert ckpt.read_checkpoint(target).state["created_unix"] > old.state["created_unix"]


@pytest.mark.parametrize("seed", ["x", 2**70, 1.7, -1, True])
def test_bad_seeds_are_refused(images: np.ndarray, seed) -> None:
    with pytest.raises(InvalidArgumentError, match="seed"):
        train("ae", images, steps=1, seed=seed, **FAST)


@pytest.mark.parametrize("keep", [0, "2", 1.5])
def test_bad_keep_checkpoints_is_refused(images: np.ndarray, tmp_path: Path, keep) -> None:
    with pytest.raises(InvalidArgumentError, match="keep_checkpoints"):
        train("ae", images, steps=1, checkpoint_dir=tmp_path, keep_checkpoints=keep, **FAST)
    assert not any(tmp_path.iterdir())


def test_checkpoint_dir_that_is_a_file_fails_before_training(
    images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking checkpoint_dir")

    monkeypatch.setattr(training, "training_step", no_training)
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        train("ae", images, steps=3, checkpoint_dir=blocker, **FAST)
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir"):
        train("ae", images, steps=3, checkpoint_dir=blocker / "sub", **FAST)
    fresh = tmp_path / "new" / "dir"
    monkeypatch.undo()
    train("ae", images, steps=1, checkpoint_dir=fresh, **FAST)
    assert ckpt.latest_checkpoint(fresh) is not None


# --- checkpoints written by older code ------------------------------------------------------------
def _old_checkpoint(root: Path) -> Path:
    """The format-1 fixture of tests/data, laid out as a checkpoint root (a fresh copy)."""
    import shutil

    data = Path(__file__).parent / "data"
    step_dir = root / "step-000000002"
    step_dir.mkdir(parents=True)
    shutil.copyfile(data / "checkpoint_v1_state.json", step_dir / ckpt.STATE_FILE)
    shutil.copyfile(data / "checkpoint_v1_weights.safetensors", step_dir / ckpt.WEIGHTS_FILE)
    return step_dir


# The run identity a format-1 checkpoint's JSON holds (train() also stores its thread count).
FORMAT_1_RUN_KEYS = (
    "model",
    "dataset",
    "hparams",
    "channels",
    "latent_dim",
    "seed",
    "batch_size",
    "num_images",
    "data_fingerprint",
    "precision",
    "num_threads",
)


def test_a_format_1_checkpoint_of_the_old_code_resumes(tmp_path: Path) -> None:
    """A checkpoint written by the code of commit 8ccadeb (tests/data/make_checkpoint_v1.py) loads,
    resumes from exactly its stored state, and new checkpoints keep its format."""
    from .data.make_checkpoint_v1 import BATCH_SIZE, MODEL, SEED, STEPS, fixture_ground_truth

    gt = fixture_ground_truth()
    old_dir = _old_checkpoint(tmp_path / "old")
    old = ckpt.read_checkpoint(old_dir)
    assert old.step == STEPS and old.state["format_version"] == 1
    loaded = load_model(tmp_path / "old")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, old.tensors[f"model/{name}"]), name

    # One step by hand from the stored state (weights, Adam moments, batch stream) ...
    before = torch.get_num_threads()
    torch.set_num_threads(old.state["num_threads"])
    try:
        objective = build_objective(MODEL, old.state["hparams"], 1, old.state["latent_dim"], SEED)
        objective.load_state_dict(old.model_state())
        adam = torch.optim.Adam(objective.vae_parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
        tensors = {k: v.clone() for k, v in old.tensors.items()}  # Adam steps them in place
        ckpt.optimizer_from_parts(adam, tensors, old.state["optimizers"]["vae"], "optimizer/vae")
        stream = BatchStream(SEED, len(gt), BATCH_SIZE, old.state["latent_dim"])
        stream.load_state(old.state["batch_stream_state"])
        batch = stream.next()
        x = images_to_input(torch.from_numpy(gt.all_images()).index_select(0, batch.indices))
        adam.zero_grad()
        objective(x, batch.noise, batch.permutations)["loss"].backward()
        adam.step()
    finally:
        torch.set_num_threads(before)
    # ... is what train() does when it resumes the old checkpoint (bitwise, on any CPU)
    kwargs = dict(seed=SEED, batch_size=BATCH_SIZE, checkpoint_dir=tmp_path / "old", progress=False)
    resumed = train(MODEL, gt, steps=STEPS + 1, **kwargs)
    assert resumed.start_step == STEPS and resumed.num_threads == old.state["num_threads"]
    assert _same_weights(resumed.objective, objective)
    for name, values in old.history().items():
        np.testing.assert_array_equal(resumed.history[name][:STEPS], values)
    new = ckpt.read_checkpoint(tmp_path / "old")
    moments = {k: v for k, v in new.tensors.items() if k.startswith("optimizer/")}
    for name, value in ckpt.optimizer_to_parts(adam, "optimizer/vae")[0].items():
        assert torch.equal(moments.pop(name), value), name
    assert not moments

    # the new checkpoint has the old one's layout: JSON keys, run identity, tensor names and shapes
    assert sorted(new.state) == sorted(old.state)
    for key in FORMAT_1_RUN_KEYS:
        assert new.state[key] == old.state[key], key
    groups = [c.state["optimizers"]["vae"]["param_groups"] for c in (new, old)]
    assert groups[0] == groups[1]
    shapes = {k: v.shape for k, v in old.tensors.items() if not k.startswith("history/")}
    assert sorted(new.tensors) == sorted(old.tensors)
    assert {k: new.tensors[k].shape for k in shapes} == shapes

    # Where this CPU computes like the one that wrote the fixture (last bits differ between
    # instruction sets), today's code writes that checkpoint again, tensor for tensor and key for
    # key (no behaviour change), and resuming the old checkpoint equals never stopping.
    same = dict(seed=SEED, batch_size=BATCH_SIZE, num_threads=1, progress=False)
    fresh = train(MODEL, gt, steps=STEPS, checkpoint_dir=tmp_path / "fresh", **same)
    if all(
        torch.equal(v, old.tensors[f"model/{k}"]) for k, v in fresh.objective.state_dict().items()
    ):
        again = ckpt.read_checkpoint(tmp_path / "fresh")
        assert again.tensors.keys() == old.tensors.keys()
        for name, value in old.tensors.items():
            assert torch.equal(again.tensors[name], value), name
        volatile = {"created_unix", "package_version", "torch_version", "weights_sha256"}
        assert {k: v for k, v in again.state.items() if k not in volatile} == {
            k: v for k, v in old.state.items() if k not in volatile
        }
        straight = train(MODEL, gt, steps=STEPS + 1, **same)
        assert _same_weights(straight.objective, resumed.objective)
        for name in straight.history:
            np.testing.assert_array_equal(straight.history[name], resumed.history[name])


def test_a_checkpoint_without_a_run_field_is_refused_by_name(tmp_path: Path) -> None:
    """A checkpoint that does not record a field of the run's identity (an older or foreign
    format) cannot be shown to belong to the run: resuming it names the missing field."""
    from .data.make_checkpoint_v1 import BATCH_SIZE, MODEL, SEED, fixture_ground_truth

    state_file = _old_checkpoint(tmp_path) / ckpt.STATE_FILE
    state = json.loads(state_file.read_text())
    del state["data_fingerprint"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="does not record data_fingerprint"):
        train(
            MODEL,
            fixture_ground_truth(),
            steps=3,
            seed=SEED,
            batch_size=BATCH_SIZE,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    assert load_model(tmp_path).vae.latent_dim == 2  # the weights still load


# --- a transform per batch (a perturbation on the fly) ----------------------------------------
def test_a_per_batch_transform_is_the_transformed_images_held_in_memory(
    images: np.ndarray, tmp_path
) -> None:
    """Perturbing each gathered batch trains bitwise as the perturbed grid held in memory does:
    the perturbation of a row depends on the row alone (its s, its index)."""
    from perturbed_disentanglement.perturbation import Pattern, perturb

    s = np.linspace(-2, 2, len(images))
    pattern = Pattern(seed=0, kappa=4)

    def transform(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return perturb(x, s[idx], 0.2, pattern)

    held = perturb(images, s, 0.2, pattern)
    on_the_fly = train("beta_vae", images, steps=4, transform=transform, **FAST)
    in_memory = train("beta_vae", held, steps=4, **FAST)
    np.testing.assert_array_equal(on_the_fly.history["loss"], in_memory.history["loss"])
    assert _same_weights(on_the_fly.objective, in_memory.objective)
    assert training.data_fingerprint(images, transform=transform) == training.data_fingerprint(held)
    # one run: a checkpoint written on the fly resumes from the images held in memory
    train("beta_vae", images, steps=2, transform=transform, checkpoint_dir=tmp_path, **FAST)
    resumed = train("beta_vae", held, steps=4, checkpoint_dir=tmp_path, **FAST)
    assert _same_weights(resumed.objective, in_memory.objective)
    with pytest.raises(CheckpointError, match="other images"):
        train("beta_vae", images, steps=6, checkpoint_dir=tmp_path, **FAST)  # not perturbed
    with pytest.raises(InvalidArgumentError, match="transform must return uint8"):
        train("beta_vae", images, steps=1, transform=lambda x, i: x[:1], **FAST)
