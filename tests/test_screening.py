"""benchmark.screening: the seed table and the choice of a default, on constructed records, and
the committed choices recomputed from the committed records."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from perturbed_disentanglement.benchmark import screening
from perturbed_disentanglement.perturbation.pattern import default_strength
from perturbed_disentanglement.reference.stage import load_reference

from .conftest import ROOT


def _record(
    config: str, seed: int, mig_value: float, *, step: int = 100, kappa: float = 1.0
) -> dict:
    perturbed = config == "perturbed"
    return {
        "dataset": "shapes3d",
        "config": config,
        "rule": "balanced-rotation",
        "kappa": kappa if perturbed else None,
        "epsilon": 0.0 if config == "original" else 0.25,
        "beta": 32.0,
        "build_seed": 0,
        "seed": seed,
        "step": step,
        "mig": mig_value,
        "mig_per_factor": [mig_value, 3 * mig_value, 0.5],  # s's factors: a and b
        "s_entanglement": {"variance_fraction": {"a": 0.6, "b": 0.35, "c": 0.05}},
        "mutual_information": [[mig_value, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]],
        "uptake": 0.5 if perturbed else None,
        "name": f"{config}-k{kappa:g}-seed{seed}",
        "s_alignment": {
            "least_noise": 0,
            "least_noise_nmi": 0.2,
            "best": 0,
            "best_nmi": 0.2,
            "follows_s": perturbed and seed == 0,
        },
    }


def test_the_seed_comparison_is_the_means_ratio_and_welchs_p_against_original() -> None:
    original = [0.40, 0.38, 0.42]
    perturbed = [0.20, 0.22, 0.19]
    records = [_record("original", k, v) for k, v in enumerate(original)]
    records += [_record("perturbed", k, v) for k, v in enumerate(perturbed)]
    records += [_record("noise", 0, 0.44)]  # one seed: a ratio, no sd and no p
    records += [_record("perturbed", 0, 0.3, step=50), _record("perturbed", 1, 0.3, step=50)]
    table = screening.seed_comparison(records)
    rows = table.splitlines()[2:]
    assert len(rows) == 3  # original, perturbed, noise at step 100; step 50 has no original
    noise = [
        c.strip() for c in next(r for r in rows if r.startswith("| noise")).strip("|").split("|")
    ]
    assert noise[3] == "**0.440 (1)**" and noise[5] == "1.10×" and noise[6] == "–"
    row = next(r for r in rows if r.startswith("| perturbed"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ratio = sum(perturbed) / sum(original)
    p = stats.ttest_ind(perturbed, original, equal_var=False).pvalue
    assert cells[2] == "0, 1, 2" and cells[5] == f"{ratio:.2f}×" and cells[6] == f"{p:.3g}"
    assert cells[3].startswith(f"**{sum(perturbed) / 3:.3f} ± ") and cells[11] == "1 of 3"
    assert cells[7] == f"{2 * sum(perturbed) / 3:.2f}" and cells[8] == "0.50"  # s's and the rest
    original_row = next(r for r in rows if r.startswith("| original"))
    assert "| 1.00× | – |" in original_row
    assert screening.seed_comparison(records[:3]).count("\n") == 3  # original alone: its own row


ORIGINAL = [0.40, 0.38, 0.42, 0.36, 0.44]


def _campaign(perturbed: list[float], noise: list[float], kappa: float = 1.0) -> list[dict]:
    records = [_record("original", k, v) for k, v in enumerate(ORIGINAL)]
    records += [_record("perturbed", k, v, kappa=kappa) for k, v in enumerate(perturbed)]
    return records + [_record("noise", k, v) for k, v in enumerate(noise)]


def test_the_choice_is_the_largest_drop_that_shows_the_effect() -> None:
    records = _campaign([0.10, 0.05, 0.20, 0.12, 0.08], [0.39, 0.41])
    records += [_record("perturbed", k, 0.15, kappa=2.0) for k in range(5)]
    records[-1]["mig"] = 0.16  # κ 2: a drop too, but a smaller one
    choice = screening.confirmed_choice(records, 100)
    assert (choice["kappa"], choice["epsilon"], choice["s_rule"]) == (
        1.0,
        0.25,
        "balanced-rotation",
    )
    assert choice["ratio"] == pytest.approx(0.11 / 0.40)
    p = stats.ttest_ind([0.10, 0.05, 0.20, 0.12, 0.08], ORIGINAL, equal_var=False).pvalue
    assert choice["welch_p"] == pytest.approx(p, rel=1e-12)
    assert choice["noise_ratio"] == pytest.approx(1.0) and choice["mig"]["noise"] == {
        "0": 0.39,
        "1": 0.41,
    }


@pytest.mark.parametrize(
    ("perturbed", "noise", "why"),
    [
        ([0.10, 0.05, 0.20, 0.12], [0.4], "4 seeds"),  # too few seeds
        ([0.25, 0.22, 0.21, 0.24, 0.23], [0.4], "ratio 0.57"),  # not half
        ([0.01, 0.02, 0.01, 0.60, 0.36], [0.4], "p 0.173"),  # half on average, not significant
        ([0.10, 0.05, 0.20, 0.12, 0.08], [0.2], "noise ratio 0.50"),  # noise breaks it too
        ([0.10, 0.05, 0.20, 0.12, 0.08], [], "no noise run"),
    ],
)
def test_no_choice_without_the_effect_and_the_reason_is_named(perturbed, noise, why) -> None:
    with pytest.raises(ValueError, match="no perturbed setting at step 100 passes") as caught:
        screening.confirmed_choice(_campaign(perturbed, noise), 100)
    assert why in str(caught.value)


def test_the_committed_choices_are_the_records_and_the_defaults() -> None:
    """A committed ``choice.json`` is what its folder's records give, and the dataset's default."""
    for path in sorted(ROOT.glob(f"docs/results/*/{screening.CHOICE_FILE}")):
        committed = json.loads(path.read_text())
        step = committed["step"]
        # taken once, on the records it names: records added since do not re-decide it
        records = screening.read_records(path.parent, committed["records"])
        assert {r["step"] for r in records} == {step}
        recomputed = screening.confirmed_choice(records, step)
        assert committed["mig"] == recomputed["mig"] and committed["kappa"] == recomputed["kappa"]
        assert committed["welch_p"] == pytest.approx(recomputed["welch_p"], rel=1e-9)
        dataset = committed["dataset"]
        assert default_strength(dataset) == (committed["kappa"], committed["epsilon"]), path
        assert load_reference(dataset).rule["rule"] == committed["s_rule"], path


def test_screen_choose_at_writes_the_choice_or_says_why_not(tmp_path, capsys) -> None:
    from generation import screen

    def run(records: list[dict]) -> int:
        for old in tmp_path.glob("*.json"):
            old.unlink()
        for k, r in enumerate(records):
            (tmp_path / f"r{k:03d}.json").write_text(json.dumps(r))
        return screen.main(
            ["--summarise", "--choose-at", "100", "--out", str(tmp_path), "--workdir", "."]
        )

    assert run(_campaign([0.10, 0.05, 0.20, 0.12], [0.4])) == 1
    assert "no choice" in capsys.readouterr().err and not (tmp_path / "choice.json").exists()
    assert run(_campaign([0.10, 0.05, 0.20, 0.12, 0.08], [0.4])) == 0
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert (choice["dataset"], choice["kappa"], choice["step"]) == ("shapes3d", 1.0, 100)
    assert choice["records"] == [f"r{k:03d}.json" for k in range(11)]  # all at step 100
    assert "Against `original`" in (tmp_path / "screen.md").read_text()
    assert len(screening.read_records(tmp_path)) == 11  # the choice is not read as a record
    # taken once: a later record does not re-decide it, and a second --choose-at keeps it
    (tmp_path / "r999.json").write_text(json.dumps(_record("perturbed", 9, 0.5)))
    assert (
        screen.main(["--summarise", "--choose-at", "100", "--out", str(tmp_path), "--workdir", "."])
        == 1
    )
    assert "already taken" in capsys.readouterr().err
    assert json.loads((tmp_path / "choice.json").read_text()) == choice


def test_the_learning_curves_draw_settings_with_several_seeds_at_several_steps(tmp_path) -> None:
    from PIL import Image

    one_step = _campaign([0.10, 0.05, 0.20, 0.12, 0.08], [0.4])
    assert screening.plot_learning_curves(one_step, tmp_path / "one.png") is None
    assert not (tmp_path / "one.png").exists()
    assert "MIG over training" not in _document(tmp_path, one_step)
    later = [dict(r, step=200, mig=r["mig"] / 2) for r in one_step]
    path = screening.plot_learning_curves(one_step + later, tmp_path / "two.png")
    assert path is not None and Image.open(path).size[0] > 600
    assert f"]({screening.FIGURE_FILE})" in _document(tmp_path, one_step + later)
    # noise is drawn with one seed; a one-seed perturbed setting is not
    settings = screening._tracked_settings(
        one_step + later + [_record("perturbed", 0, 0.3, kappa=4.0)]
    )
    assert [s[0] for s in settings] == ["noise", "original", "perturbed"]


def _document(folder, records: list[dict]) -> str:
    for old in folder.glob("*.json"):
        old.unlink()
    for k, r in enumerate(records):
        (folder / f"r{k:03d}.json").write_text(json.dumps(r))
    return screening.screen_document(folder)


def test_mixing_latents_carry_two_of_s_factors_and_code_information_sums_the_best() -> None:
    record = _record("perturbed", 0, 0.2)
    record["mutual_information"] = [
        [0.30, 0.30, 0.00],  # a and b, both s's: mixes
        [1.00, 0.10, 0.90],  # a and c: c is not one of s's factors
        [0.30, 0.26, 0.00],  # mixes
        [0.24, 0.90, 0.00],  # a below 0.25 nats
    ]
    assert screening.mixing_latents(record) == 2
    assert screening.code_information(record) == pytest.approx(1.00 + 0.90 + 0.90)


def test_the_seed_by_seed_table_pairs_each_perturbed_seed_with_its_original() -> None:
    records = _campaign([0.10, 0.05, 0.20, 0.12, 0.08], [0.39, 0.41])
    records += [_record("original", 0, 0.5, step=50), _record("perturbed", 0, 0.1, step=50)]
    table = screening.per_seed_table(records)
    assert "step 100:" in table and "step 50" not in table  # the last step with ≥ 2 seeds
    rows = [r for r in table.splitlines() if r[:3] in {f"| {k}" for k in range(5)}]
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[:5] == ["2", "0.420", "0.200", "0.48×", "–"]  # no noise run of seed 2
    assert [c.strip() for c in rows[1].strip("|").split("|")][4] == "0.410"
    assert screening.per_seed_table(_campaign([], [0.4])) == ""
