"""The benchmark report: the paper's Tables 1 and 2 and Figs. 3, 4(c) and 5 from run records.

:func:`write_report` turns the records of one results folder (one dataset, one package version;
see :mod:`perturbed_disentanglement.benchmark.records`) into ``report.md`` with PNG figures beside
it. The statistics (:func:`summarize`, :func:`welch_p`, :func:`comparison_table`,
:func:`strength_curves`, :func:`information_curves`) are pure functions of the records, apart
from the plotting, so the numbers in the report can be checked without drawing anything.

Runs are averaged over seeds within a :class:`Setting` (model, hyperparameters, steps, batch size)
and a data config; records of different data or package versions are refused, never averaged.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from perturbed_disentanglement import __version__
from perturbed_disentanglement.benchmark.records import METRICS, number_label
from perturbed_disentanglement.errors import ArtifactError, InvalidArgumentError
from perturbed_disentanglement.perturbation.difference import signed_difference
from perturbed_disentanglement.training.zoo import MODELS
from perturbed_disentanglement.util.atomic import write_bytes_atomic

REPORT_FILE = "report.md"
FIG3_FILE = "fig3_samples.png"
FIG4C_FILE = "fig4c_information_level.png"
FIG5_FILE = "fig5_strength.png"

ORIGINAL = "original"
KINDS = ("original", "perturbed", "noise")

#: The metrics Tables 1 and 2 show, in this order (a subset of ``records.METRICS``).
TABLE_METRICS = (
    "mig",
    "dci_disentanglement",
    "sap",
    "factor_vae_score",
    "active_units",
    "reconstruction",
)

_METRIC_TITLES = {
    "mig": "MIG",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness": "DCI informativeness",
    "sap": "SAP",
    "factor_vae_score": "FactorVAE score",
    "active_units": "active units",
    "reconstruction": "reconstruction",
}
_DECIMALS = {"active_units": 2, "reconstruction": 2}  # the scores in [0, 1] get 3
#: The colour each config is drawn in, in every figure.
CONFIG_COLOURS = {"original": "tab:blue", "perturbed": "tab:red", "noise": "tab:green"}

#: The paper's MIG (mean, sd over 10 seeds) of its Table 1 (original, perturbed) and Table 2
#: (noise), as a third-party reproduction lists them (SPEC §6; unverified: the numbers did not
#: survive in our copy of the paper), with the ε (SPEC §6) and the hyperparameters (SPEC §5) that
#: source attributes to the paper. Table 2's caption says β "was tuned to the noisy dataset"; we
#: attach its numbers to the same literature hyperparameters as Table 1's.
PAPER: dict[str, dict[str, Any]] = {
    "dsprites": {
        "epsilon": 0.1,
        "hparams": {
            "ae": {},
            "beta_vae": {"beta": 8.0},
            "factor_vae": {"gamma": 35.0},
            "beta_tcvae": {"beta": 6.0},
        },
        "mig": {
            "ae": {"original": (0.09, 0.06), "perturbed": (0.05, 0.02), "noise": (0.06, 0.03)},
            "beta_vae": {
                "original": (0.23, 0.08),
                "perturbed": (0.07, 0.09),
                "noise": (0.14, 0.07),
            },
            "factor_vae": {
                "original": (0.27, 0.11),
                "perturbed": (0.20, 0.12),
                "noise": (0.16, 0.08),
            },
            "beta_tcvae": {
                "original": (0.25, 0.08),
                "perturbed": (0.14, 0.10),
                "noise": (0.20, 0.04),
            },
        },
    },
    "shapes3d": {
        "epsilon": 0.175,
        "hparams": {
            "ae": {},
            "beta_vae": {"beta": 32.0},
            "factor_vae": {"gamma": 7.0},
            "beta_tcvae": {"beta": 32.0},
        },
        "mig": {
            "ae": {"original": (0.06, 0.03), "perturbed": (0.05, 0.03), "noise": (0.07, 0.03)},
            "beta_vae": {
                "original": (0.60, 0.31),
                "perturbed": (0.09, 0.14),
                "noise": (0.66, 0.05),
            },
            "factor_vae": {
                "original": (0.27, 0.18),
                "perturbed": (0.07, 0.05),
                "noise": (0.33, 0.20),
            },
            "beta_tcvae": {
                "original": (0.58, 0.20),
                "perturbed": (0.24, 0.16),
                "noise": (0.60, 0.11),
            },
        },
    },
}


# --- records ------------------------------------------------------------------------------------


def _field(record: Mapping[str, Any], *keys: str) -> Any:
    """``record[k1][k2]...``, or an ArtifactError naming the run and the missing field."""
    value: Any = record
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise ArtifactError(
                f"benchmark record {record.get('run_id', '<no run_id>')!r} lacks "
                f"{'.'.join(keys)}; expected the schema in benchmark/records.py"
            )
        value = value[key]
    return value


@dataclass(frozen=True)
class Setting:
    """What a table row or a curve averages over seeds: a model, its hyperparameters, training."""

    model: str
    hparams: tuple[tuple[str, float], ...]
    steps: int
    batch_size: int

    def label(self, training: bool = False) -> str:
        """``β-VAE beta=8`` (with ``, 20000 steps, batch 64`` when runs differ in training)."""
        title = MODELS[self.model].title if self.model in MODELS else self.model
        parts = [title, *(f"{k}={number_label(v)}" for k, v in self.hparams)]
        text = " ".join(parts)
        return f"{text}, {self.steps} steps, batch {self.batch_size}" if training else text

    def sort_key(self) -> tuple:
        """Zoo order of the models, then hyperparameters and training."""
        rank = list(MODELS).index(self.model) if self.model in MODELS else len(MODELS)
        return (rank, self.model, self.hparams, self.steps, self.batch_size)


def setting_of(record: Mapping[str, Any], drop: str | None = None) -> Setting:
    """The setting of a run; ``drop`` leaves one hyperparameter out (the strength Fig. 5 sweeps)."""
    hparams = _field(record, "hparams")
    return Setting(
        model=str(_field(record, "model")),
        hparams=tuple(sorted((k, float(v)) for k, v in hparams.items() if k != drop)),
        steps=int(_field(record, "steps")),
        batch_size=int(_field(record, "batch_size")),
    )


def check_records(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The data and package version the records share; an ArtifactError for any mixture.

    Averages over seeds are meaningful only for one dataset, one build of each config and one
    package version, so a mixture, a config with two fingerprints or ε values, or the same run
    twice is refused rather than averaged.
    """
    if not records:
        raise InvalidArgumentError("no benchmark records to report; run the benchmark first")
    identity: dict[str, set[str]] = defaultdict(set)
    configs: dict[str, set[tuple]] = defaultdict(set)
    runs: set[tuple] = set()
    for record in records:
        identity["data"].add(str(_field(record, "data", "name")))
        identity["dataset"].add(str(_field(record, "data", "dataset")))
        identity["package_version"].add(str(_field(record, "package_version")))
        config = str(_field(record, "data", "config"))
        kind = _field(record, "data", "kind")
        if kind not in KINDS:
            raise ArtifactError(
                f"record {record.get('run_id')!r} has data kind {kind!r}; expected one of {KINDS}"
            )
        epsilon = float(_field(record, "data", "epsilon"))
        configs[config].add((kind, epsilon, _field(record, "data", "fingerprint")))
        for metric in TABLE_METRICS:
            _field(record, "metrics", metric)
        run = (setting_of(record), config, int(_field(record, "seed")))
        if run in runs:
            raise ArtifactError(
                f"two records of {run[0].label(True)} on {config} with seed {run[2]}; "
                "each run must be counted once"
            )
        runs.add(run)
    for key, values in identity.items():
        if len(values) > 1:
            raise ArtifactError(
                f"the records mix {key} {sorted(values)}; a report covers one dataset and one "
                "package version (one results folder each)"
            )
    for config, builds in configs.items():
        if len(builds) > 1:
            raise ArtifactError(
                f"the records of config {config!r} come from {len(builds)} different builds "
                f"(kind, ε, fingerprint: {sorted(map(str, builds))}); they must not be averaged"
            )
    return {key: values.pop() for key, values in identity.items()}


