"""The screen's records read together: the tables of ``screen.md`` and the choice of a default.

A screen record (:mod:`generation.screen`) is one β-VAE, one setting (config, s rule, κ, ε, β,
build seed), one training seed, one milestone: MIG, per-factor MIG, the mutual-information matrix,
the uptake and the s-alignment. Pure functions of records, so every number in ``screen.md`` and
in a committed choice can be recomputed from the committed records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .report import CONFIG_COLOURS, summarize, welch_p, write_png

#: The file a committed choice is written to, beside the records it was read from.
CHOICE_FILE = "choice.json"
#: The learning-curve figure ``screen.md`` shows, beside the records it was drawn from.
FIGURE_FILE = "mig_by_step.png"


def record_files(folder: Path) -> list[Path]:
    """Every screen record (``*.json`` other than a choice) in ``folder``, in name order."""
    return [p for p in sorted(folder.glob("*.json")) if p.name != CHOICE_FILE]


def read_records(folder: Path, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The screen records in ``folder``: every one (:func:`record_files`), or those ``names``."""
    paths = record_files(folder) if names is None else [folder / n for n in names]
    return [json.loads(p.read_text()) for p in paths]


def summary_table(records: list[dict[str, Any]]) -> str:
    """Screen records as one Markdown table, a row per (setting, step)."""
    if not records:
        return "no screen records"
    names = list(dict.fromkeys(r["name"] for r in records))
    factors = None
    lines = []
    for name in names:
        for r in sorted((r for r in records if r["name"] == name), key=lambda r: r["step"]):
            gt_names = r["s_entanglement"]["variance_fraction"]
            factors = factors or list(gt_names)
            al = r["s_alignment"]
            up = "–" if r["uptake"] is None else f"{r['uptake']:.3f}"
            kappa = "–" if r["kappa"] is None else f"{r['kappa']:g}"
            per = " | ".join(f"{v:.2f}" for v in r["mig_per_factor"])
            lines.append(
                f"| {r['config']} | {r['rule'] if r['config'] == 'perturbed' else '–'} | "
                f"{kappa} | {r['epsilon']:g} | "
                f"{r['beta']:g} | {r['seed']} | {r['step']:,} | **{r['mig']:.3f}** | {per} | {up} | "
                f"{al['least_noise']} ({al['least_noise_nmi']:.2f}) | {al['best']} "
                f"({al['best_nmi']:.2f}) |"
            )
    head = (
        "| config | s rule | κ | ε | β | seed | step | MIG | "
        + " | ".join(f"MIG {f}" for f in factors or [])
        + " | uptake | least-noise latent (NMI with s) | latent most informative about s (NMI) |"
    )
    rule = "|" + "---|" * (head.count("|") - 1)
    return "\n".join([head, rule, *lines]) + "\n"


def screen_document(folder: Path) -> str:
    """``screen.md``: the comparison with `original` (where it has several seeds), then every record."""
    records = read_records(folder)
    comparison = seed_comparison(records)
    parts = ["# Screen records\n"]
    if comparison:
        parts += [
            "## Against `original`, across seeds\n",
            "Each setting against `original` of the same β at the same step, where `original` "
            "has several seeds: mean ± sd (seeds), "
            "the ratio of the means, Welch's two-sided p; the per-factor MIG averaged over s's "
            f"factors (those whose conditional mean explains ≥ {S_FACTOR_SHARE:g} of Var(s)) and "
            "over the other factors, the uptake and the least-noise latent's NMI with s are means "
            "over the seeds.\n",
            comparison,
        ]
    if _tracked_settings(records):
        parts += [
            "## MIG over training\n",
            f"![MIG against training step, per seed and mean]({FIGURE_FILE})\n",
            "(a) MIG against the training step for the settings with several seeds and the "
            "`noise` control: a thin line per seed, a thick line for the mean. (b) Each "
            "`perturbed` seed's MIG minus `original`'s of the same seed (same initialisation and "
            "batch order), so the seed spread that the paired difference removes is visible.\n",
        ]
    per_seed = per_seed_table(records)
    if per_seed:
        parts += [
            "## Seed by seed\n",
            "A `perturbed` setting against `original` and `noise` of the same training seed. Mixing "
            f"latents: those with more than {MIXING_NATS:g} nats about two of s's factors; "
            "information in the code: the sum over factors of the most one latent carries about "
            "it (a model that encodes little scores low on MIG without mixing anything).\n",
            per_seed,
        ]
    parts += ["## Every record\n", summary_table(records)]
    return "\n".join(parts)


