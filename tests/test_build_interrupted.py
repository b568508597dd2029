"""Issue 18 item 1: a killed, failed or half-committed build is never a dataset.

The build stages everything in ``OUT/.unfinished-build/`` (hidden from ``datasets``) under the card
of an unfinished build, which ``load_dataset`` refuses with a message naming the command that
finishes it; the verified folder is moved into place by renames, the card last. Every test starts
from a copy of the session's smoke build (its work directory holds the trained smoke reference),
so a rebuild takes seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders.manifest import STAGING_DIR, read_state
from builders.publish import PublishError, plan_upload
from generation import build as build_module
from generation import verify as verify_cli
from generation.build import KILL_ENV, VerificationFailed, build_command, resolve_options

from .conftest import NAME, ROOT
from .test_build import copy_build, run_build, shard_hashes

UNFINISHED = (
    "Expected configs to be a list, but got 'UNFINISHED BUILD: this folder is not a dataset"
)


class Killed(BaseException):
    """What the kill hook raises in-process (a SIGKILL would end pytest)."""


def kill_at(monkeypatch, where: str, n: int) -> None:
    def hook(stage: str, count: int) -> None:
        if (stage, count) == (where, n):
            raise Killed(f"{stage}:{count}")

    monkeypatch.setattr(build_module, "_kill_point", hook)


def assert_not_loadable(out: Path, cache: Path) -> str:
    """load_dataset refuses the folder, for the default config and for ``noise``; returns the
    message."""
    from datasets import load_dataset

    messages = []
    for config in (None, "noise"):
        with pytest.raises(ValueError, match="UNFINISHED BUILD") as exc:
            load_dataset(str(out), config, cache_dir=str(cache))
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    return messages[0]


def assert_verify_says_unfinished(out: Path, capsys) -> None:
    assert verify_cli.main([str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "unfinished build, not a dataset yet" in text and "python -m generation.build" in text
    with pytest.raises(PublishError, match="unfinished build"):
        plan_upload(out, "me/x", progress=False, log=lambda line: None)


def staged(out: Path) -> list[str]:
    """The finished shards in the staging folder (no temporary files)."""
    stage = out / STAGING_DIR
    return sorted(p.relative_to(stage).as_posix() for p in stage.glob("data/*/train-*.parquet"))


# --- case 1: a build killed between shards ---------------------------------------------------
@pytest.mark.slow
def test_a_build_killed_after_its_first_shard_is_refused_then_finished_by_the_rerun(
    smoke_build, tmp_path, capsys
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    out = tmp_path / "killed" / NAME
    args = ["--smoke", "--out", str(out), "--workdir", str(mine.workdir), "--no-progress"]
    proc = subprocess.run(  # the hook SIGKILLs the build right after its first finished shard
        [sys.executable, "-m", "generation.build", *args],
        cwd=ROOT,
        env={**os.environ, KILL_ENV: "shards:1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(staged(out)) == 1  # one finished shard; the two others were being written:
    assert len(list((out / STAGING_DIR).glob("data/*/.train-*.tmp"))) == 2  # their temp files
    assert not (out / "data").exists() and not (out / "manifest.json").exists()
    message = assert_not_loadable(out, tmp_path / "cache")
    assert message.startswith(UNFINISHED), message
    opts = resolve_options(build_module.parse_args(args))
    assert build_command(opts) in message  # the command that finishes it, as the user typed it
    assert_verify_says_unfinished(out, capsys)

    result, _ = run_build(out, mine.workdir)
    assert sum(result.reused.values()) == 1 and sum(result.built.values()) == 2
    assert result.verified == "yes"
    assert shard_hashes(out) == shard_hashes(smoke_build.out)  # byte-identical to one go
    assert not (out / STAGING_DIR).exists() and read_state(out)["complete"] is True
    from datasets import load_dataset

    assert load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache")).num_rows == 1536


# --- case 2: a rebuild with other parameters, killed midway ----------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("owner", ["ours", "foreign"])
def test_a_killed_rebuild_with_other_parameters_never_mixes_old_and_new_shards(
    smoke_build, tmp_path, monkeypatch, capsys, owner
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    old = shard_hashes(mine.out)
    if owner == "foreign":  # the same complete dataset, written by someone else
        (mine.out / ".perturbed-disentanglement-build.json").unlink()
    new = {"kappa": 32.0, "epsilons": [0.1], "rows_per_shard": 512, "overwrite": True}
    kill_at(monkeypatch, "shards", 2)
    with pytest.raises(Killed):
        run_build(mine.out, mine.workdir, jobs=1, **new)
    assert len(staged(mine.out)) == 2  # the new shards wait in the staging folder …
    if owner == "ours":  # … the old ones are untouched …
        assert shard_hashes(mine.out) == old
    else:  # … or moved aside, never deleted
        assert shard_hashes(mine.out) == {}
        assert shard_hashes(mine.workdir / "displaced" / "1") == old
    assert_not_loadable(mine.out, tmp_path / "cache")  # … and the folder is refused
    assert_verify_says_unfinished(mine.out, capsys)

    monkeypatch.setattr(build_module, "_kill_point", lambda *a: None)
    result, _ = run_build(mine.out, mine.workdir, **new)
    assert sum(result.reused.values()) == 2 and sum(result.built.values()) == 7
    files = shard_hashes(mine.out)
    assert len(files) == 9 and not set(files.values()) & set(old.values())  # only the new build
    assert result.verified == "yes" and not (mine.out / STAGING_DIR).exists()


# --- a kill during the moves -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_a_kill_during_the_commit_leaves_an_unfinished_folder_the_rerun_completes(
    smoke_build, tmp_path, monkeypatch, step
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    old = shard_hashes(mine.out)
    one_go, _ = run_build(tmp_path / "one-go" / NAME, mine.workdir, kappa=32.0)
    new = shard_hashes(one_go.out)
    kill_at(monkeypatch, "commit", step)
    with pytest.raises(Killed):
        run_build(mine.out, mine.workdir, kappa=32.0)  # rebuilds perturbed only
    data = shard_hashes(mine.out)
    # data/ is never a mix: the old build's shards (those not reused yet), or the new build's
    assert data == new if step >= 3 else data.items() <= old.items()
    assert_not_loadable(mine.out, tmp_path / "cache")  # the card refuses the folder throughout

    monkeypatch.setattr(build_module, "_kill_point", lambda *a: None)
    result, _ = run_build(mine.out, mine.workdir, kappa=32.0)
    assert result.built == {} and result.verified == "cached"  # verified before the moves
    assert shard_hashes(mine.out) == new
    assert not (mine.out / STAGING_DIR).exists() and read_state(mine.out)["complete"] is True


# --- case 3: a build that does not verify ----------------------------------------------------
@pytest.mark.slow
def test_a_build_that_fails_verification_is_never_moved_into_place(
    smoke_build, tmp_path, monkeypatch, capsys
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    out = tmp_path / "bad" / NAME
    real_verify = build_module._verify

    def corrupting_verify(folder, s, opts, log):
        shard = folder / "data" / "noise" / "train-00000-of-00001.parquet"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        return real_verify(folder, s, opts, log)

    monkeypatch.setattr(build_module, "_verify", corrupting_verify)
    with pytest.raises(VerificationFailed, match="sha256"):
        run_build(out, mine.workdir)
    assert len(staged(out)) == 3 and not (out / "data").exists()
    assert read_state(out)["verified_manifest"] is None
    assert_not_loadable(out, tmp_path / "cache")
    assert_verify_says_unfinished(out, capsys)
    code = build_module.main(
        ["--smoke", "--out", str(out), "--workdir", str(mine.workdir), "--no-progress"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "does not verify, so it was not moved into place" in err and "noise" in err

    monkeypatch.setattr(build_module, "_verify", real_verify)
    result, logged = run_build(out, mine.workdir)  # the corrupt shard is found and rebuilt
    assert any("differs from what this build wrote" in line for line in logged)
    assert result.built == {"noise": 1} and result.verified == "yes"
    assert shard_hashes(out) == shard_hashes(smoke_build.out)


def test_the_unfinished_card_quotes_any_command_safely(tmp_path) -> None:
    """The card's YAML holds the command as a JSON string: quotes, colons and backslashes in
    paths keep the card parseable, and the verifier reads the message back."""
    from huggingface_hub import DatasetCard

    from builders.manifest import unfinished, unfinished_card, unfinished_message

    command = "python -m generation.build --out \"a: b\\c\" --workdir 'x #y'"
    card = unfinished_card(NAME, command)
    assert DatasetCard(card).data["configs"] == unfinished_message(NAME, command)
    (tmp_path / "README.md").write_text(card)
    assert unfinished(tmp_path) == unfinished_message(NAME, command)
    (tmp_path / "README.md").write_text("---\nconfigs: []\n---\n# a dataset\n")
    assert unfinished(tmp_path) is None
    (tmp_path / "README.md").unlink()
    assert unfinished(tmp_path) is None
    (tmp_path / STAGING_DIR).mkdir()
    assert "UNFINISHED BUILD" in unfinished(tmp_path)  # no card, a staging folder: unfinished