def _config_rank(config: str) -> tuple[int, str]:
    """original, perturbed, noise, then the other configs by name (the ε variants)."""
    return (KINDS.index(config) if config in KINDS else len(KINDS), config)


def _configs(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, float]]:
    """config -> (kind, ε), in :func:`_config_rank` order."""
    found = {
        str(r["data"]["config"]): (str(r["data"]["kind"]), float(r["data"]["epsilon"]))
        for r in records
    }
    return dict(sorted(found.items(), key=lambda c: (_config_rank(c[0])[0], c[1][1], c[0])))


def factor_count(records: Sequence[Mapping[str, Any]]) -> int:
    """The number of generative factors (the keys of ``mig_per_factor``), the same in every run."""
    counts = {len(_field(r, "metrics", "mig_per_factor")) for r in records}
    if len(counts) != 1:
        raise ArtifactError(f"the records disagree on the number of factors: {sorted(counts)}")
    return counts.pop()


# --- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof = 1; None with one value) of ``n`` seeds."""

    n: int
    mean: float
    sd: float | None

    def text(self, decimals: int = 3) -> str:
        """``0.231 ± 0.080 (10)``: mean ± sd (number of seeds)."""
        if self.sd is None:
            return f"{self.mean:.{decimals}f} ({self.n})"
        return f"{self.mean:.{decimals}f} ± {self.sd:.{decimals}f} ({self.n})"


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± sd over seeds, as the paper reports them."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise InvalidArgumentError(f"summarize needs a non-empty list of numbers, got {values!r}")
    return Summary(len(x), float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else None)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p of Welch's t-test (unequal variances); None where it is undefined.

    Undefined with fewer than two values on a side (no variance estimate) or with no spread on
    both sides (t is 0/0 or ±inf), where a p would only pretend to know.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    # one constant side (e.g. active units 5, 5, 5) is fine: scipy's precision warning is noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


