"""Train the reference β-VAEs and write the reference artifact (model, s, record).

    python -m generation.reference --dataset dsprites --preset cpu --workdir ~/pd-runs/dsprites

The restarts checkpoint into ``--workdir`` (keep it outside the repository: it holds gigabytes of
checkpoints over hours); rerunning the same command resumes an interrupted run. ``--restart R`` trains and scores only
restart R, so the restarts can share the cores (or machines on a shared filesystem) in separate
processes; the run without ``--restart`` then waits for them and finishes. The artifact is
written atomically to ``--out``; the shipped references are ``--out
perturbed_disentanglement/reference/shipped/<dataset>`` with the ``cpu`` preset.

``--s-rule`` picks how s is read off the chosen restart (``paper``: its least-noise latent;
``entangled-latent``, ``balanced-rotation``: entangled by construction, see
``perturbed_disentanglement/reference/s_rules.py``). ``--from-reference PATH`` re-applies a rule to
an existing artifact without training (minutes: the grid is encoded once):

    python -m generation.reference --dataset shapes3d --from-reference shapes3d \
        --s-rule balanced-rotation --out perturbed_disentanglement/reference/shipped/shapes3d \
        --overwrite --workdir ~/pd-runs/shapes3d
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.errors import PerturbedDisentanglementError
from perturbed_disentanglement.metrics.diagnostics import entanglement_text
from perturbed_disentanglement.reference.s_rules import DEFAULT_S_RULE, S_RULES
from perturbed_disentanglement.reference.stage import (
    PRESETS,
    load_reference,
    run_reference,
    train_restart,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = "; ".join(
        f"{p.name}: {p.restarts} restarts × {p.steps:,} steps"
        + (" on a sub-grid" if p.strides else "")
        for p in PRESETS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m generation.reference",
        description=(
            "Train R restarts of a β-VAE (one latent per factor) on a ground truth, score each "
            "(MIG, active units, posterior variances), keep the one with the LOWEST MIG (the most "
            "entangled, paper §4.1) and write s, a direction in its latents chosen by --s-rule "
            "(the paper's: μ_j, j = argmin E σ²), standardised over the grid, with the model "
            "and a JSON record that says how entangled s is."
        ),
        epilog=f"Presets — {presets}.",
    )
    parser.add_argument("--dataset", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument(
        "--source", default=None, help="official file (default: the procedural ground truth)"
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--restarts", type=int, default=None, help="override the preset's R")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--seed", type=int, default=0, help="base seed (restart r: seed·1000+r)")
    parser.add_argument(
        "--restart",
        type=int,
        default=None,
        metavar="R",
        help="train and score only restart R (0-based), in parallel with the full run; "
        "writes no artifact",
    )
    parser.add_argument(
        "--s-rule",
        default=DEFAULT_S_RULE,
        choices=S_RULES,
        help="how s is read off the chosen restart (paper: its least-noise latent)",
    )
    parser.add_argument(
        "--from-reference",
        metavar="PATH",
        default=None,
        help="re-apply --s-rule to this artifact (or 'dsprites'/'shapes3d': the shipped one) "
        "instead of training",
    )
    parser.add_argument("--workdir", required=True, help="checkpoints and caches (resumable)")
    parser.add_argument("--out", default=None, help="artifact folder (default: WORKDIR/reference)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _protocol(args: argparse.Namespace) -> dict[str, Any]:
    """What the full run and a single ``--restart`` read alike (they must agree to share a
    work directory)."""
    return {
        "preset_name": args.preset,
        "workdir": args.workdir,
        "seed": args.seed,
        "restarts": args.restarts,
        "steps": args.steps,
        "device": args.device,
        "num_threads": args.threads,
        "progress": not args.no_progress,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.restart is not None:
        return _one_restart(args)
    out = Path(args.out) if args.out else Path(args.workdir) / "reference"
    if out.exists() and not args.overwrite:
        print(f"error: {out} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        gt = ground_truth(args.dataset, args.source)
        if args.from_reference:
            reference = load_reference(args.from_reference, gt).with_rule(
                args.s_rule, gt, num_threads=args.threads, progress=not args.no_progress
            )
        else:
            reference = run_reference(gt, s_rule=args.s_rule, **_protocol(args))
        reference.save(out, overwrite=args.overwrite)
    except (PerturbedDisentanglementError, OSError) as exc:  # OSError: a missing --source
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = reference.record
    print(
        f"\nreference for {reference.dataset} written to {out} ({time.perf_counter() - t0:.0f} s)"
    )
    print(f"{'restart':>7} {'seed':>6} {'MIG':>7} {'active':>6}  mean σ² per latent")
    for e in record["restarts"]:
        mark = "  ← chosen (lowest MIG)" if e["restart"] == record["chosen"] else ""
        variances = " ".join(f"{v:.3f}" for v in e["mean_variance"])
        print(
            f"{e['restart']:>7} {e['seed']:>6} {e['mig']:>7.4f} {e['active_units']:>6}  {variances}{mark}"
        )
    rule = reference.rule
    print(
        f"s by rule {rule['rule']!r}: latents {rule['latents']}, sign follows "
        f"{record['s']['sign_factor']}; sha256 {record['s']['sha256'][:16]}…"
    )
    print(entanglement_text(reference.entanglement))
    return 0


def _one_restart(args: argparse.Namespace) -> int:
    try:
        evaluation = train_restart(
            ground_truth(args.dataset, args.source), args.restart, **_protocol(args)
        )
    except (PerturbedDisentanglementError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"restart {evaluation['restart']} trained and scored in {args.workdir}: MIG "
        f"{evaluation['mig']:.4f}; run without --restart to choose and write the artifact"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
