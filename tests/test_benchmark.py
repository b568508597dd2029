"""The benchmark harness: parsing, reading a published config, scoring, and a smoke sweep end to
end (CLI, records, report, resume, a failed run retried, the Ray path)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perturbed_disentanglement import __version__, ground_truth, metrics
from perturbed_disentanglement.benchmark import evaluation as ev
from perturbed_disentanglement.benchmark.data import (
    dataset_of,
    factors_from_columns,
    grid_order,
    identify_dataset,
    load_config,
)
from perturbed_disentanglement.benchmark.execute import (
    ADOPTED_FILE,
    ERROR_FILE,
    loader,
    run_in_process,
    trajectory_steps,
)
from perturbed_disentanglement.benchmark.plan import (
    PRESETS,
    RunSpec,
    parse_configs,
    parse_grid,
    parse_models,
    parse_seeds,
    plan_runs,
)
from perturbed_disentanglement.benchmark.records import (
    CHECKPOINT_DIR,
    RECORD_FILE,
    finished_record,
    iter_records,
    open_results,
    results_identity,
    run_dir,
    write_record,
)
from perturbed_disentanglement.errors import (
    ArtifactError,
    DataFormatError,
    InvalidArgumentError,
)
from perturbed_disentanglement.ground_truth.grid import ArrayGroundTruth, Factor
from perturbed_disentanglement.metrics.diagnostics import s_alignment
from perturbed_disentanglement.perturbation.pattern import default_strength, max_step
from perturbed_disentanglement.reference.stage import preset_ground_truth

from .conftest import ROOT, SmokeBuild


# --- parsing and planning -------------------------------------------------------------------------
def test_parse_seeds_models_configs_and_grid() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,0-1") == [0, 1, 5]
    for bad in ("3-1", "a", "0,0", "-1", ""):
        with pytest.raises(InvalidArgumentError):
            parse_seeds(bad)
    assert parse_models("beta_vae,FactorVAE".replace("FactorVAE", "factor-vae")) == [
        "beta_vae",
        "factor_vae",
    ]
    assert len(parse_models("all")) == 6
    with pytest.raises(InvalidArgumentError, match="unknown model 'vqvae'"):
        parse_models("beta_vae,vqvae")
    assert parse_configs("original,perturbed-eps0.05") == ["original", "perturbed-eps0.05"]
    with pytest.raises(InvalidArgumentError, match="unknown config 'blurred'"):
        parse_configs("original,blurred")
    assert parse_grid(["beta=1,2", "gamma=10"]) == {"beta": [1.0, 2.0], "gamma": [10.0]}
    for bad in (["beta"], ["beta=1,x"], ["beta=1", "beta=2"], ["=1"]):
        with pytest.raises(InvalidArgumentError):
            parse_grid(bad)


def test_plan_runs_applies_each_grid_entry_to_the_models_that_have_it() -> None:
    specs = plan_runs(
        ["beta_vae", "ae", "factor_vae"],
        ["original", "perturbed"],
        [0, 1],
        dataset="dsprites",
        steps=100,
        grid={"beta": [1, 4]},
    )
    # β-VAE: 2 β × 2 seeds × 2 configs; AE and FactorVAE keep their defaults: 4 each
    assert len(specs) == 8 + 4 + 4
    assert {s.hparams["beta"] for s in specs if s.model == "beta_vae"} == {1.0, 4.0}
    assert {s.hparams["gamma"] for s in specs if s.model == "factor_vae"} == {35.0}
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)  # a record never overwrites another run's
    assert "beta_vae-beta=4-perturbed-seed1-steps100" in ids
    assert RunSpec("ae", {}, "noise", 3, 10).regulariser is None
    with pytest.raises(InvalidArgumentError, match=r"no selected model has the hyperparameter"):
        plan_runs(["ae"], ["original"], [0], dataset="dsprites", steps=10, grid={"beta": [1]})
    with pytest.raises(InvalidArgumentError, match="steps must be an integer >= 1"):
        plan_runs(["ae"], ["original"], [0], dataset="dsprites", steps=0)


# --- reading a published config -------------------------------------------------------------------
def test_grid_from_columns_and_its_refusals() -> None:
    names = {"a": ["x", "y", "z"], "b": ["0.5", "1"]}
    # a sub-grid: classes x and z of a, both of b, rows in any order
    a = np.array([2, 0, 2, 0])
    b = np.array([0, 1, 1, 0])
    factors, idx = factors_from_columns(
        names, {"a": a, "b": b}, {"a": a * 10.0, "b": np.where(b == 1, 1.0, 0.5)}
    )
    assert [f.size for f in factors] == [2, 2]
    assert factors[0].categories == ("x", "z") and factors[1].categories is None
    np.testing.assert_array_equal(factors[0].values, [0.0, 20.0])
    np.testing.assert_array_equal(grid_order(idx, [2, 2]), [2, 1, 3, 0])
    with pytest.raises(DataFormatError, match="holds 3 rows but its factors make a grid of 4"):
        grid_order(idx[:3], [2, 2])
    with pytest.raises(DataFormatError, match="occur twice"):
        grid_order(np.array([[0, 0], [0, 0], [1, 0], [1, 1]]), [2, 2])
    with pytest.raises(DataFormatError, match="different a_value"):
        factors_from_columns(
            {"a": ["x", "y"]}, {"a": np.array([0, 0, 1])}, {"a": np.array([1.0, 2.0, 3.0])}
        )
    with pytest.raises(DataFormatError, match="not those of a perturbed dataset"):
        identify_dataset(["image", "label"])


@pytest.mark.slow
def test_load_config_reads_the_published_grid(smoke_build: SmokeBuild) -> None:
    grid = preset_ground_truth(ground_truth("dsprites"), "smoke")
    original = load_config(str(smoke_build.out), "original", progress=False)
    perturbed = load_config(str(smoke_build.out), "perturbed", progress=False)
    assert original.dataset == "dsprites" and original.num_images == len(grid) == 1536
    gt = original.ground_truth
    assert gt.factor_names == grid.factor_names and gt.factor_sizes == grid.factor_sizes
    for mine, theirs in zip(gt.factor_specs, grid.factor_specs):
        np.testing.assert_allclose(mine.values, theirs.values, rtol=1e-6)
    np.testing.assert_array_equal(gt.all_images(), grid.all_images())  # bytes, in grid order
    np.testing.assert_array_equal(original.s, perturbed.s)
    assert original.epsilon == 0 and perturbed.epsilon == pytest.approx(
        default_strength("dsprites")[1]
    )
    step = np.abs(perturbed.ground_truth.all_images().astype(int) - grid.all_images().astype(int))
    assert 0 < step.max() <= max_step(perturbed.epsilon)
    assert original.fingerprint != perturbed.fingerprint
    with pytest.raises(InvalidArgumentError, match="cannot load config 'blurred'"):
        load_config(str(smoke_build.out), "blurred", progress=False)
    # What a sweep plans with, from the columns alone; the same refusal.
    assert dataset_of(str(smoke_build.out), "noise") == "dsprites"
    with pytest.raises(InvalidArgumentError, match="cannot load config 'blurred'"):
        dataset_of(str(smoke_build.out), "blurred")


def test_a_shared_decoded_config_is_the_same_data_memory_mapped(
    smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    private = load_config(str(smoke_build.out), "perturbed", progress=False)
    shared = load_config(
        str(smoke_build.out), "perturbed", progress=False, decoded_dir=tmp_path / "decoded"
    )
    again = load_config(
        str(smoke_build.out), "perturbed", progress=False, decoded_dir=tmp_path / "decoded"
    )
    files = list((tmp_path / "decoded").glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith("dsprites-perturbed-")
    for data in (shared, again):  # a read-only map of the one file, the same bytes and s
        images = data.ground_truth.all_images()
        assert isinstance(images, np.memmap) and not images.flags.writeable
        assert data.fingerprint == private.fingerprint
        np.testing.assert_array_equal(data.s, private.s)
    files[0].write_bytes(b"not an array")  # a damaged file is decoded again
    repaired = load_config(
        str(smoke_build.out), "perturbed", progress=False, decoded_dir=tmp_path / "decoded"
    )
    assert repaired.fingerprint == private.fingerprint


# --- scoring -----------------------------------------------------------------------------------
def _tiny_grid() -> tuple[ArrayGroundTruth, np.ndarray]:
    """A 3 × 4 × 5 grid whose images carry their factor indices in their first pixels."""
    factors = [Factor(n, np.arange(k, dtype=np.float64)) for n, k in (("a", 3), ("b", 4), ("c", 5))]
    idx = np.stack(np.unravel_index(np.arange(60), (3, 4, 5)), axis=1)
    images = np.zeros((60, 64, 64, 1), dtype=np.uint8)
    images[:, 0, :3, 0] = idx * 40
    gt = ArrayGroundTruth("tiny", factors, images)
    return gt, (idx[:, 2] - 2.0).astype(np.float32)  # s follows factor c


def _factor_encoder(x: np.ndarray) -> np.ndarray:
    """A perfect deterministic code: the factor indices written in the pixels."""
    return x[:, 0, :3, 0].astype(np.float64) / 40


SMOKE_SIZES = PRESETS["smoke"].sizes


def test_a_perfect_code_scores_high_and_bad_encoders_are_refused() -> None:
    gt, s = _tiny_grid()
    metrics = ev.evaluate_representation(gt, _factor_encoder, s, sizes=SMOKE_SIZES)
    assert metrics["mig"] > 0.9 and metrics["dci_disentanglement"] > 0.9
    # SAP: a 1-D linear SVM cannot carve out a middle class, so even a perfect code scores < 1
    assert metrics["factor_vae_score"] == 1.0 and metrics["sap"] > 0.3
    assert metrics["active_units"] is None  # a deterministic encoder has no σ metrics
    assert metrics["information_level"] is None
    assert [metrics["factor_latent"][f] for f in "abc"] == [0, 1, 2]
    assert metrics["factor_latent"]["s"] == 2  # the latent of c, which s follows
    with pytest.raises(InvalidArgumentError, match=r"mu of shape \[\d+\] for \d+ images"):
        ev.evaluate_representation(gt, lambda x: np.zeros(len(x)), s, sizes=SMOKE_SIZES)
    with pytest.raises(InvalidArgumentError, match="NaN or infinite values in mu"):
        ev.evaluate_representation(gt, lambda x: np.full((len(x), 3), np.nan), s, sizes=SMOKE_SIZES)
    with pytest.raises(InvalidArgumentError, match="logvar"):
        ev.evaluate_representation(
            gt, lambda x: (np.zeros((len(x), 3)), np.zeros((len(x), 2))), s, sizes=SMOKE_SIZES
        )
    with pytest.raises(InvalidArgumentError, match="one value per grid point"):
        ev.evaluate_representation(gt, _factor_encoder, s[:10], sizes=SMOKE_SIZES)


def _mixed_encoder(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stochastic code that mixes the factors, in exact float64 arithmetic (no sin: the codes
    are the same bits on any CPU)."""
    a, b, c = (x[:, 0, :3, 0].astype(np.float64) / 40).T
    wobble = (a * 7 + b * 13 + c * 29) % 11 / 11 - 0.5  # a fixed pseudo-noise per image
    mu = np.stack([a + b + wobble, b + 0.75 * c, c + 0.5 * a - wobble, wobble], axis=1)
    logvar = np.stack([-2 - 0.25 * a, -2 - 0.25 * b, -2 - 0.25 * c, np.full_like(a, 0.5)], axis=1)
    return mu, logvar