@dataclass(frozen=True)
class ComparisonRow:
    """One setting and metric on ``original`` and on the compared config (Tables 1 and 2)."""

    setting: Setting
    metric: str
    original: Summary
    other: Summary
    difference: float  # other − original, of the means
    p_value: float | None
    paper_original: tuple[float, float] | None  # the paper's (mean, sd), MIG only
    paper_other: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    """Table 1 or 2 for one compared config, and the settings that lack a counterpart."""

    config: str
    epsilon: float
    rows: list[ComparisonRow]
    original_only: list[Setting]
    other_only: list[Setting]


def _deterministic(model: str) -> bool:
    """A model without posterior variance (the AE): its variance head is never trained, so its
    active units and information levels in a record mean nothing."""
    return model in MODELS and MODELS[model].deterministic


def _paper_mig(dataset: str, setting: Setting, config: str) -> tuple[float, float] | None:
    """The paper's MIG for this setting and config, if the paper ran it (defaults configs only)."""
    table = PAPER.get(dataset)
    if table is None or setting.model not in table["hparams"]:
        return None
    if dict(setting.hparams) != table["hparams"][setting.model]:
        return None
    return table["mig"][setting.model].get(config)


def comparison_table(
    records: Sequence[Mapping[str, Any]],
    config: str,
    *,
    metrics: Sequence[str] = TABLE_METRICS,
    paper: bool = True,
) -> Comparison:
    """Each setting's metrics on ``original`` against ``config``: mean ± sd, Δ and Welch p.

    Only settings run on both sides get rows (a difference needs both); the others are listed.
    """
    identity = check_records(records)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InvalidArgumentError(f"unknown metrics {unknown}; expected some of {METRICS}")
    configs = _configs(records)
    if config not in configs or configs[config][0] == ORIGINAL:
        raise InvalidArgumentError(
            f"no records on a config {config!r} to compare with original; found {list(configs)}"
        )
    groups: dict[tuple[Setting, str], list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        side = ORIGINAL if record["data"]["kind"] == ORIGINAL else record["data"]["config"]
        groups[setting_of(record), side].append(record)
    original = {s for s, side in groups if side == ORIGINAL}
    other = {s for s, side in groups if side == config}
    rows = []
    for setting in sorted(original & other, key=Setting.sort_key):
        base, runs = groups[setting, ORIGINAL], groups[setting, config]
        paper_base = paper_other = None
        if paper and config in KINDS:
            paper_base = _paper_mig(identity["dataset"], setting, ORIGINAL)
            paper_other = _paper_mig(identity["dataset"], setting, config)
        for metric in metrics:
            if metric == "active_units" and _deterministic(setting.model):
                continue
            a = [float(r["metrics"][metric]) for r in base]
            b = [float(r["metrics"][metric]) for r in runs]
            sa, sb = summarize(a), summarize(b)
            rows.append(
                ComparisonRow(
                    setting,
                    metric,
                    sa,
                    sb,
                    sb.mean - sa.mean,
                    welch_p(a, b),
                    paper_base if metric == "mig" else None,
                    paper_other if metric == "mig" else None,
                )
            )
    return Comparison(
        config,
        configs[config][1],
        rows,
        sorted(original - other, key=Setting.sort_key),
        sorted(other - original, key=Setting.sort_key),
    )


@dataclass(frozen=True)
class StrengthCurve:
    """Fig. 5: one model on one config, MIG and active units against its regularisation strength."""

    setting: Setting  # without the swept hyperparameter
    regulariser: str
    config: str
    strengths: np.ndarray  # increasing
    mig: list[Summary]
    active_units: list[Summary]
    num_factors: int

    @property
    def over_pruned(self) -> np.ndarray:
        """Mean active units over seeds below the number of factors: some factor goes unencoded."""
        return np.array([s.mean < self.num_factors for s in self.active_units], dtype=bool)


def strength_curves(records: Sequence[Mapping[str, Any]]) -> list[StrengthCurve]:
    """Fig. 5's curves: per model, config and fixed hyperparameters, over seeds at each strength.

    Runs without a regulariser (the AE) or with a strength ≤ 0 (not on a log axis) are left out.
    """
    check_records(records)
    num_factors = factor_count(records)
    groups: dict[tuple, dict[float, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        regulariser = record.get("regulariser")
        if not regulariser or regulariser.get("value") is None:
            continue
        value = float(regulariser["value"])
        if value <= 0:
            continue
        name = str(regulariser["name"])
        key = (setting_of(record, drop=name), name, str(record["data"]["config"]))
        groups[key][value].append(record)
    order = list(_configs(records))
    curves = []
    for (setting, name, config), by_value in sorted(
        groups.items(), key=lambda g: (g[0][0].sort_key(), order.index(g[0][2]))
    ):
        values = sorted(by_value)
        curves.append(
            StrengthCurve(
                setting,
                name,
                config,
                np.array(values),
                [summarize([r["metrics"]["mig"] for r in by_value[v]]) for v in values],
                [summarize([r["metrics"]["active_units"] for r in by_value[v]]) for v in values],
                num_factors,
            )
        )
    return curves


@dataclass(frozen=True)
class InformationCurve:
    """Fig. 4(c): one setting's information level per factor and ``s`` against ε."""

    setting: Setting
    epsilons: np.ndarray  # increasing; 0 is the original data
    names: tuple[str, ...]  # the factors, then "s"
    levels: np.ndarray  # [len(names), len(epsilons)], mean over seeds
    seeds: np.ndarray  # runs averaged at each ε


def information_curves(records: Sequence[Mapping[str, Any]]) -> list[InformationCurve]:
    """Fig. 4(c)'s curves on original and perturbed data, one setting per model.

    Noise runs and deterministic models (no posterior variance) are left out.

    Per model the setting run at the most ε values, preferring the zoo's default hyperparameters
    for the dataset (the paper's literature values) on a tie; models run at one ε are left out.
    """
    identity = check_records(records)
    by_setting: dict[Setting, dict[float, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        if record["data"]["kind"] != "noise" and not _deterministic(str(record["model"])):
            epsilon = (
                0.0 if record["data"]["kind"] == ORIGINAL else float(record["data"]["epsilon"])
            )
            by_setting[setting_of(record)][epsilon].append(record)

    def rank(setting: Setting) -> tuple[int, bool]:
        return len(by_setting[setting]), _is_default(setting, identity["dataset"])

    chosen: dict[str, Setting] = {}
    for setting in sorted(by_setting, key=Setting.sort_key):
        best = chosen.get(setting.model)
        if best is None or rank(setting) > rank(best):
            chosen[setting.model] = setting
    curves = []
    for setting in sorted(chosen.values(), key=Setting.sort_key):
        by_epsilon = by_setting[setting]
        if len(by_epsilon) < 2:
            continue
        epsilons = sorted(by_epsilon)
        first = _field(by_epsilon[epsilons[0]][0], "metrics", "information_level")
        names = tuple(n for n in first if n != "s") + ("s",)
        levels = np.array(
            [
                [np.mean([_information(r, name) for r in by_epsilon[e]]) for e in epsilons]
                for name in names
            ]
        )
        seeds = np.array([len(by_epsilon[e]) for e in epsilons])
        curves.append(InformationCurve(setting, np.array(epsilons), names, levels, seeds))
    return curves


def _is_default(setting: Setting, dataset: str) -> bool:
    spec = MODELS.get(setting.model)
    return spec is not None and dict(setting.hparams) == spec.defaults.get(dataset)


def _information(record: Mapping[str, Any], name: str) -> float:
    levels = _field(record, "metrics", "information_level")
    if name not in levels:
        raise ArtifactError(
            f"record {record.get('run_id')!r} has no information level for {name!r} "
            f"(it has {sorted(levels)}); every run must report the same factors and s"
        )
    return float(levels[name])


@dataclass(frozen=True)
class AlignmentRow:
    """The s-alignment signature of one setting on one config, over seeds (paper Fig. 4c: the
    β-VAE encodes s as its least noisy coordinate once the perturbation dominates locally)."""

    setting: Setting
    config: str
    least_noise_nmi: Summary  # NMI of the least-noise latent with s
    follows: int  # seeds whose least-noise latent is the one most informative about s
    uptake: Summary | None  # the share of the perturbation the decoder reproduces

    def cells(self, training: bool) -> list[str]:
        return [
            self.setting.label(training),
            f"`{self.config}`",
            self.least_noise_nmi.text(2),
            f"{self.follows} of {self.least_noise_nmi.n}",
            "–" if self.uptake is None else self.uptake.text(2),
        ]


def alignment_rows(records: Sequence[Mapping[str, Any]]) -> list[AlignmentRow]:
    """One row per (setting, config) whose records carry ``metrics.s_alignment``."""
    groups: dict[tuple[Setting, str], list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        if (record.get("metrics") or {}).get("s_alignment"):
            groups[(setting_of(record), record["data"]["config"])].append(record)
    rows = []
    for (setting, config), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0].sort_key(), _config_rank(kv[0][1]))
    ):
        alignments = [r["metrics"]["s_alignment"] for r in group]
        uptakes = [r["metrics"]["uptake"] for r in group if r["metrics"].get("uptake") is not None]
        rows.append(
            AlignmentRow(
                setting,
                config,
                summarize([a["least_noise_nmi"] for a in alignments]),
                sum(bool(a["follows_s"]) for a in alignments),
                summarize(uptakes) if uptakes else None,
            )
        )
    return rows


def _alignment_section(records: Sequence[Mapping[str, Any]], training: bool) -> list[str]:
    rows = alignment_rows(records)
    title = "## Fig. 4(c), signature: does the least-noise latent follow s?"
    if not rows:
        return [title, "Not shown: no record carries `metrics.s_alignment` (records before 0.2)."]
    head = [
        "setting",
        "config",
        "NMI of the least-noise latent with s",
        "seeds where it is the latent most informative about s",
        "pattern uptake",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.cells(training)) + " |" for row in rows]
    reading = (
        "NMI: I(z; s) / H(s) of the latent with the least posterior noise (the paper's first "
        "principal component), binned like MIG, mean ± sd (seeds). The paper's signature of the "
        "effect: on `perturbed` that latent follows s, on `original` and `noise` it does not; "
        "the paper shows it where s is an extra factor independent of the others, while in a "
        "built dataset s is a function of the factors, whose latents can carry it. "
        "Uptake: how much of the perturbation the decoder reproduces (1 all, 0 none; "
        "`metrics.diagnostics.pattern_uptake`); near 0 means the pattern is treated as noise."
    )
    return [title, "\n".join(lines), reading]


# --- figures ------------------------------------------------------------------------------------


def write_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Render with Agg (no pyplot state) and write the PNG atomically, without a software tag."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return write_bytes_atomic(path, buffer.getvalue())


def _colour(config: str, order: Sequence[str]) -> str:
    return CONFIG_COLOURS.get(config, f"C{3 + order.index(config)}")


def plot_strength(curves: Sequence[StrengthCurve], path: str | os.PathLike) -> Path:
    """Fig. 5: per setting, MIG (top) and mean active units (bottom) against the strength, log x.

    One column per model setting (its other hyperparameters and training fixed), one line per
    config; over-pruned points (:attr:`StrengthCurve.over_pruned`) get hollow markers and the
    lower panel shades the band below the number of factors.
    """
    if not curves:
        raise InvalidArgumentError("plot_strength needs at least one curve")
    settings = list(dict.fromkeys(c.setting for c in curves))
    configs = list(dict.fromkeys(c.config for c in curves))
    training = len({(s.steps, s.batch_size) for s in settings}) > 1
    num_factors = curves[0].num_factors
    fig = Figure(figsize=(3.4 * len(settings) + 0.4, 6.0), layout="constrained")
    axes = fig.subplots(2, len(settings), squeeze=False, sharex="col")
    for column, setting in enumerate(settings):
        top, bottom = axes[0, column], axes[1, column]
        mine = [c for c in curves if c.setting == setting]
        for curve in mine:
            colour = _colour(curve.config, configs)
            pruned = curve.over_pruned
            for ax, summaries in ((top, curve.mig), (bottom, curve.active_units)):
                mean = np.array([s.mean for s in summaries])
                sd = np.array([s.sd or 0.0 for s in summaries])
                ax.errorbar(curve.strengths, mean, yerr=sd, color=colour, capsize=2)
                ax.scatter(curve.strengths[~pruned], mean[~pruned], color=colour, zorder=3)
                ax.scatter(
                    curve.strengths[pruned],
                    mean[pruned],
                    facecolors="white",
                    edgecolors=colour,
                    zorder=3,
                )
        ticks = sorted({float(x) for c in mine for x in c.strengths})
        top.set_title(setting.label(training), fontsize=9)
        top.set_ylabel("MIG")
        bottom.axhspan(0, num_factors, color="0.88", zorder=0)
        bottom.axhline(num_factors, color="0.4", linestyle="--", linewidth=1)
        bottom.set_ylabel("mean active units (E σ² < 0.8)")
        bottom.set_xlabel(mine[0].regulariser)
        bottom.set_xscale("log")
        bottom.set_xticks(ticks, [number_label(t) for t in ticks])
        bottom.minorticks_off()
        bottom.set_ylim(0, None)
    handles = [Line2D([], [], color=_colour(c, configs), marker="o", label=c) for c in configs]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="white",
            color="0.3",
            label=f"over-pruned (mean active units < {num_factors})",
        )
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    _suptitle(
        fig,
        "Fig. 5: MIG and active units against the regularisation strength (mean ± sd over seeds)",
    )
    return write_png(fig, path)


def _suptitle(fig: Figure, text: str) -> None:
    """A 9-point title wrapped to the figure's width, so a one-panel figure does not cut it off."""
    characters = max(20, int(fig.get_figwidth() * 14))  # about 14 characters an inch at 9 pt
    fig.suptitle(textwrap.fill(text, characters), fontsize=9)


def plot_information_levels(curves: Sequence[InformationCurve], path: str | os.PathLike) -> Path:
    """Fig. 4(c): the information level of each factor's latent and of s's against ε, per model."""
    if not curves:
        raise InvalidArgumentError("plot_information_levels needs at least one curve")
    fig = Figure(figsize=(3.8 * len(curves), 3.6), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, curve in zip(axes, curves):
        for name, level in zip(curve.names, curve.levels):
            style = {"color": "black", "linewidth": 2.5} if name == "s" else {"linewidth": 1.2}
            ax.plot(curve.epsilons, level, marker="o", markersize=3, label=name, **style)
        ax.set_title(curve.setting.label(), fontsize=9)
        ax.set_xlabel("ε (0 = original)")
        ax.set_ylabel("information level 1 − E σ²")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    _suptitle(fig, "Fig. 4(c): information level of the latent encoding each factor and s")
    return write_png(fig, path)


def check_samples(samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``samples`` in display order (original first), checked: uint8 ``[n, 64, 64, C]`` alike."""
    if not samples:
        raise InvalidArgumentError("samples must map at least one config to images, got none")
    ordered = {name: np.asarray(samples[name]) for name in sorted(samples, key=_config_rank)}
    shape = next(iter(ordered.values())).shape
    for name, images in ordered.items():
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:3] != (64, 64):
            raise InvalidArgumentError(
                f"samples[{name!r}] must be uint8 [n, 64, 64, C], got {images.dtype} {images.shape}"
            )
        if images.shape != shape or len(images) == 0:
            raise InvalidArgumentError(
                f"samples have shapes {[x.shape for x in ordered.values()]}; every config must "
                "show the same (at least one) grid points"
            )
    return ordered


@dataclass(frozen=True)
class Difference:
    """One difference row of Fig. 3: ``config - original`` drawn by :func:`signed_difference`."""

    config: str
    epsilon: float | None  # the config's ε, the scale; None: the largest difference
    image: np.ndarray  # uint8 [n, 64, 64, 1]

    @property
    def scale(self) -> str:
        """The value white stands for (black is its negative)."""
        return "largest |Δ|" if self.epsilon is None else number_label(self.epsilon)


def differences(
    samples: Mapping[str, np.ndarray], epsilons: Mapping[str, float] | None = None
) -> list[Difference]:
    """Each config's signed difference to original, ``±ε`` of that config spanning black..white.

    ``epsilons`` maps configs to their ε (a config not in it is scaled by its largest
    difference). Empty without an ``original`` to compare with.
    """
    if ORIGINAL not in samples:
        return []
    epsilons = epsilons or {}
    original = samples[ORIGINAL]
    return [
        Difference(name, epsilons.get(name), signed_difference(x, original, epsilons.get(name)))
        for name, x in samples.items()
        if name != ORIGINAL
    ]


def _clipping_note(original: np.ndarray) -> str:
    """What the clip at 0 and 255 does to the differences of ``original``, if anything."""
    if np.all((original == 0) | (original == 255)):
        return (
            "Clipping at 0 and 255 keeps only the inward half of ±ε: the black background can "
            "only brighten (grey or white) and the white shape only darken (grey or black)."
        )
    if np.any((original == 0) | (original == 255)):
        return (
            "Clipping at 0 and 255 keeps only the inward half of ±ε where a channel is 0 (it can "
            "only brighten) or 255 (it can only darken)."
        )
    return ""


def plot_samples(
    samples: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    columns: int = 6,
    epsilons: Mapping[str, float] | None = None,
) -> Path:
    """Fig. 3: the same grid points in each config, then each signed difference to original.

    A difference row is :func:`signed_difference` at that config's ε (``epsilons``): mid-grey
    = no change, black = −ε, white = +ε, with a grey bar labelled in ε beside it.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    ordered = check_samples(samples)
    shown = differences(ordered, epsilons)
    rows = [(name, images) for name, images in ordered.items()]
    rows += [(f"{d.config} − original\n(±ε = ±{d.scale})", d.image) for d in shown]
    k = min(columns, len(rows[0][1]))
    fig = Figure(figsize=(1.1 * k + 2.0, 1.15 * len(rows) + 0.7), layout="constrained")
    # a narrow last column holds each difference row's grey bar, so every row keeps its width
    axes = fig.subplots(len(rows), k + 1, squeeze=False, width_ratios=[1.0] * k + [0.07])
    for r, (label, images) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            image = images[c]
            ax.imshow(
                image[..., 0] if image.shape[-1] == 1 else image,
                cmap="gray",
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
        axes[r, k].axis("off")
    for r, d in enumerate(shown, start=len(ordered)):
        axes[r, k].axis("on")
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, 255), cmap="gray"), cax=axes[r, k], ticks=[0, 128, 255]
        )
        bar.ax.set_yticklabels([f"−{d.scale}", "0", f"+{d.scale}"], fontsize=7)
    title = "Fig. 3: the same grid points per config"
    if shown:
        mean = " (mean over RGB)" if next(iter(ordered.values())).shape[-1] > 1 else ""
        title += (
            f"; signed differences to original{mean}: mid-grey = 0, black = −ε, white = +ε. "
            + _clipping_note(ordered[ORIGINAL])
        )
    _suptitle(fig, title.strip())
    return write_png(fig, path)


# --- the report ---------------------------------------------------------------------------------


def _seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(set(seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _paper_cell(value: tuple[float, float] | None) -> str:
    return "" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}"


def comparison_markdown(comparison: Comparison, *, training: bool = False) -> str:
    """The rows as a Markdown table; paper columns only where a row has the paper's number."""
    paper = any(r.paper_original or r.paper_other for r in comparison.rows)
    other = comparison.config
    header = ["setting", "metric", ORIGINAL, other, "Δ", "p (Welch)"]
    if paper:
        header += [f"paper {ORIGINAL}", f"paper {other}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.rows:
        decimals = _DECIMALS.get(row.metric, 3)
        cells = [
            row.setting.label(training),
            _METRIC_TITLES.get(row.metric, row.metric),
            row.original.text(decimals),
            row.other.text(decimals),
            f"{row.difference:+.{decimals}f}",
            "n/a" if row.p_value is None else f"{row.p_value:.2g}",
        ]
        if paper:
            cells += [_paper_cell(row.paper_original), _paper_cell(row.paper_other)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_TABLE_TEXT = {
    "perturbed": (
        1,
        "Mean ± sd over seeds (number of seeds in brackets) of each setting on `original` and on "
        "`{config}`; Δ = {config} − original, of the means; p: Welch's two-sided t-test (n/a with "
        "fewer than 2 seeds on a side or no spread on both), one test per row, not corrected "
        "for the number of rows. The paper's effect is a negative Δ in MIG and the other "
        "disentanglement scores; active units show whether the model still uses its latents. "
        "Reconstruction is the Bernoulli loss in nats, as disentanglement_lib computes it: it "
        "includes the target image's own entropy, which is 0 for binary images but hundreds of "
        "nats for grey ones, so it compares settings within a config, not across configs. A "
        "deterministic model (the AE) has no posterior variance, so no active-units row.",
    ),
    "noise": (
        2,
        "The same layout against the uniform-noise control `{config}` of the same ε: noise "
        "without structure should cost much less disentanglement than the perturbation; a drop "
        "as large as in Table 1 would mean the effect is not specific to the pattern.",
    ),
}


def _table_sections(
    records: Sequence[Mapping[str, Any]], kind: str, *, paper: bool, training: bool
) -> list[str]:
    number, reading = _TABLE_TEXT[kind]
    configs = _configs(records)
    compared = [c for c, (k, _) in configs.items() if k == kind]
    title = f"## Table {number}: original vs {kind}"
    if ORIGINAL not in {k for k, _ in configs.values()} or not compared:
        missing = "`original`" if compared else f"a `{kind}` config"
        return [title, f"Not computed: there are no runs on {missing}."]
    dataset = str(records[0]["data"]["dataset"])
    parts = []
    for config in compared:
        comparison = comparison_table(records, config, paper=paper)
        parts += [
            f"## Table {number}: original vs {config} (ε = {number_label(comparison.epsilon)})",
            reading.format(config=config),
        ]
        if comparison.rows:
            parts.append(comparison_markdown(comparison, training=training))
        for side, settings in (
            (config, comparison.original_only),
            (ORIGINAL, comparison.other_only),
        ):
            if settings:
                names = "; ".join(s.label(training) for s in settings)
                parts.append(f"Not in the table, as they have no runs on `{side}`: {names}.")
        if any(r.paper_original or r.paper_other for r in comparison.rows):
            parts.append(
                f"The paper columns: MIG mean ± sd over 10 seeds of the paper's Table {number}, as "
                "a third-party reproduction lists them (SPEC §6; unverified), beside the settings "
                "with the hyperparameters attributed to the paper. The paper's ε was "
                f"{number_label(PAPER[dataset]['epsilon'])}, these runs' "
                f"{number_label(comparison.epsilon)}, and this perturbation is a "
                "reimplementation: compare the direction and size of "
                "the change, not the digits."
            )
    return parts


def _header(records: Sequence[Mapping[str, Any]], identity: Mapping[str, str]) -> list[str]:
    configs = []
    for config, (kind, epsilon) in _configs(records).items():
        kappa = next(
            (r["data"].get("kappa") for r in records if r["data"]["config"] == config), None
        )
        detail = f"ε = {number_label(epsilon)}" + (
            f", κ = {number_label(kappa)}" if kind == "perturbed" and kappa is not None else ""
        )
        runs = sum(r["data"]["config"] == config for r in records)
        configs.append(f"`{config}` ({detail}; {runs} runs)")
    training = sorted(
        {(int(r["steps"]), int(r["batch_size"]), str(r.get("preset"))) for r in records}
    )
    version = identity["package_version"]
    written = "" if version == __version__ else f" (this report by version {__version__})"
    seeds = _seeds_text([int(r["seed"]) for r in records])
    adopted = sum("adopted_from" in r.get("training", {}) for r in records)
    elsewhere = (
        f" {adopted} of the runs were trained by another process and evaluated here (their "
        "records' `training.adopted_from` names each checkpoint)."
        if adopted
        else ""
    )
    return [
        f"# Benchmark report: {identity['data']}",
        f"Data: `{identity['data']}` ({identity['dataset']}); configs {', '.join(configs)}.  \n"
        f"Runs: {len(records)}, seeds {seeds}, by package version {version}{written}.  \n"
        "Training: "
        + "; ".join(f"{s} steps at batch {b} (preset {p})" for s, b, p in training)
        + "."
        + elsewhere,
    ]


def _figure_section(
    title: str,
    out: Path,
    name: str,
    draw: Callable[[Path], Path] | None,
    reading: str,
    missing: str,
) -> list[str]:
    """A figure, its link and how to read it; or why it is missing (and no stale file left)."""
    if draw is None:
        (out / name).unlink(missing_ok=True)
        return [title, f"Not drawn: {missing}"]
    draw(out / name)
    return [title, f"![{title.removeprefix('## ')}]({name})", reading]


def write_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    samples: Mapping[str, np.ndarray] | None = None,
    paper: bool = True,
) -> Path:
    """Write ``out_dir/report.md`` with Tables 1 and 2 and Figs. 3, 4(c), 5 beside it.

    The figures are written first and the report last, so a report never links a missing file.
    """
    identity = check_records(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    training = len({(int(r["steps"]), int(r["batch_size"])) for r in records}) > 1
    parts = _header(records, identity)
    for kind in ("perturbed", "noise"):
        parts += _table_sections(records, kind, paper=paper, training=training)

    reading = "Columns are the same grid points, rows the configs"
    epsilons = {config: epsilon for config, (_, epsilon) in _configs(records).items()}
    if samples is not None:
        ordered = check_samples(samples)
        shown = differences(ordered, epsilons)
        rgb = next(iter(ordered.values())).shape[-1] > 1
        reading += (
            ", then each config's signed difference to `original`"
            + (" (the mean over the RGB channels)" if rgb else "")
            + ", drawn so that its own ±ε spans the grey range: mid-grey = no change, black = −ε, "
            "white = +ε ("
            + ", ".join(f"`{d.config}` ±{d.scale}" for d in shown)
            + "). The perturbation moves every pixel by the full ±ε, the sign of a fixed random "
            "±1 pattern that shifts with s, so its difference is black and white dots; the noise "
            "control moves each pixel by an amount uniform in [−ε, ε], so its difference is "
            "greys. " + _clipping_note(ordered[ORIGINAL])
            if shown
            else " (no difference rows: the samples hold no `original`)."
        ).rstrip()
    parts += _figure_section(
        "## Fig. 3: samples and their difference",
        out,
        FIG3_FILE,
        None if samples is None else lambda path: plot_samples(samples, path, epsilons=epsilons),
        reading,
        "pass `samples` (uint8 images of the same grid points per config) to `write_report`.",
    )

    info = information_curves(records)
    counts = "; ".join(
        f"{c.setting.label(training)}: "
        + ", ".join(f"{n} at ε = {number_label(e)}" for e, n in zip(c.epsilons, c.seeds))
        for c in info
    )
    parts += _figure_section(
        "## Fig. 4(c): information level against ε",
        out,
        FIG4C_FILE,
        (lambda path: plot_information_levels(info, path)) if info else None,
        "One line per factor and for s (black): the information level 1 − E σ² (1 = noiseless, "
        "0 = the prior, unused) of the latent most informative about it, mean over seeds, against "
        "the ε of the data (0 = `original`; noise runs and the AE, which has no posterior "
        "variance, left out); one panel per model, the "
        "setting run at the most ε. Factors encoded by the same latent share its level. The "
        "paper's β-VAE "
        "encodes s as its least noisy coordinate from ε ≈ 0.1 on, on a dSprites where s is an "
        "extra factor independent of the others; in a built dataset s is a function of the "
        "factors, which can carry it without a latent of its own (docs/results-and-harness.md). "
        f"Runs: {counts}.",
        "it needs one model setting run on `original` and on at least one perturbed config.",
    )

    parts += _alignment_section(records, training)

    curves = [c for c in strength_curves(records) if len(c.strengths) > 1]
    num_factors = factor_count(records)
    parts += _figure_section(
        "## Fig. 5: MIG against the regularisation strength",
        out,
        FIG5_FILE,
        (lambda path: plot_strength(curves, path)) if curves else None,
        "Top: MIG; bottom: the number of active units (latents with E σ² < 0.8); both mean ± sd "
        "over seeds, against the strength of each model's regulariser (log axis), one line per "
        "config. A point is over-pruned (hollow marker; the grey band below) when its mean number "
        f"of active units over seeds is below the number of factors, {num_factors}: the model "
        "then cannot encode every factor, so MIG recovered there does not count (the paper's "
        "dashed region). Curves run at a single strength are left out.",
        "it needs runs of a model at two or more strengths of its regulariser.",
    )
    text = "\n\n".join(parts) + "\n"
    return write_bytes_atomic(out / REPORT_FILE, text.encode())
