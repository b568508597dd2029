"""The benchmark report: its statistics against hand-computed values, and the files it writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from perturbed_disentanglement.benchmark.records import (
    FORMAT,
    FORMAT_VERSION,
    METRICS,
    iter_records,
    run_id,
)
from perturbed_disentanglement.benchmark.report import (
    FIG3_FILE,
    FIG4C_FILE,
    FIG5_FILE,
    alignment_rows,
    comparison_markdown,
    comparison_table,
    differences,
    information_curves,
    plot_samples,
    strength_curves,
    summarize,
    welch_p,
    write_report,
)
from perturbed_disentanglement.errors import ArtifactError, InvalidArgumentError

from .conftest import ROOT

FACTORS = ("shape", "scale", "orientation", "posX", "posY")
EPSILON = {"original": 0.0, "perturbed": 0.1, "noise": 0.1, "perturbed-eps0.05": 0.05}
REGULARISER = {"beta_vae": "beta", "beta_tcvae": "beta", "factor_vae": "gamma"}


def make_record(
    model: str = "beta_vae",
    hparams: dict[str, float] | None = None,
    config: str = "original",
    seed: int = 0,
    *,
    mig: float = 0.2,
    active_units: int = 5,
    information: dict[str, float] | None = None,
    steps: int = 1000,
    dataset: str = "dsprites",
    version: str = "0.1.0",
) -> dict[str, Any]:
    """A valid record of the schema in benchmark/records.py; other metrics follow ``mig``."""
    if hparams is None:
        hparams = {} if model == "ae" else {REGULARISER[model]: 8.0}
    name = REGULARISER.get(model)
    kind = config.split("-")[0]
    metrics: dict[str, Any] = {m: mig + 0.01 * k for k, m in enumerate(METRICS)}
    metrics.update(
        mig=mig,
        active_units=active_units,
        reconstruction=30.0 + mig,
        mig_per_factor={f: mig for f in FACTORS},
        mean_variance=[0.1] * active_units + [1.0] * (5 - active_units),
        factor_latent={**{f: k for k, f in enumerate(FACTORS)}, "s": 0},
        information_level=information or {**{f: 0.5 for f in FACTORS}, "s": 0.9},
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": version,
        "run_id": run_id(model, hparams, config, seed, steps),
        "data": {
            "name": f"perturbed-{dataset}",
            "dataset": dataset,
            "config": config,
            "kind": kind,
            "epsilon": EPSILON[config],
            "kappa": 32.0 if kind == "perturbed" else None,
            "num_images": 737280,
            "fingerprint": f"sha-{config}",
        },
        "model": model,
        "hparams": dict(hparams),
        "regulariser": None if name is None else {"name": name, "value": hparams[name]},
        "seed": seed,
        "steps": steps,
        "batch_size": 64,
        "preset": "cpu",
        "metrics": metrics,
        "training": {
            "seconds": 1.0,
            "steps_per_second": 1000.0,
            "device": "cpu",
            "precision": "fp32",
            "num_threads": 1,
            "final_loss": {"loss": 1.0},
        },
        "evaluation": {"seconds": 1.0, "num_points": 10000, "random_state": 0},
    }


MIG_ORIGINAL = [0.20, 0.30, 0.25]
MIG_PERTURBED = [0.05, 0.10, 0.08, 0.01]


def pair_records(config: str = "perturbed") -> list[dict[str, Any]]:
    """β-VAE β=8: three seeds on original, four on ``config``."""
    return [make_record(seed=i, mig=m) for i, m in enumerate(MIG_ORIGINAL)] + [
        make_record(config=config, seed=i, mig=m) for i, m in enumerate(MIG_PERTURBED)
    ]


def test_summarize_mean_and_sample_sd() -> None:
    s = summarize([1.0, 2.0, 4.0])
    assert s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    # ddof = 1: ((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2 = (16/9 + 1/9 + 25/9) / 2 = 7/3
    assert s.sd == pytest.approx(math.sqrt(7 / 3))
    assert summarize([0.5]).sd is None
    assert summarize([0.5]).text() == "0.500 (1)"
    with pytest.raises(InvalidArgumentError):
        summarize([])


def test_welch_p_against_hand_computed_t_and_df() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    va, vb = 5 / 3 / 4, 10 / 5  # sample variance / n
    t = (2.5 - 6.0) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)  # Welch–Satterthwaite
    assert df == pytest.approx(5.5208, abs=1e-4)
    assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-12)
    assert welch_p(a, b) == pytest.approx(0.0691, abs=1e-4)
    assert welch_p([1.0], b) is None  # fewer than 2 seeds on a side
    assert welch_p([1.0, 1.0], [2.0, 2.0]) is None  # no spread on either side


def test_table_1_rows() -> None:
    table = comparison_table(pair_records(), "perturbed")
    assert table.config == "perturbed" and table.epsilon == 0.1
    assert not table.original_only and not table.other_only
    rows = {r.metric: r for r in table.rows}
    assert list(rows) == [
        "mig",
        "dci_disentanglement",
        "sap",
        "factor_vae_score",
        "active_units",
        "reconstruction",
    ]
    mig = rows["mig"]
    assert mig.original.n == 3 and mig.other.n == 4
    assert mig.original.mean == pytest.approx(0.25)
    assert mig.original.sd == pytest.approx(0.05)
    assert mig.other.mean == pytest.approx(0.06)
    assert mig.other.sd == pytest.approx(np.std(MIG_PERTURBED, ddof=1))
    assert mig.difference == pytest.approx(-0.19)
    expected = stats.ttest_ind(MIG_ORIGINAL, MIG_PERTURBED, equal_var=False).pvalue
    assert mig.p_value == pytest.approx(expected)
    # β-VAE β = 8 on dSprites is the paper's setting: its Table 1 numbers sit beside ours
    assert (mig.paper_original, mig.paper_other) == ((0.23, 0.08), (0.07, 0.09))
    assert rows["sap"].paper_original is None
    assert rows["active_units"].p_value is None  # 5 active units in every run: no spread
    markdown = comparison_markdown(table)
    assert "0.250 ± 0.050 (3)" in markdown and "-0.190" in markdown
    assert "0.23 ± 0.08" in markdown and "n/a" in markdown

    plain = comparison_table(pair_records(), "perturbed", paper=False)
    assert all(r.paper_original is None for r in plain.rows)
    assert "paper" not in comparison_markdown(plain)


def test_one_seed_gives_p_na_and_unpaired_settings_are_listed() -> None:
    records = [
        make_record(seed=0),
        make_record(config="perturbed", seed=0, mig=0.1),
        make_record("beta_vae", {"beta": 4.0}, seed=0),
    ]
    table = comparison_table(records, "perturbed")
    assert all(r.p_value is None for r in table.rows)
    assert [s.label() for s in table.original_only] == ["β-VAE beta=4"]
    with pytest.raises(InvalidArgumentError, match="noise"):
        comparison_table(records, "noise")


def test_the_ae_has_no_variance_metrics() -> None:
    records = [make_record("ae", {}, c, seed) for c in ("original", "perturbed") for seed in (0, 1)]
    table = comparison_table(records, "perturbed")
    assert "active_units" not in {r.metric for r in table.rows}
    assert information_curves(records) == []  # no posterior variance: no Fig. 4(c) curve


def test_mixed_data_or_versions_are_refused(tmp_path) -> None:
    shapes = make_record(config="perturbed", dataset="shapes3d")
    with pytest.raises(ArtifactError, match="dataset"):
        write_report([make_record(), shapes], tmp_path)
    with pytest.raises(ArtifactError, match="package_version"):
        write_report([make_record(), make_record(config="perturbed", version="0.2.0")], tmp_path)
    rebuilt = make_record(seed=1)
    rebuilt["data"]["fingerprint"] = "another build"
    with pytest.raises(ArtifactError, match="different builds"):
        write_report([make_record(), rebuilt], tmp_path)
    with pytest.raises(ArtifactError, match="counted once"):
        write_report([make_record(), make_record()], tmp_path)
    broken = make_record()
    del broken["metrics"]["sap"]
    with pytest.raises(ArtifactError, match="metrics.sap"):
        write_report([broken], tmp_path)
    assert not (tmp_path / "report.md").exists()


def sweep_records() -> list[dict[str, Any]]:
    """β-VAE over β on original and perturbed (β = 16 over-prunes), plus AE and noise runs."""
    records = []
    for beta, pruned in ((1.0, 5), (4.0, 5), (16.0, 3)):
        for config in ("original", "perturbed"):
            for seed in range(2):
                mig = 0.3 if config == "original" else 0.1
                records.append(
                    make_record(
                        "beta_vae",
                        {"beta": beta},
                        config,
                        seed,
                        mig=mig + 0.01 * seed,
                        active_units=pruned + seed % 2 if beta == 16 else pruned,
                    )
                )
    for config in ("original", "noise"):
        records += [make_record("ae", {}, config, seed, mig=0.05) for seed in range(2)]
    return records


def test_strength_curves_and_over_pruning() -> None:
    curves = strength_curves(sweep_records())
    assert [(c.setting.label(), c.config) for c in curves] == [
        ("β-VAE", "original"),
        ("β-VAE", "perturbed"),
    ]  # the AE has no regulariser
    original = curves[0]
    assert original.regulariser == "beta" and original.num_factors == 5
    np.testing.assert_array_equal(original.strengths, [1.0, 4.0, 16.0])
    assert original.mig[0].mean == pytest.approx(0.305)
    assert original.active_units[2].mean == pytest.approx(3.5)
    np.testing.assert_array_equal(original.over_pruned, [False, False, True])


def test_information_curves_average_seeds_and_skip_noise() -> None:
    def info(s: float) -> dict[str, float]:
        return {**{f: 0.5 for f in FACTORS}, "s": s}

    records = [
        make_record(config="original", seed=0, information=info(0.1)),
        make_record(config="original", seed=1, information=info(0.3)),
        make_record(config="perturbed-eps0.05", seed=0, information=info(0.6)),
        make_record(config="perturbed", seed=0, information=info(0.9)),
        make_record(config="noise", seed=0, information=info(0.0)),
        make_record("beta_vae", {"beta": 2.0}, "perturbed", 0),  # one ε only: not chosen
    ]
    (curve,) = information_curves(records)
    assert curve.setting.label() == "β-VAE beta=8"
    assert curve.names == (*FACTORS, "s")
    np.testing.assert_allclose(curve.epsilons, [0.0, 0.05, 0.1])
    np.testing.assert_allclose(curve.levels[-1], [0.2, 0.6, 0.9])
    np.testing.assert_array_equal(curve.seeds, [2, 1, 1])


def samples(n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    original = (rng.random((n, 64, 64, 1)) > 0.7).astype(np.uint8) * 200
    return {
        "original": original,
        "perturbed": original + 25,
        "noise": original + rng.integers(0, 10, original.shape, dtype=np.uint8),
    }


def test_differences_are_scaled_by_each_configs_epsilon() -> None:
    shown = differences(samples(), {"perturbed": 0.1, "noise": 0.1})
    assert [(d.config, d.epsilon, d.scale) for d in shown] == [
        ("perturbed", 0.1, "0.1"),
        ("noise", 0.1, "0.1"),
    ]
    perturbed = shown[0].image  # +25 bytes everywhere, ε = 0.1 is 25.5 bytes
    assert perturbed.dtype == np.uint8 and perturbed.shape == (4, 64, 64, 1)
    assert np.all(perturbed == math.floor(128 + 127.5 * 25 / 25.5))
    # a config without ε: its largest difference is the scale
    (largest,) = differences({"original": samples()["original"], "x": samples()["perturbed"]})
    assert largest.epsilon is None and np.all(largest.image == 255)
    assert differences({"perturbed": samples()["perturbed"]}) == []


def test_fig3_is_deterministic(tmp_path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    plot_samples(samples(), first, epsilons={"perturbed": 0.1, "noise": 0.1})
    plot_samples(samples(), second, epsilons={"perturbed": 0.1, "noise": 0.1})
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first.stat().st_size < 600_000


def test_fig3_says_what_clipping_leaves_of_binary_images(tmp_path) -> None:
    binary = {k: v for k, v in samples().items() if k != "noise"}
    binary["original"] = np.where(binary["original"] > 0, 255, 0).astype(np.uint8)
    text = write_report(pair_records(), tmp_path, samples=binary).read_text()
    assert "the black background can only brighten (grey or white)" in text
    assert "`perturbed` ±0.1" in text and (tmp_path / FIG3_FILE).exists()


def test_report_and_every_figure_are_written(tmp_path) -> None:
    records = sweep_records() + [
        make_record("beta_vae", {"beta": 1.0}, "noise", seed) for seed in range(2)
    ]
    path = write_report(records, tmp_path, samples=samples())
    assert path == tmp_path / "report.md"
    text = path.read_text()
    for name in (FIG3_FILE, FIG4C_FILE, FIG5_FILE):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    assert "# Benchmark report: perturbed-dsprites" in text
    assert "Runs: 18, seeds 0, 1, by package version 0.1.0" in text
    assert "## Table 1: original vs perturbed (ε = 0.1)" in text
    assert "## Table 2: original vs noise (ε = 0.1)" in text
    assert "its own ±ε spans the grey range" in text
    assert "black = −ε, white = +ε (`perturbed` ±0.1, `noise` ±0.1)" in text
    assert "where a channel is 0 (it can only brighten)" in text  # the samples hold zeros
    assert "below the number of factors, 5" in text
    assert "Not drawn" not in text and "Not computed" not in text


def test_missing_pieces_give_sentences(tmp_path) -> None:
    write_report(sweep_records(), tmp_path, samples=samples())
    assert (tmp_path / FIG3_FILE).exists()
    # original only, one setting, no samples: tables and figures say why they are missing
    records = [make_record(seed=s) for s in range(3)]
    text = write_report(records, tmp_path).read_text()
    assert "trained by another process" not in text
    records[1]["training"]["adopted_from"] = {"source": "/campaign/runs/x/step-000000030"}
    text = write_report(records, tmp_path).read_text()
    assert "1 of the runs were trained by another process and evaluated here" in text
    assert "Not computed: there are no runs on a `perturbed` config." in text
    assert "Not computed: there are no runs on a `noise` config." in text
    assert text.count("Not drawn:") == 3
    assert not any((tmp_path / f).exists() for f in (FIG3_FILE, FIG4C_FILE, FIG5_FILE))
    # noise only beside perturbed-less data: Table 2's "no original" sentence
    text = write_report([make_record("ae", {}, "noise", 0)], tmp_path).read_text()
    assert "Not computed: there are no runs on `original`." in text


def test_bad_samples_are_refused(tmp_path) -> None:
    bad = samples()
    bad["noise"] = bad["noise"][:2]
    with pytest.raises(InvalidArgumentError, match="same .at least one. grid points"):
        write_report(pair_records(), tmp_path, samples=bad)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        write_report(pair_records(), tmp_path, samples={"original": bad["original"] * 1.0})
    # without original, Fig. 3 shows the configs and says why there are no differences
    text = write_report(pair_records(), tmp_path, samples={"perturbed": bad["perturbed"]})
    assert "no difference rows" in text.read_text() and (tmp_path / FIG3_FILE).exists()


@pytest.mark.parametrize(
    ("folder", "runs", "mig_row"),
    [
        ("dsprites-cpu", 9, "| β-VAE beta=8 | MIG | 0.058 ± 0.036 (3) | 0.023 ± 0.010 (3) |"),
        ("shapes3d-cpu", 18, "| β-VAE beta=32 | MIG | 0.390 ± 0.163 (8) | 0.136 ± 0.067 (8) |"),
    ],
)
def test_the_committed_cpu_results_rebuild_their_tables(
    tmp_path: Path, folder: str, runs: int, mig_row: str
) -> None:
    """The README's `cpu` numbers come from the records committed beside their report."""
    committed = ROOT / "docs" / "results" / folder
    records = list(iter_records(committed))
    assert len(records) == runs and {r["config"] for r in records} == {
        "original",
        "perturbed",
        "noise",
    }
    report = write_report(records, tmp_path).read_text(encoding="utf-8")

    def tables(text: str) -> str:
        return text[text.index("## Table 1") : text.index("## Fig. 3")]

    assert tables(report) == tables((committed / "report.md").read_text(encoding="utf-8"))
    assert mig_row in report