def _metrics_one_by_one(gt: ArrayGroundTruth, s: np.ndarray, random_state: object) -> dict:
    """What ``evaluate_representation`` must return, from the metric functions called one by one
    in the same process: dlib's two samples first, then DCI, SAP and the FactorVAE score, each
    given ``random_state`` (a Generator's stream is drawn from in that order)."""
    rng = np.random.default_rng(7) if random_state == "generator7" else random_state
    draw = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    train_f = gt.sample_factors(SMOKE_SIZES.num_train, draw)
    test_f = gt.sample_factors(SMOKE_SIZES.num_test, draw)
    mu, logvar = _mixed_encoder(gt.images(gt.index(train_f)))
    mu_test, _ = _mixed_encoder(gt.images(gt.index(test_f)))
    d = metrics.dci(mu, train_f, mu_test, test_f, random_state=rng)
    sp = metrics.sap(mu, train_f, mu_test, test_f, random_state=rng)
    fv = metrics.factor_vae_score(
        gt,
        _mixed_encoder,
        rng,
        num_train=SMOKE_SIZES.factor_vae_train,
        num_eval=SMOKE_SIZES.factor_vae_eval,
        num_variance_estimate=SMOKE_SIZES.factor_vae_variance,
    )
    m = metrics.mig(mu, train_f)
    latent = ev.latent_of_each(mu, train_f, s[gt.index(train_f)], gt.factor_names)
    level = metrics.information_level(logvar)
    return {
        "mig": m["mig"],
        "mig_per_factor": dict(zip(gt.factor_names, m["mig_per_factor"].tolist())),
        "dci_disentanglement": d["disentanglement"],
        "dci_completeness": d["completeness"],
        "dci_informativeness": d["informativeness_test"],
        "sap": sp["sap"],
        "factor_vae_score": fv["eval_accuracy"],
        "active_units": metrics.num_active_units(logvar),
        "mean_variance": metrics.mean_posterior_variance(logvar).tolist(),
        "factor_latent": latent,
        "information_level": {k: float(level[v]) for k, v in latent.items()},
        "s_alignment": s_alignment(mu, logvar, s[gt.index(train_f)]),
    }


