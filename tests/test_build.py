"""The build end to end at smoke scale: CLI, read-back with the real load_dataset, determinism,
caching and resumption, and every bad input of issue 8.

One smoke build (``python -m generation.build --smoke``, a subprocess, as a user types it) is
shared by the whole session, across xdist workers (a file lock); tests that change a build work on
a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from filelock import FileLock

from builders import get_builder
from builders.manifest import STAGING_DIR, STATE_FILE, read_manifest, read_state
from generation import build as build_module
from generation.build import BuildError, BuildOptions, build, main, resolve_options
from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.errors import InvalidArgumentError
from perturbed_disentanglement.ground_truth.official_files import sha256_of
from perturbed_disentanglement.perturbation.pattern import default_strength, max_step
from perturbed_disentanglement.reference.stage import load_reference, preset_ground_truth

from .conftest import NAME, ROOT, SmokeBuild


def copy_build(original: SmokeBuild, where: Path) -> SmokeBuild:
    """A private copy (folder and work directory) that a test may change."""
    out, workdir = where / NAME, where / "work"
    shutil.copytree(original.out, out)
    shutil.copytree(original.workdir, workdir)
    return SmokeBuild(out, workdir, original.stdout)


def run_build(out: Path, workdir: Path, **options) -> tuple[build_module.BuildResult, list[str]]:
    logged: list[str] = []
    opts = BuildOptions(smoke=True, out=str(out), workdir=str(workdir), progress=False, **options)
    return build(opts, log=logged.append), logged


def shard_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in folder.glob("data/*/*")}


def smoke_grid():
    return preset_ground_truth(ground_truth("dsprites"), "smoke")


# --- the smoke build, read back --------------------------------------------------------------
@pytest.mark.slow
def test_smoke_build_cli_summary_and_layout(smoke_build: SmokeBuild) -> None:
    out = smoke_build.stdout
    assert "perturbed-dsprites (smoke build)" in out and "verified: yes" in out
    for word in ("perturbed", "noise", "original", "kappa = 64", "epsilon = 0.125", "MIG"):
        assert word in out
    files = sorted(p.relative_to(smoke_build.out).as_posix() for p in smoke_build.out.rglob("*"))
    assert "README.md" in files and "manifest.json" in files and "images/samples.png" in files
    shards = [f for f in files if f.startswith("data/") and f.endswith(".parquet")]
    assert shards == [
        f"data/{c}/train-00000-of-00001.parquet" for c in ("noise", "original", "perturbed")
    ]
    assert not [f for f in files if f.endswith(".py")]  # a loading script would break load_dataset
    manifest = read_manifest(smoke_build.out)
    assert manifest["smoke"] is True and manifest["ground_truth"]["num_images"] == 1536
    assert manifest["reference"]["source"] == "retrained"
    assert manifest["reference"]["protocol"]["preset"] == "smoke"
    assert len(manifest["reference"]["restarts"]) == 2
    assert manifest["png"]["perturbed"]["encoder"] == "perturbed_disentanglement.util.png"
    for config in manifest["configs"].values():
        for shard in config["shards"]:
            assert sha256_of(smoke_build.out / shard["path"]) == shard["sha256"]
            assert (
                pq.ParquetFile(smoke_build.out / shard["path"]).metadata.num_rows == shard["rows"]
            )
    card = (smoke_build.out / "README.md").read_text()
    assert "Smoke build" in card and "smoke" in card.split("---")[1]  # prose and YAML say so
    assert read_state(smoke_build.out)["complete"] is True
    assert not (smoke_build.out / STAGING_DIR).exists()  # the staging folder is gone


@pytest.mark.slow
def test_load_dataset_reads_every_config(smoke_build: SmokeBuild, tmp_path, monkeypatch) -> None:
    from datasets import get_dataset_config_names, load_dataset

    monkeypatch.chdir(smoke_build.out.parent)
    cache = str(tmp_path / "cache")
    assert set(get_dataset_config_names(NAME)) == {"perturbed", "noise", "original"}
    default = load_dataset(NAME, cache_dir=cache)  # the default config, like a user
    assert list(default) == ["train"]
    train = default["train"]
    builder = get_builder("dsprites")
    assert train.features == builder.features
    assert train.column_names == list(builder.features)
    assert train.num_rows == 1536
    assert train.features["shape"].names == ["square", "ellipse", "heart"]
    assert train.features["scale"].names == ["0.5", "0.6", "0.7", "0.8", "0.9", "1"]
    row = train[0]
    assert row["image"].mode == "L" and row["image"].size == (64, 64)
    kappa, epsilon = default_strength("dsprites")
    assert row["epsilon"] == pytest.approx(epsilon)

    configs = {
        c: load_dataset(NAME, c, split="train", cache_dir=cache).with_format("numpy")
        for c in ("perturbed", "noise", "original")
    }
    grid = smoke_grid()
    images = grid.all_images()[..., 0]
    for name, ds in configs.items():
        table = ds[:]
        assert table["image"].shape == (1536, 64, 64) and table["image"].dtype == np.uint8
        np.testing.assert_array_equal(table["index"], grid.parent_indices)  # grid order
        np.testing.assert_array_equal(
            table["shape"], grid.parent.factors(grid.parent_indices)[:, 0]
        )
        np.testing.assert_array_equal(table["s"], configs["perturbed"][:]["s"])
        bound = 0 if name == "original" else max_step(epsilon)
        diff = np.abs(table["image"].astype(np.int16) - images)
        assert diff.max() <= bound  # the ε-bound on the stored bytes
        if name != "original":
            assert diff.max() == bound and (diff > 0).mean() > 0.3
    assert (configs["noise"][:]["image"] != configs["perturbed"][:]["image"]).mean() > 0.3
    torch_rows = load_dataset(NAME, "noise", split="train", cache_dir=cache).with_format("torch")
    assert tuple(torch_rows[:2]["image"].shape) == (2, 1, 64, 64)


@pytest.mark.slow
def test_two_builds_give_identical_shards_and_a_rerun_reuses_them(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    second = tmp_path / "second" / NAME
    result, _ = run_build(second, mine.workdir)  # same work dir: the reference is cached
    assert result.built == {"perturbed": 1, "noise": 1, "original": 1}
    assert shard_hashes(second) == shard_hashes(smoke_build.out)
    assert (second / "manifest.json").read_bytes() == (
        smoke_build.out / "manifest.json"
    ).read_bytes()
    assert (second / "README.md").read_bytes() == (smoke_build.out / "README.md").read_bytes()
    again, _ = run_build(second, mine.workdir)  # nothing changed: every shard reused
    assert again.built == {} and again.reused == {"perturbed": 1, "noise": 1, "original": 1}
    assert again.verified == "cached"


@pytest.mark.slow
def test_a_changed_parameter_rebuilds_exactly_what_depends_on_it(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    before = shard_hashes(mine.out)
    result, _ = run_build(mine.out, mine.workdir, kappa=32.0)  # κ moves only the pattern
    assert result.built == {"perturbed": 1}
    assert result.reused == {"noise": 1, "original": 1}
    after = shard_hashes(mine.out)
    assert (
        after["data/original/train-00000-of-00001.parquet"]
        == before["data/original/train-00000-of-00001.parquet"]
    )
    assert (
        after["data/perturbed/train-00000-of-00001.parquet"]
        != before["data/perturbed/train-00000-of-00001.parquet"]
    )
    result, _ = run_build(mine.out, mine.workdir, kappa=32.0, epsilons=[0.1, 0.2])
    assert result.built == {"perturbed": 1, "noise": 1, "perturbed-eps0.2": 1, "noise-eps0.2": 1}
    assert result.reused == {"original": 1}
    manifest = read_manifest(mine.out)
    assert manifest["build"]["configs"] == [
        "perturbed",
        "noise",
        "original",
        "perturbed-eps0.2",
        "noise-eps0.2",
    ]
    assert manifest["configs"]["perturbed-eps0.2"]["max_step"] == 51
    result, _ = run_build(mine.out, mine.workdir, kappa=32.0, epsilons=[0.1], kinds=["perturbed"])
    assert sorted(p.name for p in (mine.out / "data").iterdir()) == [
        "perturbed"
    ]  # stale: ours, gone


@pytest.mark.slow
def test_an_interrupted_build_resumes_and_never_leaves_a_partial_shard(
    smoke_build, tmp_path, monkeypatch
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    out = tmp_path / "fresh" / NAME
    calls = {"n": 0}
    real_block = build_module.Context.block

    def dying_block(self, start, stop, configs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of the shards
        return real_block(self, start, stop, configs)

    monkeypatch.setattr(build_module.Context, "block", dying_block)
    with pytest.raises(KeyboardInterrupt):
        run_build(out, mine.workdir, rows_per_shard=512, jobs=1)
    stage = out / STAGING_DIR  # shards wait there, hidden from datasets, until verified
    done = sorted(p.relative_to(stage).as_posix() for p in stage.glob("data/*/*"))
    assert done  # some shards were finished …
    for rel in done:  # … and every one that is there is complete
        assert not Path(rel).name.startswith(".")
        assert pq.ParquetFile(stage / rel).metadata.num_rows == 512
    assert not (out / "data").exists() and not (out / "manifest.json").exists()
    assert "UNFINISHED BUILD" in (out / "README.md").read_text()
    # a hard kill leaves a temporary file behind: the rerun removes it
    leftover = stage / "data" / "noise" / ".train-00002-of-00003.parquet.x1y2.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"PAR1 half a shard")
    monkeypatch.setattr(build_module.Context, "block", real_block)
    result, _ = run_build(out, mine.workdir, rows_per_shard=512)
    assert sum(result.reused.values()) == len(done)
    assert sum(result.built.values()) == 9 - len(done)
    assert not leftover.exists() and result.verified == "yes" and not stage.exists()


@pytest.mark.slow
def test_a_corrupt_cache_entry_or_shard_is_detected_and_rebuilt(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    ledger = next((mine.workdir / "shards" / "noise").glob("*.json"))
    ledger.write_text("{ not json")
    shard = mine.out / "data" / "original" / "train-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result, logged = run_build(mine.out, mine.workdir)
    assert any("corrupt" in line and "noise" in line for line in logged)
    assert any(
        "original" in line and "differs from what this build wrote" in line for line in logged
    )
    assert result.built == {"noise": 1, "original": 1} and result.reused == {"perturbed": 1}
    assert shard_hashes(mine.out) == shard_hashes(smoke_build.out)


# --- the output folder: foreign files --------------------------------------------------------
@pytest.mark.slow
def test_a_foreign_folder_is_refused_and_never_deleted_from(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "README.md").write_text("my readme")
    with pytest.raises(BuildError, match="did not write.*--overwrite"):
        run_build(out, mine.workdir)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "notes.txt"]  # untouched
    result, logged = run_build(out, mine.workdir, overwrite=True)
    assert (out / "notes.txt").read_text() == "my notes"
    assert (mine.workdir / "displaced" / "1" / "README.md").read_text() == "my readme"
    assert any("moved 1 file" in line for line in logged)
    assert result.verified == "yes"
    # a file added later is foreign again: refused without --overwrite, kept with it
    (out / "data" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BuildError, match="extra.bin"):
        run_build(out, mine.workdir)
    assert (out / "data" / "extra.bin").exists() and (out / "notes.txt").exists()


def test_refusals_write_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.csv").write_text("a,b\n")
    code = main(["--smoke", "--out", str(out), "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["data.csv"]
    assert not (tmp_path / "w").exists() and not (out / STATE_FILE).exists()
    file_out = tmp_path / "a-file"
    file_out.write_text("x")
    with pytest.raises(BuildError, match="not a folder"):
        build_module.check_out(file_out, tmp_path / "w", overwrite=True)
    with pytest.raises(BuildError, match="must not contain each other"):
        build_module._check_workdir(tmp_path / "o" / "w", tmp_path / "o")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(BuildError, match="not a build work directory"):
        build_module._check_workdir(busy, tmp_path / "o2")


def test_the_default_build_without_a_shipped_reference_says_what_to_do(
    tmp_path, capsys, monkeypatch
) -> None:
    """An installation without the artifact (or a dataset not shipped yet) gets the ways out."""
    from perturbed_disentanglement.reference import stage as reference

    for module in (reference, build_module):
        monkeypatch.setattr(module, "SHIPPED_DIR", tmp_path / "references")
    out, workdir = tmp_path / "out", tmp_path / "work"
    assert main(["--out", str(out), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "shipped" in err and "--retrain --preset cpu" in err and "--reference PATH" in err
    assert "--smoke" in err and not out.exists() and not workdir.exists()


# --- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epsilons": [0.0]}, "epsilon must be in"),
        ({"epsilons": [0.003]}, "below 1/255"),
        ({"epsilons": [0.1, 0.001]}, "below 1/255"),
        ({"epsilons": [0.6]}, "epsilon must be in"),
        ({"epsilons": [0.1, 0.1]}, "distinct"),
        ({"kappa": 0.0}, "kappa"),
        ({"kappa": -3.0}, "kappa"),
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"kinds": ["perturbed", "blurred"]}, "unknown or no config"),
        ({"kinds": []}, "unknown or no config"),
        ({"preset": "huge", "retrain": True}, "unknown reference preset"),
        ({"preset": "cpu"}, "needs --retrain"),
        ({"reference": "x", "retrain": True}, "exclude each other"),
        ({"smoke": True, "preset": "cpu"}, "smoke"),
        ({"preset": "smoke", "retrain": True}, "use --smoke"),
        ({"rows_per_shard": 100}, "multiple of 64"),
        ({"jobs": 0}, "--jobs"),
        ({"seed": -1}, "--seed"),
        ({"s_rule": "best"}, "unknown --s-rule 'best'"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message) -> None:
    with pytest.raises((BuildError, InvalidArgumentError), match=message):
        resolve_options(BuildOptions(**options))


def test_defaults_come_from_the_one_place_that_holds_them() -> None:
    opts = resolve_options(BuildOptions())
    assert (opts.kappa, opts.epsilons[0]) == default_strength("dsprites")
    assert opts.out == "perturbed-dsprites" and opts.workdir == os.path.join("build", opts.out)
    assert opts.kinds == ["perturbed", "noise", "original"] and not opts.retrain
    smoke = resolve_options(BuildOptions(smoke=True, dataset="shapes3d"))
    assert smoke.out == "perturbed-shapes3d-smoke" and (smoke.retrain, smoke.preset) == (
        True,
        "smoke",
    )
    assert (smoke.kappa, smoke.epsilons[0]) == default_strength("shapes3d")


def test_cli_rejects_unknown_dataset_and_reports_a_wrong_source(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "mnist"])
    assert exc.value.code == 2
    missing = tmp_path / "nope.h5"
    where = ["--out", str(tmp_path / "o"), "--workdir", str(tmp_path / "w")]
    code = main(["--smoke", "--dataset", "shapes3d", "--source", str(missing), *where])
    assert code == 2 and "no such file" in capsys.readouterr().err
    not_shapes = tmp_path / "dsprites.npz"
    np.savez(not_shapes, imgs=np.zeros((4, 64, 64), np.uint8))
    code = main(["--smoke", "--dataset", "shapes3d", "--source", str(not_shapes), *where])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--dataset",
        "--source",
        "--eps",
        "--kappa",
        "--configs",
        "--reference",
        "--retrain",
    ):
        assert option in text
    for option in ("--preset", "--seed", "--out", "--workdir", "--overwrite", "--jobs", "--smoke"):
        assert option in text


def test_manifest_and_state_files_are_json(tmp_path) -> None:
    from builders.manifest import new_state, write_state

    write_state(tmp_path, new_state(["b", "a"]))
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["accepted"] == ["a", "b"] and state["written"] == [] and state["complete"] is False
    assert read_state(tmp_path) == state
    (tmp_path / STATE_FILE).write_text("garbage")
    assert read_state(tmp_path) is None  # unreadable: nothing counts as ours


def test_a_second_build_on_the_same_workdir_is_refused(tmp_path) -> None:
    workdir = tmp_path / "work"
    build_module._check_workdir(workdir, tmp_path / "out")
    with FileLock(str(workdir / ".lock")):
        with pytest.raises(BuildError, match="another build is running"):
            run_build(tmp_path / "out", workdir)
    assert not (tmp_path / "out").exists()


def test_the_readme_main_job_is_the_build() -> None:
    """The README's first command is `make build`, which runs `python -m generation.build` with
    its defaults (tests/test_default_build.py runs that build in full)."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make build ")
    dry = subprocess.run(["make", "-n", "build"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m generation.build --dataset dsprites" in dry.stdout


# --- review fixes ----------------------------------------------------------------------------
def test_the_build_verifies_with_its_source_and_checksum_option(tmp_path, monkeypatch) -> None:
    """An official-file build must hand its --source (and --no-verify-checksum) to the final
    verification, which otherwise cannot regenerate the rows and fails every such build."""
    from builders import verification

    seen = {}

    class Passed:
        ok = True

        def summary(self) -> str:
            return "verified"

    def fake_verify_folder(folder, **kwargs):
        seen.update(kwargs, folder=folder)
        return Passed()

    monkeypatch.setattr(verification, "verify_folder", fake_verify_folder)
    opts = BuildOptions(source="/data/dsprites.npz", verify_checksum=False, jobs=3, progress=False)
    s = np.zeros(4, np.float32)
    build_module._verify(tmp_path, s, opts, log=lambda line: None)
    assert seen["source"] == "/data/dsprites.npz" and seen["verify_checksum"] is False
    assert seen["s"] is s and seen["jobs"] == 3 and seen["folder"] == tmp_path


def test_verify_accepts_no_verify_checksum(monkeypatch, tmp_path) -> None:
    from generation import verify as verify_module

    seen = {}

    def fake_verify_folder(folder, **kwargs):
        seen.update(kwargs)
        return verify_module.VerifyReport(Path(folder), rows=False)

    monkeypatch.setattr(verify_module, "verify_folder", fake_verify_folder)
    monkeypatch.setattr(verify_module, "stamp", lambda *a: None)
    assert verify_module.main([str(tmp_path), "--source", "x.h5", "--no-verify-checksum"]) == 0
    assert seen["source"] == "x.h5" and seen["verify_checksum"] is False
    verify_module.main([str(tmp_path)])
    assert seen["verify_checksum"] is True


def test_the_default_workdir_is_named_after_the_out_folder() -> None:
    opts = resolve_options(BuildOptions(out=os.path.join("some", "where", "my-dsprites")))
    assert opts.workdir == os.path.join("build", "my-dsprites")  # as --help and verify say


def test_only_the_packages_own_temporary_files_are_removed(tmp_path) -> None:
    from builders.manifest import new_state, write_state

    out, workdir = tmp_path / "out", tmp_path / "work"
    ours = out / "data" / "noise" / ".train-00000-of-00001.parquet.ab_c12x9.tmp"
    card_tmp = out / ".README.md.k2j4h5g6.tmp"
    for path in (ours, card_tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    write_state(out, new_state())
    notes = out / "data" / ".notes.tmp"
    notes.write_text("a user's hidden file")
    assert build_module._is_temp(ours.relative_to(out).as_posix())
    assert not build_module._is_temp("data/.notes.tmp")
    assert not build_module._is_temp("images/.draft.png.tmp")
    with pytest.raises(BuildError, match="notes.tmp"):  # not ours: refused, not deleted
        build_module.prepare_out(out, workdir, overwrite=False, log=lambda line: None)
    assert notes.exists()
    build_module.prepare_out(out, workdir, overwrite=True, log=lambda line: None)
    assert not ours.exists() and not card_tmp.exists()
    kept = [p for p in tmp_path.rglob(".notes.tmp")]
    assert kept and kept[0].read_text() == "a user's hidden file"  # moved aside, never deleted


@pytest.mark.slow
def test_a_build_without_perturbed_marks_its_own_default_and_verifies(
    smoke_build, tmp_path
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    out = tmp_path / "no-perturbed" / NAME
    result, _ = run_build(out, mine.workdir, kinds=["noise", "original"])
    assert result.verified == "yes"
    manifest = read_manifest(out)
    assert manifest["build"]["default_config"] == "noise"
    card = (out / "README.md").read_text()
    assert 'noise = load_dataset("perturbed-dsprites", split="train")  # the default' in card
    assert '"perturbed"' not in card.split("## Usage")[1].split("```")[1]
    assert "--configs noise,original" in card


def test_the_card_names_the_whole_build_command(smoke_build) -> None:
    card = (smoke_build.out / "README.md").read_text()
    line = next(x for x in card.splitlines() if "python -m generation.build" in x)
    for word in ("--dataset dsprites", "--smoke", "--eps 0.125", "--kappa 64.0", "--seed 0"):
        assert word in line, line
    assert "--configs perturbed,noise,original" in line


@pytest.mark.slow
def test_a_new_package_version_rebuilds_every_shard(smoke_build, tmp_path, monkeypatch) -> None:
    mine = copy_build(smoke_build, tmp_path)
    monkeypatch.setattr(build_module, "__version__", "999.0.0")
    result, _ = run_build(mine.out, mine.workdir, verify=False)
    assert result.built == {"perturbed": 1, "noise": 1, "original": 1} and result.reused == {}


@pytest.mark.slow
def test_an_s_rule_recomputes_s_records_its_entanglement_and_the_card_says_so(
    smoke_build, tmp_path
) -> None:
    """The smoke build retrains its reference: with --s-rule balanced-rotation that reference
    reads s off its chosen restart by the rule, and the manifest, the card and the rebuild
    command follow (a shipped reference with another rule: Reference.with_rule, in
    test_reference)."""
    default = json.loads((smoke_build.out / "manifest.json").read_text())["reference"]
    assert default["s_rule"]["rule"] == "paper" and "s_entanglement" in default
    out, workdir = tmp_path / NAME, tmp_path / "work"
    result, logged = run_build(out, workdir, s_rule="balanced-rotation")
    ref = result.manifest["reference"]
    assert ref["s_rule"]["rule"] == "balanced-rotation" and len(ref["s_rule"]["latents"]) == 2
    assert ref["s_sha256"] != default["s_sha256"]  # another s ...
    fractions = ref["s_entanglement"]["variance_fraction"]
    assert max(fractions.values()) <= max(default["s_entanglement"]["variance_fraction"].values())
    assert any("s's variance explained by each factor" in x for x in logged)
    card = (out / "README.md").read_text()
    assert "`balanced-rotation`" in card and "How entangled `s` is" in card
    assert "--s-rule balanced-rotation" in card
    again, _ = run_build(out, workdir, s_rule="balanced-rotation")  # resumed, the same s
    assert again.manifest["reference"]["s_sha256"] == ref["s_sha256"]


def test_an_s_computed_in_the_build_is_cached_in_the_workdir(tmp_path) -> None:
    """A rule other than the reference's (or an official file) re-encodes the grid once; a rerun
    reads the cached artifact, and a damaged one is recomputed."""
    grid = ground_truth("dsprites")
    ref = load_reference("dsprites", grid)
    calls: list[int] = []

    def make():
        calls.append(1)
        return ref

    logged: list[str] = []
    first = build_module._cached(tmp_path / "c", grid, make, "why", logged.append)
    again = build_module._cached(tmp_path / "c", grid, make, "why", logged.append)
    assert len(calls) == 1 and logged == ["s: why"]
    np.testing.assert_array_equal(first.s, again.s)
    (tmp_path / "c" / "s.npy").write_bytes(b"damaged")
    build_module._cached(tmp_path / "c", grid, make, "why", logged.append)
    assert len(calls) == 2 and "unusable" in logged[1]