def test_the_alignment_signature_counts_the_seeds_whose_least_noise_latent_follows_s(
    tmp_path: Path,
) -> None:
    records = []
    for config, nmi, follows, uptake in (
        ("original", (0.1, 0.2), (False, False), None),
        ("perturbed", (0.8, 0.6), (True, False), 0.5),
    ):
        for seed in (0, 1):
            r = make_record(config=config, seed=seed)
            r["metrics"]["s_alignment"] = {
                "least_noise_nmi": nmi[seed],
                "follows_s": follows[seed],
            }
            r["metrics"]["uptake"] = uptake
            records.append(r)
    rows = alignment_rows(records)
    assert [row.config for row in rows] == ["original", "perturbed"]
    assert rows[0].least_noise_nmi.mean == pytest.approx(0.15) and rows[0].follows == 0
    assert rows[0].uptake is None
    assert rows[1].least_noise_nmi.mean == pytest.approx(0.7) and rows[1].follows == 1
    assert rows[1].uptake.mean == pytest.approx(0.5) and rows[1].uptake.n == 2
    text = write_report(records, tmp_path).read_text()
    assert "| β-VAE beta=8 | `perturbed` | 0.70 ± 0.14 (2) | 1 of 2 | 0.50 ± 0.00 (2) |" in text
    older = write_report([make_record(config="original")], tmp_path / "old").read_text()
    assert "no record carries `metrics.s_alignment`" in older
