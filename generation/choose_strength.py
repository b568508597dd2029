"""Measure the Fig. 4 quantities over (κ, ε) and choose the perturbation's default strength.

    python -m generation.choose_strength --dataset dsprites

Writes ``docs/fig4_<dataset>.json`` (every measured point, both variants, the choice and the
settings) and ``docs/fig4_<dataset>.png`` (the paper's Fig. 4a/4b at the shipped κ, and the local
and global dominance of s for every κ), and prints the table behind the choice. The choice is
made on the ``isolated`` variant (paper §5.2); ``as_built`` uses the reference's s and is shown
beside it. See :mod:`perturbed_disentanglement.reference.strength` for the definitions.

The shipped strength (``DEFAULT_STRENGTH``) is this criterion's choice unless a screen of trained
models chose another (``python -m generation.screen --choose-at``); the figure shows both.
``--replot`` redraws the figure from the JSON (no measuring), e.g. after the default changed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from perturbed_disentanglement import __version__, ground_truth
from perturbed_disentanglement.errors import InvalidArgumentError, PerturbedDisentanglementError
from perturbed_disentanglement.perturbation.pattern import default_strength
from perturbed_disentanglement.reference.stage import load_reference
from perturbed_disentanglement.reference.strength import (
    EPSILONS,
    KAPPAS,
    S_NAME,
    Fig4Point,
    choose,
    draw_pairs,
    sweep,
)
from perturbed_disentanglement.util.atomic import write_bytes_atomic, write_json_atomic


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.choose_strength",
        description=(
            "Measure s's local expansiveness and explained global variance against every "
            "factor's over a grid of (kappa, epsilon), on random pairs of grid images, and choose "
            "the smallest epsilon at which s dominates locally but not globally (paper §5.2)."
        ),
    )
    parser.add_argument("--dataset", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument(
        "--reference",
        default="shipped",
        help="reference artifact for the as-built variant: a folder, 'shipped' (default) or "
        "'none' (isolated variant only)",
    )
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs per quantity")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairs and the pattern")
    parser.add_argument("--kappas", type=_floats, default=list(KAPPAS))
    parser.add_argument("--epsilons", type=_floats, default=list(EPSILONS))
    parser.add_argument("--out-dir", default="docs", help="where the JSON and PNG go")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="measure nothing: redraw OUT_DIR/fig4_<dataset>.png from its JSON (e.g. after the "
        "shipped strength changed) and print its tables",
    )
    return parser.parse_args(argv)


def _series(points: list[Fig4Point], kappa: float, what: str, name: str) -> tuple[list, list]:
    chosen = sorted((p for p in points if p.kappa == kappa), key=lambda p: p.epsilon)
    return [p.epsilon for p in chosen], [getattr(p, what)[name] for p in chosen]


def figure(
    dataset: str,
    points: dict[str, list[Fig4Point]],
    choice: Fig4Point,
    met: bool,
    shipped: tuple[float, float] | None = None,
) -> bytes:
    """Fig. 4a/4b at the shipped κ (isolated solid, as built dashed; the criterion's κ where the
    shipped one was not measured) and s's dominance per κ, the criterion's choice and the shipped
    strength marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iso = points["isolated"]
    measured = {p.kappa for p in iso}
    if shipped is not None and shipped[0] not in measured:
        shipped = None
    kappa = choice.kappa if shipped is None else shipped[0]
    # one order whatever the source (the JSON's keys are sorted): the factors, then s
    names = sorted(n for n in iso[0].expansiveness if n != S_NAME) + [S_NAME]
    colours = {n: plt.cm.tab10(i) for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, what, title in (
        (axes[0], "expansiveness", "(a) local expansiveness"),
        (axes[1], "explained_variance", "(b) explained global variance"),
    ):
        for variant, style in (("isolated", "-"), ("as_built", "--")):
            if variant not in points:
                continue
            for n in names:
                eps, vals = _series(points[variant], kappa, what, n)
                ax.plot(
                    eps,
                    vals,
                    style,
                    color=colours[n],
                    lw=2.6 if n == S_NAME else 1.4,
                    marker="o" if n == S_NAME else None,
                    ms=4,
                    label=n if variant == "isolated" else None,
                )
        if kappa == choice.kappa:
            ax.axvline(choice.epsilon, color="grey", lw=0.8, ls=":")
        if shipped is not None:
            ax.axvline(shipped[1], color="black", lw=0.8, ls="--")
        ax.set_xlabel("ε")
        ax.set_title(f"{title}, κ = {kappa:g}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("E‖Δx‖ / δ (pixels in [0, 1])")
    axes[1].set_ylabel("Σ_pixels Var E[x | factor]")
    axes[0].legend(fontsize=8, title="solid: isolated\ndashed: as built", title_fontsize=8)
    ax = axes[2]
    kappas = sorted({p.kappa for p in iso})
    for i, k in enumerate(kappas):
        chosen = sorted((p for p in iso if p.kappa == k), key=lambda p: p.epsilon)
        eps = [p.epsilon for p in chosen]
        colour = plt.cm.viridis(i / max(1, len(kappas) - 1))
        ax.plot(eps, [p.dominance()[0] for p in chosen], "-", color=colour, label=f"κ={k:g} local")
        ax.plot(eps, [p.dominance()[1] for p in chosen], ":", color=colour)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.plot([choice.epsilon], [choice.dominance()[0]], "r*", ms=12, label="criterion's choice")
    if shipped is not None and shipped != (choice.kappa, choice.epsilon):
        at = [p for p in iso if (p.kappa, p.epsilon) == shipped]
        if at:
            ax.plot([shipped[1]], [at[0].dominance()[0]], "kD", ms=7, label="shipped")
    ax.set_yscale("log")
    ax.set_xlabel("ε")
    ax.set_title("s / largest factor (isolated): local —, global ···")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    verdict = "meets the criterion" if met else "closest (criterion not met)"
    title = f"{dataset}: Fig. 4's criterion chooses κ = {choice.kappa:g}, ε = {choice.epsilon:g} ({verdict})"
    if shipped is not None and shipped != (choice.kappa, choice.epsilon):
        title += (
            f"; shipped κ = {shipped[0]:g}, ε = {shipped[1]:g} (chosen by the effect on trained "
            "models)"
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def table(points: list[Fig4Point], kappa: float) -> str:
    """Markdown: s against the largest factor at one κ, every ε."""
    rows = [
        "| ε | α_s | largest factor α | EV_s | largest factor EV | s dominates locally, not globally |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted((p for p in points if p.kappa == kappa), key=lambda p: p.epsilon):
        alpha = {k: v for k, v in p.expansiveness.items() if k != S_NAME}
        ev = {k: v for k, v in p.explained_variance.items() if k != S_NAME}
        ka, ke = max(alpha, key=alpha.get), max(ev, key=ev.get)
        rows.append(
            f"| {p.epsilon:g} | {p.expansiveness[S_NAME]:.1f} | {alpha[ka]:.1f} ({ka}) | "
            f"{p.explained_variance[S_NAME]:.1f} | {ev[ke]:.1f} ({ke}) | "
            f"{'**yes**' if p.meets_criterion() else 'no'} |"
        )
    return "\n".join(rows)


def _read(out: Path, dataset: str) -> tuple[dict, dict[str, list[Fig4Point]]]:
    """The measurement a previous run wrote to ``out/fig4_<dataset>.json``."""
    path = out / f"fig4_{dataset}.json"
    if not path.is_file():
        raise InvalidArgumentError(f"--replot: no {path}; measure first (without --replot)")
    result = json.loads(path.read_text(encoding="utf-8"))
    points: dict[str, list[Fig4Point]] = {}
    for d in result["points"]:
        points.setdefault(d["variant"], []).append(Fig4Point.from_dict(d))
    return result, points


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out_dir)
    path = out / f"fig4_{args.dataset}.json"
    try:
        result, points = _read(out, args.dataset) if args.replot else _measure(args)
        choice, met = choose(points.get("isolated", []))
        chosen = {"kappa": choice.kappa, "epsilon": choice.epsilon, "meets_criterion": met}
        if args.replot and result["choice"] != chosen:
            raise InvalidArgumentError(f"{path}: its choice does not follow from its points")
    except PerturbedDisentanglementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shipped = default_strength(args.dataset)
    result["choice"] = chosen
    result["shipped"] = {"kappa": shipped[0], "epsilon": shipped[1]}
    write_json_atomic(path, result)
    png = figure(args.dataset, points, choice, met, shipped)
    write_bytes_atomic(out / f"fig4_{args.dataset}.png", png)
    print(table(points["isolated"], choice.kappa))
    if shipped[0] != choice.kappa and any(p.kappa == shipped[0] for p in points["isolated"]):
        print(f"\nat the shipped κ = {shipped[0]:g}:\n" + table(points["isolated"], shipped[0]))
    print(
        f"\n{args.dataset}: chosen κ = {choice.kappa:g}, ε = {choice.epsilon:g} "
        f"({'meets the criterion' if met else 'NO (κ, ε) meets the criterion; the closest'}); "
        f"shipped κ = {shipped[0]:g}, ε = {shipped[1]:g}; "
        f"{result['pairs_per_quantity']:,} pairs per quantity; {time.perf_counter() - t0:.0f} s; "
        f"wrote {path} and .png"
    )
    return 0


def _measure(args: argparse.Namespace) -> tuple[dict, dict[str, list[Fig4Point]]]:
    """Measure every (variant, κ, ε) point: the result's settings (the choice added by
    :func:`main`) and the points."""
    gt = ground_truth(args.dataset)
    s_values, reference_note = None, "none"
    if args.reference != "none":
        try:
            where = args.dataset if args.reference == "shipped" else args.reference
            ref = load_reference(where, gt, shipped=args.reference == "shipped")
            s_values = ref.s.astype(np.float64)
            latents = ", ".join(str(k) for k in ref.rule["latents"])
            reference_note = (
                f"{args.reference} (MIG {ref.chosen_mig:.3f}, s by the rule "
                f"{ref.rule['rule']} on latents {latents})"
            )
        except PerturbedDisentanglementError as exc:
            if args.reference != "shipped":
                raise
            print(f"note: no as-built variant: {exc}", file=sys.stderr)
    points: dict[str, list[Fig4Point]] = {}
    for variant in ("isolated", "as_built"):
        if variant == "as_built" and s_values is None:
            continue
        pairs = draw_pairs(gt, variant, num_pairs=args.pairs, s_values=s_values, seed=args.seed)
        points[variant] = sweep(
            gt,
            pairs,
            variant,
            kappas=args.kappas,
            epsilons=args.epsilons,
            pattern_seed=args.seed,
            progress=not args.no_progress,
        )
    result = {
        "dataset": args.dataset,
        "package_version": __version__,
        "pairs_per_quantity": args.pairs,
        "seed": args.seed,
        "reference": reference_note,
        "criterion": (
            "isolated variant: smallest epsilon with alpha_s > max_j alpha_j and "
            "EV_s < max_j EV_j (ties: largest alpha_s / max alpha_j); else the closest"
        ),
        "points": [p.as_dict() for v in points.values() for p in v],
    }
    return result, points


if __name__ == "__main__":
    sys.exit(main())