def _assert_same_metrics(got: object, expected: object) -> None:
    """Keys (in order), ints and None exactly, floats exactly: both sides are computed in this
    process, on this CPU, by the same functions (no number recorded on another machine)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected)
        for key in expected:
            _assert_same_metrics(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_same_metrics(g, e)
    elif isinstance(expected, float):
        assert isinstance(got, float) and got == expected
    else:
        assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize("seed", [3, "generator7"])
def test_evaluate_representation_is_the_metric_functions_in_dlibs_order(seed: object) -> None:
    gt, s = _tiny_grid()
    random_state = np.random.default_rng(7) if seed == "generator7" else seed
    got = ev.evaluate_representation(
        gt, _mixed_encoder, s, random_state=random_state, sizes=SMOKE_SIZES
    )
    _assert_same_metrics(got, _metrics_one_by_one(gt, s, seed))
    assert 0 < got["mig"] < 1 and got["active_units"] == 3  # a real, mixed representation


def test_classifier_subsets_are_classifier_metrics_on_the_first_points() -> None:
    gt, s = _tiny_grid()
    sizes = dataclasses.replace(SMOKE_SIZES, classifier_train=200, classifier_test=100)
    assert SMOKE_SIZES.as_dict()["classifier_train"] is None  # all points, as records store it
    assert ev.EvaluationSizes(**json.loads(json.dumps(sizes.as_dict()))) == sizes
    got = ev.evaluate_representation(gt, _mixed_encoder, s, random_state=3, sizes=sizes)

    codes = ev.sample_codes(gt, ev.checked_encoder(_mixed_encoder), sizes, 3)
    head = codes.head(200, 100)
    assert head.mu.shape == (200, 4) and head.factors_test.shape == (100, 3)
    np.testing.assert_array_equal(head.mu_test, codes.mu_test[:100])
    classifiers = ev.classifier_metrics(head, SMOKE_SIZES, 3)  # no subset: all of head's points
    assert {k: got[k] for k in classifiers} == classifiers  # the same function on the same arrays
    before = ev.evaluate_representation(gt, _mixed_encoder, s, random_state=3, sizes=SMOKE_SIZES)
    assert classifiers["sap"] != before["sap"]  # the subset changed the fits ...
    others = [k for k in got if k not in classifiers]  # ... and nothing else
    _assert_same_metrics({k: got[k] for k in others}, {k: before[k] for k in others})


def test_robustness_summary_is_the_share_that_survives() -> None:
    scores = {
        c: {m: v for m in ev.ROBUSTNESS_METRICS}
        for c, v in (("original", 0.4), ("perturbed", 0.1), ("noise", 0.36))
    }
    summary = ev.robustness_summary(scores)
    assert summary["mig"]["perturbed_survival"] == pytest.approx(0.25)
    assert summary["mig"]["noise_survival"] == pytest.approx(0.9)
    scores["original"]["mig"] = 0.0
    assert ev.robustness_summary(scores)["mig"]["perturbed_survival"] is None
    with pytest.raises(InvalidArgumentError, match="original"):
        ev.robustness_summary({"perturbed": scores["perturbed"]})


@pytest.mark.slow
def test_evaluate_encoder_on_the_published_configs(smoke_build: SmokeBuild) -> None:
    proj = np.random.default_rng(0).normal(size=(64 * 64, 4)) / 64

    def encode(x: np.ndarray):  # a fixed linear code of the pixels, with a log σ²
        mu = x.reshape(len(x), -1).astype(np.float64) / 255 @ proj
        return mu, np.full_like(mu, -2.0)

    result = ev.evaluate_encoder(
        encode, str(smoke_build.out), sizes=SMOKE_SIZES, progress=False, random_state=1
    )
    assert set(result["configs"]) == {"original", "perturbed", "noise"}
    assert result["configs"]["original"]["active_units"] == 4
    row = result["robustness"]["mig"]
    assert row["perturbed_survival"] == pytest.approx(row["perturbed"] / row["original"])


# --- results folders and records -----------------------------------------------------------------
def test_results_folder_belongs_to_one_dataset_and_version(tmp_path: Path) -> None:
    identity = results_identity("perturbed-dsprites", "dsprites")
    open_results(tmp_path / "r", identity)
    open_results(tmp_path / "r", identity)  # the same: fine
    with pytest.raises(ArtifactError, match="data='perturbed-dsprites'.*'perturbed-shapes3d'"):
        open_results(tmp_path / "r", results_identity("perturbed-shapes3d", "shapes3d"))
    old = json.loads((tmp_path / "r" / "results.json").read_text())
    old["package_version"] = "0.0.1"
    (tmp_path / "r" / "results.json").write_text(json.dumps(old))
    with pytest.raises(ArtifactError, match=f"package_version='0.0.1'.*'{__version__}'"):
        open_results(tmp_path / "r", identity)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("keep me")
    with pytest.raises(ArtifactError, match="not benchmark results"):
        open_results(tmp_path / "other", identity)
    assert (tmp_path / "other" / "thesis.tex").read_text() == "keep me"


# --- a smoke sweep end to end --------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perturbed_disentanglement.benchmark", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=3600,  # minutes on 2 idle cores; far more on a loaded machine
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def smoke_sweep(smoke_build: SmokeBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "results"
    proc = _cli(
        "--data",
        str(smoke_build.out),
        "--models",
        "beta_vae,ae",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "12 run(s) finished here (0 of them from an adopted checkpoint), 0 already finished, 0 failed"
        in proc.stdout
    )
    return out


@pytest.mark.slow
def test_smoke_sweep_writes_a_record_per_run_and_the_report(smoke_sweep: Path) -> None:
    records = list(iter_records(smoke_sweep))
    assert len(records) == 12  # 2 models × 3 configs × 2 seeds
    assert {(r["model"], r["data"]["config"], r["seed"]) for r in records} == {
        (m, c, s)
        for m in ("beta_vae", "ae")
        for c in ("original", "perturbed", "noise")
        for s in (0, 1)
    }
    for r in records:
        assert r["steps"] == PRESETS["smoke"].steps and r["preset"] == "smoke"
        assert 0 <= r["metrics"]["mig"] <= 1 and r["metrics"]["reconstruction"] > 0
        assert (r["metrics"]["active_units"] is None) == (r["model"] == "ae")
        assert r["data"]["num_images"] == 1536
        diagnosed = r["model"] != "ae"  # the AE has no σ: no alignment, no trajectory
        assert (r["metrics"]["s_alignment"] is None) == (not diagnosed)
        # the uptake compares with the original config's images: none for original itself
        assert (r["metrics"]["uptake"] is None) == (r["data"]["config"] == "original")
        if diagnosed:
            steps = [e["step"] for e in r["trajectory"]]
            assert steps == [*trajectory_steps(r["steps"]), r["steps"]]
            assert steps[0] < steps[-1] and all(0 <= e["mig"] <= 1 for e in r["trajectory"])
            assert r["trajectory"][-1]["uptake"] == r["metrics"]["uptake"]
            assert r["trajectory"][-1]["s_alignment"] == r["metrics"]["s_alignment"]
        else:
            assert "trajectory" not in r
    report = (smoke_sweep / "report.md").read_text()
    assert "Table 1" in report and "Table 2" in report
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert figures and all((smoke_sweep / f).exists() for f in figures)


#: ``run_in_process``'s settings for the smoke sweep, quiet.
_SMOKE_SWEEP = dict(
    preset="smoke",
    sizes=PRESETS["smoke"].sizes,
    checkpoint_every=PRESETS["smoke"].checkpoint_every,
    num_threads=1,
    progress=False,
    log=lambda *_: None,
)


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_retries_a_failed_one(
    smoke_sweep: Path, smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    shutil.copytree(smoke_sweep, out)
    victim = "beta_vae-beta=8-noise-seed1-steps30"
    kept = (run_dir(out, victim) / RECORD_FILE).read_bytes()
    (run_dir(out, victim) / RECORD_FILE).unlink()
    # a corrupt checkpoint: the run fails, the failure is written beside it, the rest is kept
    for f in (run_dir(out, victim) / CHECKPOINT_DIR).rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    specs = plan_runs(
        ["beta_vae", "ae"],
        ["original", "perturbed", "noise"],
        [0, 1],
        dataset="dsprites",
        steps=PRESETS["smoke"].steps,
    )
    common = _SMOKE_SWEEP
    load = loader(str(smoke_build.out), progress=False)
    outcome = run_in_process(specs, load, out, **common)
    assert len(outcome.skipped) == 11 and list(outcome.failed) == [victim]
    assert (run_dir(out, victim) / ERROR_FILE).exists()
    assert finished_record(out, victim) is None
    shutil.rmtree(run_dir(out, victim) / CHECKPOINT_DIR)  # the user clears the bad checkpoint
    outcome = run_in_process(specs, load, out, **common)
    assert outcome.trained == [victim] and not outcome.failed
    assert not (run_dir(out, victim) / ERROR_FILE).exists()
    # deterministic: the retried run gives the record it gave before (up to the timings)
    again, before = finished_record(out, victim), json.loads(kept)
    assert again["metrics"] == before["metrics"]
    with pytest.raises(ArtifactError, match="never overwritten"):
        write_record(out, again)


@pytest.mark.slow
def test_a_checkpoint_trained_elsewhere_is_adopted_only_by_its_own_run(
    smoke_sweep: Path, smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    preset = PRESETS["smoke"]
    steps = preset.steps
    mine = "beta_vae-beta=8-perturbed-seed0-steps30"
    source = tmp_path / "campaign" / "some-run"  # any layout: found by identity, not by name
    shutil.copytree(run_dir(smoke_sweep, mine) / CHECKPOINT_DIR, source)
    common = _SMOKE_SWEEP
    load = loader(str(smoke_build.out), progress=False)
    specs = [
        *plan_runs(["beta_vae"], ["perturbed"], [0, 2], dataset="dsprites", steps=steps),
        *plan_runs(["beta_vae"], ["perturbed"], [0], dataset="dsprites", steps=2 * steps),
        *plan_runs(["beta_vae"], ["noise"], [0], dataset="dsprites", steps=steps),
    ]
    out = tmp_path / "results"
    outcome = run_in_process(specs, load, out, adopt=tmp_path / "campaign", **common)
    assert sorted(outcome.trained) == sorted(s.run_id for s in specs) and not outcome.failed
    same, other_seed, longer, other_images = (finished_record(out, s.run_id) for s in specs)
    # the same run: only evaluated, the scores those of the run that trained it
    assert same["metrics"] == finished_record(smoke_sweep, mine)["metrics"]
    note = same["training"]["adopted_from"]
    assert note["step"] == steps and Path(note["source"]).parent == source.resolve()
    assert [e["step"] for e in same["trajectory"]] == [steps]  # its earlier steps ran elsewhere
    # a longer run continues from it: diagnosed from the adopted step on
    assert longer["training"]["adopted_from"]["step"] == steps
    assert [e["step"] for e in longer["trajectory"]] == [steps, 3 * steps // 2, 2 * steps]
    # another seed, or other images (noise), is another run: trained from scratch
    for record in (other_seed, other_images):
        assert "adopted_from" not in record["training"]
        assert [e["step"] for e in record["trajectory"]] == [*trajectory_steps(steps), steps]
        assert not (run_dir(out, record["run_id"]) / ADOPTED_FILE).exists()
    # evaluation only: a run with nothing to take fails and trains nothing; the others are kept
    again = tmp_path / "again"
    outcome = run_in_process(
        specs[:2], load, again, adopt=tmp_path / "campaign", allow_training=False, **common
    )
    assert outcome.trained == [specs[0].run_id] and list(outcome.failed) == [specs[1].run_id]
    assert "training is off (--no-train)" in outcome.failed[specs[1].run_id]
    assert not (run_dir(again, specs[1].run_id) / CHECKPOINT_DIR).exists()
    proc = _cli("--data", str(smoke_build.out), "--adopt", str(tmp_path / "nothing"), cwd=tmp_path)
    assert proc.returncode == 2 and "no such folder of checkpoints" in proc.stderr


@pytest.mark.slow
def test_report_only_and_a_folder_of_other_data_refused(
    smoke_sweep: Path, smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    shutil.copytree(smoke_sweep, out)
    (out / "report.md").unlink()
    proc = _cli("--report-only", "--out", str(out), "--data", str(smoke_build.out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "report.md").exists()
    identity = json.loads((out / "results.json").read_text())
    identity["data"] = "someone/else"
    (out / "results.json").write_text(json.dumps(identity))
    proc = _cli(
        "--data", str(smoke_build.out), "--preset", "smoke", "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 2 and "must not be mixed" in proc.stderr
    assert len(list(iter_records(out))) == 12  # nothing lost
    proc = _cli("--data", str(smoke_build.out), "--models", "vqvae", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'vqvae'" in proc.stderr


@pytest.mark.slow
def test_the_ray_path_gives_the_in_process_records(
    smoke_sweep: Path, smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    from perturbed_disentanglement.benchmark.ray_backend import run_with_ray

    specs = plan_runs(["beta_vae"], ["original", "perturbed"], [0], dataset="dsprites", steps=30)
    preset = PRESETS["smoke"]
    outcome = run_with_ray(
        specs,
        loader(str(smoke_build.out), progress=False),
        tmp_path / "ray",
        preset="smoke",
        sizes=preset.sizes,
        checkpoint_every=preset.checkpoint_every,
        num_threads=1,
        log=lambda *_: None,
    )
    assert sorted(outcome.trained) == sorted(s.run_id for s in specs) and not outcome.failed
    assert not ray.is_initialized()  # the local runtime it started is shut down
    for spec in specs:
        mine = finished_record(tmp_path / "ray", spec.run_id)
        theirs = finished_record(smoke_sweep, spec.run_id)
        assert mine["metrics"] == theirs["metrics"]
