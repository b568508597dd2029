"""The preview CLI: it writes a PNG, explains itself and fails cleanly."""

import numpy as np
import pytest
from PIL import Image

from generation import preview
from perturbed_disentanglement import ArrayGroundTruth, Factor


def test_write_preview_png(tmp_path):
    rng = np.random.default_rng(0)
    gt = ArrayGroundTruth(
        "toy",
        [Factor("shape", np.arange(3.0), ("a", "b", "c")), Factor("x", np.linspace(0, 1, 12))],
        rng.integers(0, 256, (36, 64, 64, 1), dtype=np.uint8),
    )
    out = preview.write_preview(gt, tmp_path / "p.png", columns=5)
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert not list(tmp_path.glob("*.tmp*"))


def test_traversal_rows_vary_one_factor():
    gt = ArrayGroundTruth(
        "toy",
        [Factor("a", np.arange(3.0)), Factor("b", np.arange(20.0))],
        np.zeros((60, 2, 2, 1), np.uint8),
    )
    rows = preview.traversal_indices(gt, np.array([1, 5]), columns=10)
    f0, f1 = gt.factors(rows[0]), gt.factors(rows[1])
    assert (f0[:, 1] == 5).all() and list(f0[:, 0]) == [0, 1, 2]
    assert (f1[:, 0] == 1).all() and len(f1) == 10 and f1[0, 1] == 0 and f1[-1, 1] == 19


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        preview.main(["--help"])
    assert exc.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_cli_missing_file_is_a_clean_error(tmp_path, capsys):
    code = preview.main(["--path", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "p.png")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_make_preview_runs_as_the_readme_says(tmp_path):
    """`make preview` as the README gives it: the whole procedural grid, then the figure."""
    import subprocess
    import sys

    out = tmp_path / "preview.png"
    proc = subprocess.run(
        [sys.executable, "-m", "generation.preview", "--dataset", "dsprites", "--all"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ProceduralDSprites" in proc.stdout and out.exists()
    assert "whole grid: 737,280 images [64, 64, 1] uint8, 2.81 GiB" in proc.stdout
    with Image.open(out) as im:
        assert im.size[0] > 500
