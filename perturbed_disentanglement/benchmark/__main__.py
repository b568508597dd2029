"""``python -m perturbed_disentanglement.benchmark``: the paper's sweep on a published dataset.

    python -m perturbed_disentanglement.benchmark --data perturbed-dsprites \\
        --models beta_vae --configs original,perturbed,noise --preset cpu --out results/dsprites

One run per (model, hyperparameters, config, seed); a rerun skips finished runs and resumes
interrupted ones; the report (``report.md`` and figures) is rebuilt from every record in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InvalidArgumentError, PerturbedDisentanglementError
from .data import dataset_of
from .execute import ADOPTED_FILE, loader, run_in_process
from .plan import (
    PRESETS,
    benchmark_preset,
    parse_configs,
    parse_grid,
    parse_models,
    parse_seeds,
    plan_runs,
)
from .records import iter_records, open_results, results_identity, run_dir

#: Grid points shown in Fig. 3 (evenly spread over the grid).
FIG3_POINTS = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = "; ".join(
        f"{p.name}: {p.steps:,} steps, seeds {p.seeds[0]}-{p.seeds[-1]}" for p in PRESETS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m perturbed_disentanglement.benchmark",
        description=(
            "Train zoo models on the configs of a published perturbed dataset (read with "
            "datasets.load_dataset), score each run (MIG, DCI, SAP, FactorVAE score, active units, "
            "reconstruction, information levels), write one JSON record per run and a report "
            "with the paper's Tables 1-2 and Figs. 3, 4(c) and 5."
        ),
        epilog=f"Presets — {presets}. Finished runs are skipped; interrupted ones resume.",
    )
    parser.add_argument(
        "--data",
        default="perturbed-dsprites",
        help="Hub repository id or local dataset folder (default: perturbed-dsprites)",
    )
    parser.add_argument(
        "--models",
        default="beta_vae",
        help="comma-separated zoo models or 'all' (beta_vae, beta_tcvae, factor_vae, dip_vae_i, "
        "dip_vae_ii, ae)",
    )
    parser.add_argument("--configs", default="original,perturbed,noise", help="configs to train on")
    parser.add_argument("--preset", default="cpu", choices=list(PRESETS), help="compute budget")
    parser.add_argument("--seeds", default=None, help="e.g. 0-9 or 0,3,5 (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,…",
        help="sweep a hyperparameter (repeatable), e.g. --grid beta=1,2,4,8,16",
    )
    parser.add_argument("--out", default=None, help="results folder (default: results/<data>)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes for the metrics' classifier fits (DCI, SAP); values do not depend on it",
    )
    parser.add_argument(
        "--stack", type=int, default=8, help="runs trained together on a GPU (default 8)"
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run each run as a Ray task: alone, a local runtime; with an address (auto, "
        "HOST:PORT), that cluster (--out must then be shared storage)",
    )
    parser.add_argument("--cache-dir", default=None, help="datasets' cache folder")
    parser.add_argument(
        "--share-decoded",
        metavar="DIR",
        default=None,
        help="decode each config once into DIR and memory-map it, so that parallel sweeps "
        "(e.g. two --seeds splits, one thread each) share one copy in memory",
    )
    parser.add_argument(
        "--adopt",
        metavar="DIR",
        default=None,
        help="before training a run, look under DIR (e.g. a screening campaign's runs/ folder) "
        "for a checkpoint of the same run (model, hyperparameters, seed, batch size, precision "
        "and images all checked) and start from it: a run trained there to its steps is only "
        "evaluated; its record names the checkpoint it came from",
    )
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="evaluate only: a run with no checkpoint at its steps (its own or one --adopt finds) "
        "fails with a message instead of training",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report only")
    parser.add_argument("--no-report", action="store_true", help="skip the report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def default_out(data: str) -> Path:
    return Path("results") / Path(data.rstrip("/")).name


def write_report(out: Path, data: str | None, cache_dir: str | None) -> Path | None:
    """The report of every record in ``out`` (Fig. 3 from ``data`` when it can be read)."""
    from .report import write_report as render

    records = list(iter_records(out))
    if not records:
        print(f"no finished runs in {out}: no report")
        return None
    samples = None
    if data is not None:
        from .data import sample_images

        configs = sorted({r["data"]["config"] for r in records})
        n = records[0]["data"]["num_images"]
        points = [round(i * (n - 1) / (FIG3_POINTS - 1)) for i in range(FIG3_POINTS)]
        try:
            samples = sample_images(data, configs, points, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - the report goes on without Fig. 3
            print(f"Fig. 3 left out: cannot read samples from {data} ({exc})")
    return render(records, out, samples=samples)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else default_out(args.data)
    t0 = time.perf_counter()
    try:
        if args.report_only:
            report = write_report(out, args.data, args.cache_dir)
            if report:
                print(f"report: {report}")
            return 0
        if args.adopt is not None and not Path(args.adopt).is_dir():
            raise InvalidArgumentError(f"--adopt {args.adopt}: no such folder of checkpoints")
        preset = benchmark_preset(args.preset)
        models = parse_models(args.models)
        configs = parse_configs(args.configs)
        seeds = parse_seeds(args.seeds) if args.seeds else list(preset.seeds)
        steps = args.steps if args.steps is not None else preset.steps
        grid = parse_grid(args.grid)
        load = loader(
            args.data,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
            decoded_dir=args.share_decoded,
        )
        # Reads the first config's columns (not its images): the data loads before anything trains.
        dataset = dataset_of(
            args.data, configs[0], cache_dir=args.cache_dir, progress=not args.no_progress
        )
        specs = plan_runs(models, configs, seeds, dataset=dataset, steps=steps, grid=grid)
        print(
            f"{len(specs)} run(s) on {args.data} ({dataset}): {', '.join(models)} × "
            f"{', '.join(configs)} × seeds {seeds} × {steps:,} steps; results in {out}"
        )
        if args.dry_run:
            for spec in specs:
                print(f"  {spec.run_id}")
            return 0
        open_results(out, results_identity(args.data, dataset))
        common = dict(
            preset=preset.name,
            sizes=preset.sizes,
            checkpoint_every=preset.checkpoint_every,
            device=args.device,
            num_threads=args.threads,
            adopt=args.adopt,
            allow_training=not args.no_train,
        )
        if args.ray is not None:
            from .ray_backend import run_with_ray

            address = None if args.ray == "local" else args.ray
            outcome = run_with_ray(specs, load, out, address=address, **common)
        else:
            outcome = run_in_process(
                specs,
                load,
                out,
                stack=args.stack,
                n_jobs=args.jobs,
                progress=not args.no_progress,
                **common,
            )
        adopted = sum((run_dir(out, rid) / ADOPTED_FILE).exists() for rid in outcome.trained)
        print(
            f"\n{len(outcome.trained)} run(s) finished here ({adopted} of them from an adopted "
            f"checkpoint), {len(outcome.skipped)} already finished, "
            f"{len(outcome.failed)} failed ({time.perf_counter() - t0:.0f} s)"
        )
        for rid, error in outcome.failed.items():
            print(f"  failed: {rid}: {error} (see {out}/runs/{rid}/error.json; rerun to retry)")
        if not args.no_report:
            report = write_report(out, args.data, args.cache_dir)
            if report:
                print(f"report: {report}")
        return 1 if outcome.failed else 0
    except PerturbedDisentanglementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
