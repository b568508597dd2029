"""Choosing (κ, ε): the sampled Fig. 4 quantities against the exact grid scan, the rule, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perturbed_disentanglement.errors import InvalidArgumentError
from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor
from perturbed_disentanglement.metrics import fig4_quantities
from perturbed_disentanglement.perturbation.pattern import (
    Pattern,
    default_strength,
    pattern_perturbation,
)
from perturbed_disentanglement.reference.strength import (
    Fig4Point,
    choose,
    draw_pairs,
    squared_distances,
    sweep,
)

ROOT = Path(__file__).resolve().parents[1]
SIZES = (6, 3, 4)  # column, size, row


def _square(col: int, size: int, row: int) -> np.ndarray:
    img = np.zeros((64, 64, 1), np.uint8)
    r, c, h = 8 + 8 * row, 6 + 9 * col, 6 + 5 * size
    img[r : r + h, c : c + h] = 255
    return img


@pytest.fixture(scope="module")
def gt() -> ArrayGroundTruth:
    images = np.stack([_square(*w) for w in np.ndindex(*SIZES)])
    specs = [Factor(n, np.arange(s, dtype=float)) for n, s in zip(("col", "size", "row"), SIZES)]
    return ArrayGroundTruth("toy", specs, images)


def test_squared_distances_by_hand() -> None:
    a = np.zeros((2, 4, 4, 1), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    b[1, :2, :2] = 51
    np.testing.assert_allclose(squared_distances(a, b), [1.0, 4 * 0.2**2])


def test_sampled_quantities_match_the_exact_grid_scan(gt: ArrayGroundTruth) -> None:
    """As built, the sampled factor numbers converge to fig4_quantities' exact ones.

    The explained variance is a difference of two means of squared distances (standard error
    about 0.35 here, 40,000 pairs): the bound is three of them.
    """
    rng = np.random.default_rng(1)
    s_values = rng.standard_normal(len(gt))
    pattern, epsilon = Pattern(seed=3, kappa=8), 0.2
    exact = fig4_quantities(gt, perturb=pattern_perturbation(pattern, epsilon), s_values=s_values)
    pairs = draw_pairs(gt, "as_built", num_pairs=40_000, s_values=s_values, seed=0)
    (point,) = sweep(
        gt, pairs, "as_built", kappas=[8], epsilons=[epsilon], pattern_seed=3, progress=False
    )
    for name in ("col", "size", "row", "s"):
        want = exact.expansiveness[name].alpha
        assert point.expansiveness[name] == pytest.approx(want, rel=0.02), name
    for name in ("col", "size", "row"):
        want = exact.explained_variance[name]
        assert point.explained_variance[name] == pytest.approx(want, abs=1.0), name
    assert point.total_variance == pytest.approx(exact.total_variance, rel=0.02)


def test_isolated_factor_steps_do_not_move_the_pattern(gt: ArrayGroundTruth) -> None:
    pairs = draw_pairs(gt, "isolated", num_pairs=2_000, seed=0)
    local = {p.name: p for p in pairs if p.quantity == "local"}
    for name in ("col", "size", "row"):
        np.testing.assert_array_equal(local[name].s_a, local[name].s_b)
    assert np.all(np.abs(local["s"].s_a) <= np.sqrt(3))
    (point,) = sweep(gt, pairs, "isolated", kappas=[16], epsilons=[0.1], progress=False)
    (faint,) = sweep(gt, pairs, "isolated", kappas=[16], epsilons=[0.001], progress=False)
    # ε = 0.001 moves no byte (255·ε < 1): s is invisible, the factors are the plain grid's
    assert faint.expansiveness["s"] == 0.0
    exact = fig4_quantities(gt)
    for name in ("col", "size", "row"):
        assert faint.expansiveness[name] == pytest.approx(exact.expansiveness[name].alpha, rel=0.02)
    assert point.expansiveness["s"] > 0


def _point(eps: float, kappa: float, alpha_s: float, ev_s: float) -> Fig4Point:
    return Fig4Point(
        "isolated", kappa, eps, {"a": 10.0, "b": 20.0, "s": alpha_s}, {"a": 5.0, "s": ev_s}, 50.0
    )


def test_choose_takes_the_smallest_epsilon_meeting_the_criterion() -> None:
    points = [
        _point(0.05, 8, 15.0, 1.0),  # not locally dominant
        _point(0.1, 8, 21.0, 2.0),  # meets
        _point(0.1, 32, 30.0, 2.0),  # meets, more dominant: wins the tie at ε = 0.1
        _point(0.2, 32, 60.0, 4.0),  # meets, but a larger ε
        _point(0.3, 32, 90.0, 9.0),  # globally dominant
    ]
    chosen, met = choose(points)
    assert met and (chosen.kappa, chosen.epsilon) == (32, 0.1)
    assert chosen.dominance() == (1.5, 0.4)


def test_choose_falls_back_to_the_closest() -> None:
    points = [_point(0.1, 8, 12.0, 1.0), _point(0.2, 8, 18.0, 3.0), _point(0.3, 8, 40.0, 9.0)]
    chosen, met = choose(points)
    assert not met and chosen.epsilon == 0.2  # the most locally dominant not globally dominant
    with pytest.raises(InvalidArgumentError):
        choose([])


def test_draw_pairs_rejects_bad_input(gt: ArrayGroundTruth) -> None:
    with pytest.raises(InvalidArgumentError, match="variant"):
        draw_pairs(gt, "built")
    with pytest.raises(InvalidArgumentError, match="needs s_values"):
        draw_pairs(gt, "as_built")
    with pytest.raises(InvalidArgumentError, match="one per grid point"):
        draw_pairs(gt, "as_built", s_values=np.zeros(5))
    with pytest.raises(InvalidArgumentError, match="num_pairs"):
        draw_pairs(gt, "isolated", num_pairs=1)
    with pytest.raises(InvalidArgumentError):
        sweep(gt, draw_pairs(gt, "isolated", num_pairs=10), "isolated", epsilons=[0.7])


def test_cli_writes_the_table_json_and_figure(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "generation.choose_strength", "--reference", "none",
        "--pairs", "60", "--kappas", "8,64", "--epsilons", "0.1,0.125", "--out-dir", str(tmp_path),
        "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "chosen κ =" in done.stdout and "| ε | α_s |" in done.stdout
    result = json.loads((tmp_path / "fig4_dsprites.json").read_text())
    assert len(result["points"]) == 4 and result["pairs_per_quantity"] == 60
    assert {"kappa", "epsilon", "meets_criterion"} <= set(result["choice"])
    kappa, epsilon = default_strength("dsprites")
    assert result["shipped"] == {"kappa": kappa, "epsilon": epsilon}
    png = (tmp_path / "fig4_dsprites.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([*cmd[:3], "--kappas", "x"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "comma-separated numbers" in bad.stderr


def test_replot_redraws_from_the_json_and_refuses_what_does_not_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figure redrawn from the JSON is the figure drawn from the measurement (the points
    round-trip); no JSON, or a choice its points do not give, is refused."""
    from generation import choose_strength

    args = ["--dataset", "dsprites", "--out-dir", str(tmp_path), "--no-progress"]
    measure = [
        "--reference",
        "none",
        "--pairs",
        "60",
        "--kappas",
        "8,64",
        "--epsilons",
        "0.1,0.125",
    ]
    assert choose_strength.main(["--replot", *args]) == 2
    assert "measure first" in capsys.readouterr().err
    assert choose_strength.main([*measure, *args]) == 0
    png, path = (tmp_path / "fig4_dsprites.png").read_bytes(), tmp_path / "fig4_dsprites.json"
    (tmp_path / "fig4_dsprites.png").unlink()
    assert choose_strength.main(["--replot", *args]) == 0
    assert (tmp_path / "fig4_dsprites.png").read_bytes() == png
    result = json.loads(path.read_text())
    result["choice"]["epsilon"] = 0.3
    path.write_text(json.dumps(result))
    assert choose_strength.main(["--replot", *args]) == 2
    assert "does not follow from its points" in capsys.readouterr().err


def test_the_defaults_are_the_committed_measurements() -> None:
    """DEFAULT_STRENGTH holds what `generation.choose_strength` chose (docs/fig4_<dataset>.json),
    unless a screen of trained models chose it (docs/results/<dataset>-screen/choice.json, checked
    against its records in tests/test_screening.py)."""
    measured = sorted(ROOT.glob("docs/fig4_*.json"))
    assert ROOT / "docs" / "fig4_dsprites.json" in measured
    for path in measured:
        record = json.loads(path.read_text())
        if (ROOT / "docs" / "results" / f"{record['dataset']}-screen" / "choice.json").exists():
            continue
        choice = record["choice"]
        assert default_strength(record["dataset"]) == (choice["kappa"], choice["epsilon"]), path
        assert record["pairs_per_quantity"] >= 10_000  # the README's "10,000 pairs per quantity"
