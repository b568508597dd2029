"""builders.verification and its command line generation.verify: a clean build passes; a flipped
byte, a wrong s, a wrong label, a stray file, a stale card are each reported precisely (config,
shard, row, what differs)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builders import get_builder
from builders.base import ShardWriter
from builders.manifest import STATE_FILE, read_state
from generation.verify import main, verify_folder
from tests.test_build import copy_build

SHARD = "data/perturbed/train-00000-of-00001.parquet"


def rewrite_shard(path, change) -> None:
    """Rewrite a shard with ``change(columns)`` applied (a valid Parquet file, other content)."""
    table = pq.read_table(path)
    columns = {name: table.column(name) for name in table.column_names}
    change(columns)
    schema = get_builder("dsprites").schema
    writer = ShardWriter(path, schema)
    writer.write(pa.Table.from_pydict(columns, schema=schema))
    writer.commit()


def problems(report, check: str) -> list[str]:
    return [str(p) for p in report.problems if p.check == check]


@pytest.mark.slow
def test_a_clean_build_verifies_from_its_workdir(smoke_build, capsys) -> None:
    report = verify_folder(smoke_build.out, workdir=str(smoke_build.workdir), progress=False)
    assert report.ok, report.format()
    assert report.rows_checked == {"perturbed": 1536, "noise": 1536, "original": 1536}
    # without the build's s there is nothing to check the rows against: said, not passed
    report = verify_folder(smoke_build.out, progress=False)
    assert not report.ok and "--workdir" in report.format()


@pytest.mark.slow
def test_a_flipped_byte_in_a_shard_is_caught(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    path = mine.out / SHARD
    row = 700
    png = pq.read_table(path).column("image")[row]["bytes"].as_py()
    data = bytearray(path.read_bytes())
    offset = bytes(data).index(png) + len(png) // 2  # inside that row's compressed pixels
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_folder(mine.out, workdir=str(mine.workdir), progress=False)
    assert not report.ok
    assert problems(report, "sha256") and SHARD in problems(report, "sha256")[0]
    where = [p for p in report.problems if p.check in ("image", "epsilon-bound")]
    assert where and f"perturbed {SHARD} row {row} " in where[0].where, report.format()
    code = main([str(mine.out), "--workdir", str(mine.workdir), "--no-progress"])
    assert code == 1


@pytest.mark.slow
def test_a_wrong_s_a_wrong_label_and_a_wrong_pixel_are_located(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)

    def change(columns):
        s = columns["s"].to_numpy().copy()
        s[17] += np.float32(1e-3)
        columns["s"] = pa.array(s)
        shape = columns["shape"].to_numpy().copy()
        shape[33] = (shape[33] + 1) % 3
        columns["shape"] = pa.array(shape)

    rewrite_shard(mine.out / SHARD, change)
    noise = mine.out / "data/noise/train-00000-of-00001.parquet"

    def change_pixel(columns):
        from perturbed_disentanglement.util.png import PngEncoder, decode_png

        blobs = columns["image"].combine_chunks().field("bytes").to_pylist()
        img = decode_png(blobs[1000]).copy()
        img[5, 9, 0] ^= 0x80
        blobs[1000] = PngEncoder().encode(img[None])[0]
        columns["image"] = pa.StructArray.from_arrays(
            [pa.array(blobs, pa.binary()), pa.nulls(len(blobs), pa.string())],
            names=["bytes", "path"],
        )

    rewrite_shard(noise, change_pixel)
    report = verify_folder(mine.out, workdir=str(mine.workdir), progress=False)
    text = report.format()
    assert any("row 17 " in p and "s = " in p for p in problems(report, "s")), text
    assert any("row 33 " in p and "shape = " in p for p in problems(report, "factors")), text
    bound = problems(report, "epsilon-bound")
    assert bound and "noise" in bound[0] and "row 1000 " in bound[0] and "(row 5, col 9" in bound[0]
    assert len(problems(report, "sha256")) == 2


@pytest.mark.slow
def test_files_card_and_strays_are_checked(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)
    (mine.out / "data" / "perturbed" / "train-extra.parquet").write_bytes(b"PAR1")
    (mine.out / "notes.txt").write_text("mine")
    card = mine.out / "README.md"
    card.write_text(card.read_text().replace("manifest-sha256: ", "manifest-sha256: 0"))
    manifest = json.loads((mine.out / "manifest.json").read_text())
    report = verify_folder(mine.out, rows=False)
    assert problems(report, "stray") and "train-extra.parquet" in problems(report, "stray")[0]
    assert any("not rendered from this manifest" in p for p in problems(report, "card"))
    assert any("notes.txt" in note for note in report.notes)
    (mine.out / SHARD).unlink()
    report = verify_folder(mine.out, workdir=str(mine.workdir), progress=False)
    assert any(SHARD in p and "missing" in p for p in problems(report, "file"))
    assert manifest["configs"]["perturbed"]["shards"][0]["path"] == SHARD
    (mine.out / "manifest.json").unlink()
    report = verify_folder(mine.out)
    assert not report.ok and "not a finished build" in report.format()


@pytest.mark.slow
def test_the_cli_stamps_a_passed_verification(smoke_build, tmp_path, capsys) -> None:
    mine = copy_build(smoke_build, tmp_path)
    state = read_state(mine.out)
    state["verified_manifest"] = None
    (mine.out / STATE_FILE).write_text(json.dumps(state))
    assert main([str(mine.out), "--workdir", str(mine.workdir), "--no-progress"]) == 0
    assert "verified (4,608 rows in 3 config(s))" in capsys.readouterr().out
    assert read_state(mine.out)["verified_manifest"] is not None


def edit_manifest(folder, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _more_rows(m) -> None:
    m["configs"]["perturbed"]["shards"][0]["rows"] += 1024


def _no_first_row(m) -> None:
    del m["configs"]["noise"]["shards"][0]["first_row"]


def _no_row_groups(m) -> None:
    m["parquet"]["row_group_rows"] = 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "check", "message"),
    [
        (_more_rows, "rows", "the manifest says"),
        (_no_first_row, "manifest", "first_row must be a non-negative integer"),
        (_no_row_groups, "manifest", "row_group_rows must be a positive integer"),
    ],
)
def test_an_inconsistent_manifest_is_reported_never_a_traceback(
    smoke_build, tmp_path, change, check, message
) -> None:
    mine = copy_build(smoke_build, tmp_path)
    edit_manifest(mine.out, change)
    report = verify_folder(mine.out, workdir=str(mine.workdir), progress=False)
    assert not report.ok and any(message in p for p in problems(report, check)), report.format()


@pytest.mark.slow
def test_s_must_be_the_references_s_not_only_the_builds_own(smoke_build, tmp_path) -> None:
    mine = copy_build(smoke_build, tmp_path)

    def other_reference(m) -> None:
        m["reference"]["s_sha256"] = "0" * 64

    edit_manifest(mine.out, other_reference)
    report = verify_folder(mine.out, workdir=str(mine.workdir), progress=False)
    assert any("is not the reference's s" in p for p in problems(report, "s")), report.format()


def test_the_shipped_reference_is_tried_first_and_must_agree(monkeypatch) -> None:
    from builders import verification as verify_module
    from perturbed_disentanglement.reference.stage import s_sha256

    built = np.arange(6, dtype=np.float32)
    shipped = built + 1
    manifest = {
        "dataset": "dsprites",
        "s": {"sha256": s_sha256(built)},
        "reference": {"source": "shipped", "recomputed": False},
    }

    class Ref:
        s = shipped

    monkeypatch.setattr(verify_module, "load_reference", lambda *a, **k: Ref())
    s, why = verify_module._resolve_s(manifest, built, None, None)
    assert s is None and "not the shipped reference's s" in why  # no fallback to the build's s
    Ref.s = built.copy()
    s, origin = verify_module._resolve_s(manifest, None, None, None)
    assert origin == "the shipped reference" and np.array_equal(s, built)


def test_the_cli_is_a_thin_layer_over_the_library() -> None:
    """The checks live in the builders package (publish imports no command-line module)."""
    import builders.publish
    from builders import verification
    from generation import verify as cli

    assert cli.verify_folder is verification.verify_folder and cli.stamp is verification.stamp
    assert builders.publish.verify_folder is verification.verify_folder