def _tracked_settings(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The settings a learning-curve figure draws: those with several seeds, and ``noise``
    (the control is shown however many seeds it has), each scored at two steps or more."""
    groups = _by_setting(records)
    chosen = []
    for setting, by_step in groups.items():
        seeds = {k for by_seed in by_step.values() for k in by_seed}
        if len(by_step) >= 2 and (len(seeds) >= 2 or setting[0] == "noise"):
            chosen.append(setting)
    return sorted(chosen, key=_setting_label)


def plot_learning_curves(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """``mig_by_step.png``: MIG over training per seed and mean (a), and the per-seed paired
    difference ``perturbed`` − ``original`` (b); ``None`` (nothing written) when no setting has
    several seeds at several steps."""
    settings = _tracked_settings(records)
    if not settings:
        return None
    groups = _by_setting(records)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, paired = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for n, setting in enumerate(settings):
        by_step = groups[setting]
        colour = CONFIG_COLOURS.get(setting[0], f"C{3 + n}")
        style = styles[sum(s[0] == setting[0] for s in settings[:n]) % len(styles)]
        seeds = sorted({k for by_seed in by_step.values() for k in by_seed})
        for k in seeds:
            steps = sorted(s for s in by_step if k in by_step[s])
            ax.plot(
                steps,
                [by_step[s][k]["mig"] for s in steps],
                style,
                color=colour,
                lw=0.6,
                alpha=0.45,
            )
        # the mean only where every seed is scored: a step with fewer seeds would jump
        steps = [s for s in sorted(by_step) if len(by_step[s]) == len(seeds)]
        means = [np.mean([r["mig"] for r in by_step[s].values()]) for s in steps]
        count = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        ax.plot(
            steps,
            means,
            style,
            color=colour,
            lw=2.4,
            marker="o",
            ms=3.5,
            label=f"{_setting_label(setting)} ({count})",
        )
        if setting[0] != "perturbed":
            continue
        base = groups.get(_original_of(setting), {})
        for k in seeds:
            steps = sorted(s for s in by_step if k in by_step[s] and k in base.get(s, {}))
            if len(steps) >= 2:
                paired.plot(
                    steps,
                    [by_step[s][k]["mig"] - base[s][k]["mig"] for s in steps],
                    style,
                    color=colour,
                    lw=1.0,
                    marker="o",
                    ms=3,
                    alpha=0.8,
                )
                paired.annotate(
                    str(k),
                    (steps[-1], by_step[steps[-1]][k]["mig"] - base[steps[-1]][k]["mig"]),
                    fontsize=7,
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                )
    ax.set(xlabel="training step", ylabel="MIG", title="(a) MIG over training", ylim=(0, None))
    ax.legend(fontsize=7, loc="best")
    paired.axhline(0.0, color="0.4", lw=0.8)
    paired.set(
        xlabel="training step",
        ylabel="MIG, perturbed − original (same seed)",
        title="(b) per seed, perturbed − original (label: seed)",
    )
    return write_png(fig, path)


def _setting(r: dict[str, Any]) -> tuple[Any, ...]:
    """A record's setting: everything but the training seed and the step."""
    rule = r["rule"] if r["config"] == "perturbed" else None
    build_seed = 0 if r["config"] == "original" else r["build_seed"]  # no pattern, no noise
    return (r["config"], rule, r["kappa"], r["epsilon"], r["beta"], build_seed)


def _by_setting(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[int, dict[int, Any]]]:
    """Records as ``{setting: {step: {seed: record}}}``."""
    groups: dict[tuple[Any, ...], dict[int, dict[int, Any]]] = {}
    for r in records:
        groups.setdefault(_setting(r), {}).setdefault(r["step"], {})[r["seed"]] = r
    return groups


def _original_of(setting: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``original`` setting a setting is compared with: the same β."""
    return ("original", None, None, 0.0, setting[4], 0)


def _noise_of(setting: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``noise`` control of a setting: the same ε, β and build seed."""
    return ("noise", None, None, *setting[3:])


def _setting_label(setting: tuple[Any, ...]) -> str:
    config, rule, kappa, eps, beta, build_seed = setting
    parts = [config]
    if rule is not None:
        parts.append(f"{rule}, κ {kappa:g}")
    if config != "original":
        parts.append(f"ε {eps:g}")
    parts.append(f"β {beta:g}")
    if build_seed:
        parts.append(f"build seed {build_seed}")
    return ", ".join(parts)


#: A factor is one of s's when its conditional mean explains at least this share of Var(s).
S_FACTOR_SHARE = 0.1


def _s_factors(record: dict[str, Any]) -> np.ndarray:
    """Which factors (in the record's factor order) are s's: a boolean mask."""
    shares = record["s_entanglement"]["variance_fraction"]
    return np.array([shares[f] >= S_FACTOR_SHARE for f in shares])


def mig_of_s_factors(record: dict[str, Any]) -> tuple[float, float]:
    """Mean per-factor MIG over s's factors and over the others: a drop confined to the first is
    the perturbation's targeted entanglement, a drop in both a general loss."""
    mine = _s_factors(record)
    per = np.asarray(record["mig_per_factor"], np.float64)
    return (
        float(per[mine].mean()) if mine.any() else float("nan"),  # an isolated s has none
        float(per[~mine].mean()) if (~mine).any() else float("nan"),
    )


#: A latent mixes s's factors when it carries more than this many nats about two of them.
MIXING_NATS = 0.25


def mixing_latents(record: dict[str, Any]) -> int:
    """How many latents carry more than :data:`MIXING_NATS` about two or more of s's factors: the
    entanglement the perturbation aims at, read off the record's mutual-information matrix."""
    mi = np.asarray(record["mutual_information"], np.float64)[:, _s_factors(record)]
    return int(((mi > MIXING_NATS).sum(axis=1) >= 2).sum())


def code_information(record: dict[str, Any]) -> float:
    """Σ over factors of the most any one latent carries about it (nats): small when a model
    encodes little at all (a β-VAE that collapsed), which a low MIG alone does not tell from a
    mixed code."""
    return float(np.asarray(record["mutual_information"], np.float64).max(axis=0).sum())


def per_seed_table(records: list[dict[str, Any]]) -> str:
    """Each ``perturbed`` setting with several seeds, seed by seed against ``original`` (and
    ``noise`` of its ε) of the same seed, at the last step both have for two seeds or more: the
    same initialisation and batch order on every config, so a seed's difference is the
    perturbation's alone. Per config: MIG, the MIG of s's factors, the latents that mix them
    (:func:`mixing_latents`) and the information in the code (:func:`code_information`)."""
    groups = _by_setting(records)
    parts = []
    for setting in sorted(groups, key=_setting_label):
        if setting[0] != "perturbed":
            continue
        base = groups.get(_original_of(setting), {})
        noise = groups.get(_noise_of(setting), {})
        shared = [
            s for s in groups[setting] if len(set(groups[setting][s]) & set(base.get(s, {}))) > 1
        ]
        if not shared:
            continue
        step = max(shared)
        mine, theirs = groups[setting][step], base[step]
        rows = []
        for k in sorted(set(mine) & set(theirs)):
            p, o = mine[k], theirs[k]
            n = noise.get(step, {}).get(k)
            noise_mig = "–" if n is None else f"{n['mig']:.3f}"
            rows.append(
                f"| {k} | {o['mig']:.3f} | {p['mig']:.3f} | {p['mig'] / o['mig']:.2f}× | "
                f"{noise_mig} | {mig_of_s_factors(p)[0]:.2f} "
                f"({mig_of_s_factors(o)[0]:.2f}) | {mixing_latents(p)} ({mixing_latents(o)}) | "
                f"{code_information(p):.2f} ({code_information(o):.2f}) |"
            )
        parts += [
            f"**{_setting_label(setting)}**, step {step:,}:\n",
            "| seed | `original` MIG | `perturbed` MIG | ratio | `noise` MIG | MIG of s's factors, "
            "`perturbed` (`original`) | mixing latents, `perturbed` (`original`) | information in "
            "the code, nats, `perturbed` (`original`) |",
            "|" + "---|" * 8,
            *rows,
            "",
        ]
    return "\n".join(parts)


def seed_comparison(records: list[dict[str, Any]]) -> str:
    """Each setting against ``original`` of the same β at the same step, over seeds.

    One Markdown row per (setting, step) with an ``original`` of at least two seeds beside it (a
    setting of one seed has no sd and no p): mean ± sd of MIG (seeds), the ratio of the means,
    Welch's two-sided p, the per-factor MIG of s's factors and of the others
    (:func:`mig_of_s_factors`), the mean uptake, and the least-noise latent's NMI with s (mean)
    with the seeds where it follows s. The paper's claim is read off these rows: ``perturbed``
    ≤ 0.5× with p < 0.05, ``noise`` ≥ 0.8×.
    """
    groups = _by_setting(records)
    rows = []
    for setting, by_step in sorted(groups.items(), key=lambda kv: _setting_label(kv[0])):
        for step, by_seed in sorted(by_step.items()):
            base = groups.get(_original_of(setting), {}).get(step, {})
            if len(base) < 2:
                continue
            mig_values = [by_seed[k]["mig"] for k in sorted(by_seed)]
            base_values = [base[k]["mig"] for k in sorted(base)]
            here, there = summarize(mig_values), summarize(base_values)
            p = None if setting[0] == "original" else welch_p(mig_values, base_values)
            uptakes = [r["uptake"] for r in by_seed.values() if r["uptake"] is not None]
            nmi = float(np.mean([r["s_alignment"]["least_noise_nmi"] for r in by_seed.values()]))
            follows = sum(bool(r["s_alignment"]["follows_s"]) for r in by_seed.values())
            s_part, rest = np.mean([mig_of_s_factors(r) for r in by_seed.values()], axis=0)
            rows.append(
                f"| {_setting_label(setting)} | {step:,} | {', '.join(str(k) for k in sorted(by_seed))}"
                f" | **{here.text()}** | {there.text()} | {here.mean / there.mean:.2f}× | "
                f"{'–' if p is None else f'{p:.3g}'} | {s_part:.2f} | {rest:.2f} | "
                f"{'–' if not uptakes else f'{np.mean(uptakes):.3f}'} | {nmi:.2f} | "
                f"{follows} of {len(by_seed)} |"
            )
    if not rows:
        return ""
    head = (
        "| setting | step | seeds | MIG | `original` MIG | ratio | p (Welch) | MIG of s's factors | "
        "MIG of the other factors | uptake | least-noise latent's NMI with s | follows s |"
    )
    return "\n".join([head, "|" + "---|" * 12, *rows]) + "\n"


#: What a default must show (issue 17): over at least this many seeds, ``perturbed`` at most
#: this ratio of ``original`` with Welch's p below ``P_BELOW``, and ``noise`` at least
#: ``NOISE_AT_LEAST`` of it.
MIN_SEEDS = 5
RATIO_AT_MOST = 0.5
P_BELOW = 0.05
NOISE_AT_LEAST = 0.8


def _mig_by_seed(groups: dict, setting: tuple[Any, ...], step: int) -> dict[int, float]:
    return {k: r["mig"] for k, r in groups.get(setting, {}).get(step, {}).items()}


def confirmed_choice(records: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """The perturbed setting with the largest drop at ``step`` that passes the paper's test.

    Candidates: every ``perturbed`` setting with :data:`MIN_SEEDS` seeds beside an ``original``
    of as many at the same β and step; it passes with a ratio of means ≤ :data:`RATIO_AT_MOST`,
    Welch's p < :data:`P_BELOW`, and ``noise`` of the same ε, β and build seed (any number of
    seeds ≥ 1 at ``step``) at ≥ :data:`NOISE_AT_LEAST` of ``original``. Returns the setting and
    its evidence (the per-seed MIGs, ratios and p), or raises ``ValueError`` naming why none
    passes, so a default can only be written from records that show the effect.
    """
    groups = _by_setting(records)
    passing, reasons = [], []
    for setting in groups:
        config, rule, kappa, eps, beta, build_seed = setting
        if config != "perturbed":
            continue
        label = _setting_label(setting)
        mine = _mig_by_seed(groups, setting, step)
        if not mine:
            continue
        base = _mig_by_seed(groups, _original_of(setting), step)
        noise = _mig_by_seed(groups, _noise_of(setting), step)
        if len(mine) < MIN_SEEDS or len(base) < MIN_SEEDS:
            reasons.append(f"{label}: {len(mine)} seeds, original {len(base)} (need {MIN_SEEDS})")
            continue
        original_mean = float(np.mean(list(base.values())))
        ratio = float(np.mean(list(mine.values()))) / original_mean
        p = welch_p(list(mine.values()), list(base.values()))
        noise_ratio = float(np.mean(list(noise.values()))) / original_mean if noise else None
        verdict = {
            f"ratio {ratio:.2f} > {RATIO_AT_MOST}": ratio > RATIO_AT_MOST,
            f"p {'undefined' if p is None else f'{p:.3g}'} ≥ {P_BELOW}": p is None or p >= P_BELOW,
            "no noise run of its ε": noise_ratio is None,
            f"noise ratio {noise_ratio or 0:.2f} < {NOISE_AT_LEAST}": noise_ratio is not None
            and noise_ratio < NOISE_AT_LEAST,
        }
        failed = [why for why, bad in verdict.items() if bad]
        if failed:
            reasons.append(f"{label}: {'; '.join(failed)}")
            continue
        passing.append(
            {
                "dataset": next(iter(groups[setting][step].values()))["dataset"],
                "config": "perturbed",
                "s_rule": rule,
                "kappa": kappa,
                "epsilon": eps,
                "beta": beta,
                "build_seed": build_seed,
                "step": step,
                "mig": {
                    "perturbed": {str(k): v for k, v in sorted(mine.items())},
                    "original": {str(k): v for k, v in sorted(base.items())},
                    "noise": {str(k): v for k, v in sorted(noise.items())},
                },
                "ratio": ratio,
                "welch_p": p,
                "noise_ratio": noise_ratio,
            }
        )
    if not passing:
        raise ValueError(
            f"no perturbed setting at step {step:,} passes: "
            + (" | ".join(reasons) or "no perturbed records at this step")
        )
    return min(passing, key=lambda c: c["ratio"])
