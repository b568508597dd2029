"""builders.publish: dry run, refusals (bad repo id, unverified folder, no token) and a mocked
upload of exactly the manifest's files; the token is never printed."""

from __future__ import annotations

import json

import pytest

from builders import publish as publish_module
from builders.manifest import STATE_FILE, listed_files, read_manifest, read_state
from builders.publish import PublishError, main, plan_upload, publish
from tests.test_build import copy_build

TOKEN = "hf_SECRETsecretSECRETsecret0123456789"


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.mark.slow
def test_dry_run_lists_the_manifest_files_and_uploads_nothing(
    smoke_build, capsys, monkeypatch
) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not reach the Hub")

    monkeypatch.setattr(publish_module, "publish", no_network)
    assert main([str(smoke_build.out), "--repo-id", "me/perturbed-dsprites", "--dry-run"]) == 0
    out = capsys.readouterr().out
    manifest = read_manifest(smoke_build.out)
    for rel in listed_files(manifest):
        assert rel in out
    assert "6 file(s)" in out and "MB" in out and "dry run: nothing uploaded" in out


@pytest.mark.slow
def test_upload_sends_exactly_the_listed_files_and_never_prints_the_token(
    smoke_build,
    tmp_path,
    capsys,
    monkeypatch,
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    (mine.out / "notes.txt").write_text("private notes")
    plan = plan_upload(mine.out, "me/perturbed-dsprites", log=print)
    api = FakeApi()
    url = publish(plan, token=TOKEN, api=api, private=True)
    assert url.endswith("me/perturbed-dsprites")
    (name, create), (_, upload) = api.calls
    assert name == "create_repo" and create["repo_type"] == "dataset" and create["private"] is True
    assert create["exist_ok"] is True
    assert upload["repo_type"] == "dataset" and upload["folder_path"] == str(mine.out)
    assert sorted(upload["allow_patterns"]) == sorted(listed_files(read_manifest(mine.out)))
    # a republish removes the shards and figure of an earlier upload that this one lacks
    assert upload["delete_patterns"] == ["data/**", "images/**"]
    assert (
        "notes.txt" not in upload["allow_patterns"] and STATE_FILE not in upload["allow_patterns"]
    )
    # through the CLI, with the token from the environment: it appears nowhere in the output
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(
        publish_module, "publish", lambda plan, **kw: publish(plan, api=FakeApi(), **kw)
    )
    assert main([str(mine.out), "--repo-id", "me/perturbed-dsprites"]) == 0
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err and "published:" in captured.out


@pytest.mark.slow
def test_publishing_refuses_an_unverified_folder_a_bad_id_and_a_missing_token(
    smoke_build,
    tmp_path,
    monkeypatch,
    capsys,
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    with pytest.raises(PublishError, match="ORG/NAME"):
        plan_upload(mine.out, "no-slash")
    plan = plan_upload(mine.out, "me/x")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PublishError, match="no Hugging Face token.*nothing was uploaded"):
        publish(plan, api=FakeApi())
    # a shard that no longer matches the manifest: refused before any network call
    shard = mine.out / "data" / "noise" / "train-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main([str(mine.out), "--repo-id", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and "sha256" in err and "noise" in err


@pytest.mark.slow
def test_a_folder_never_fully_verified_is_checked_row_by_row_first(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    state = read_state(mine.out)
    state["verified_manifest"] = None
    (mine.out / STATE_FILE).write_text(json.dumps(state))
    logged: list[str] = []
    with pytest.raises(PublishError, match="cannot find the s"):  # rows need the build's s
        plan_upload(mine.out, "me/x", progress=False, log=logged.append)
    plan = plan_upload(
        mine.out, "me/x", workdir=str(mine.workdir), progress=False, log=logged.append
    )
    assert any("checking every row" in line for line in logged)
    assert read_state(mine.out)["verified_manifest"] == plan.manifest_sha256


def test_publish_passes_no_verify_checksum_to_the_row_check(monkeypatch, capsys) -> None:
    seen = {}

    def fake_plan_upload(folder, repo_id, **kwargs):
        seen.update(kwargs)
        raise PublishError("stop here")

    monkeypatch.setattr(publish_module, "plan_upload", fake_plan_upload)
    argv = ["f", "--repo-id", "me/x", "--source", "d.npz", "--no-verify-checksum", "--dry-run"]
    assert main(argv) == 2
    assert seen["source"] == "d.npz" and seen["verify_checksum"] is False
