"""Screen the perturbation's settings by their effect on trained models (issue 17, SPEC §3).

``python -m generation.screen --dataset shapes3d --rule balanced-rotation --kappa 2 --eps 0.175
--workdir ~/pd-runs/screen --out docs/results/shapes3d-screen`` trains one β-VAE on one config of
the procedural grid, with s read off the shipped reference's encoder by the chosen rule, and at
every milestone (``--milestones``) scores MIG and the diagnostics that explain it: the pattern
uptake, the alignment of each latent with s and the least-noise latent. One JSON record per
milestone goes to ``--out``; checkpoints go to ``--workdir`` (keep it outside the repository), and
a rerun resumes. The grid is one memory-mapped file in the work directory, shared by every run,
and the perturbation (or noise) is applied to each batch as it is drawn (the bytes a build
writes), so a run holds no copy of the grid: two runs at once fit beside each other. The
evaluation is the cheap part of the harness's (MIG on 10,000 points and the diagnostics, seconds),
which is what makes a screen affordable. ``--smoke`` runs it on the smoke sub-grid in seconds.
``--summarise`` tabulates the records of ``--out``. ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbed_disentanglement import __version__, ground_truth
from perturbed_disentanglement.benchmark.screening import (
    CHOICE_FILE,
    FIGURE_FILE,
    confirmed_choice,
    plot_learning_curves,
    read_records,
    record_files,
    screen_document,
)
from perturbed_disentanglement.errors import InvalidArgumentError, PerturbedDisentanglementError
from perturbed_disentanglement.metrics import mig
from perturbed_disentanglement.metrics.diagnostics import (
    pattern_uptake,
    s_alignment,
    s_entanglement,
)
from perturbed_disentanglement.perturbation.pattern import (
    Pattern,
    check_epsilon,
    check_kappa,
    perturb,
    uniform_noise,
)
from perturbed_disentanglement.reference.s_rules import S_RULES, choose_s
from perturbed_disentanglement.reference.stage import (
    load_reference,
    preset_ground_truth,
    standardise,
)
from perturbed_disentanglement.reference.strength import isolated_s
from perturbed_disentanglement.training.encoding import encode
from perturbed_disentanglement.training.single import train
from perturbed_disentanglement.util.atomic import write_atomic
from perturbed_disentanglement.util.lock import exclusive
from perturbed_disentanglement.util.shared_array import shared_array

#: The pseudo-rule of the isolated variant: ``s`` independent of the factors (:func:`isolated_s`).
ISOLATED = "isolated"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def shared_grid(gt: Any, workdir: Path) -> np.ndarray:
    """The grid's images as a read-only memory map of one file in ``workdir`` (written once)."""
    return shared_array(
        workdir / "grid" / f"{gt.name}-{len(gt)}-images.npy",
        (len(gt), *gt.image_shape),
        lambda out: np.copyto(out, gt.all_images()),
        what="the grid's images",
        log=log,
    )


def reference_encoding(gt: Any, images: np.ndarray, workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The shipped reference's (mu, logvar) over the whole grid, cached in ``workdir``."""
    folder = workdir / "reference"
    path = folder / f"{gt.name}-{len(gt)}-encoding.npz"
    with exclusive(folder, what=f"the reference encoding {path}", wait=True, log=log):
        if not path.exists():
            ref = load_reference(gt.name)  # its encoder, on this grid's images
            log("encoding the grid with the shipped reference (one thread)")
            mu, logvar = encode(ref.vae(), images, num_threads=1, progress=True)
            write_atomic(path, lambda f: np.savez(f, mu=mu, logvar=logvar))
        data = np.load(path)
        return data["mu"], data["logvar"]


def batch_transform(
    kind: str, s: np.ndarray, eps: float, kappa: float, seed: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The config's images of a batch of grid rows, computed from the originals on the fly (the
    bytes the build writes: a perturbation depends on the row alone), so no perturbed copy of
    the grid is held in memory; None for ``original``."""
    if kind == "original":
        return None
    if kind == "perturbed":
        pattern = Pattern(seed=seed, kappa=kappa)
        return lambda x, idx: perturb(x, s[idx], eps, pattern, threads=1)
    return lambda x, idx: uniform_noise(x, idx, eps, seed, threads=1)


def evaluate(
    model: Any,
    images: np.ndarray,
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    factors: np.ndarray,
    s: np.ndarray,
    *,
    points: int,
    uptake_points: int,
) -> dict[str, Any]:
    """MIG, s-alignment and uptake of ``model`` on ``points`` uniform grid samples."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(images), size=min(points, len(images)), replace=False))
    x = np.asarray(images[idx])
    if transform is not None:
        x = transform(x, idx)
    mu, logvar = encode(model, x, num_threads=1)
    m = mig(mu, factors[idx])
    record: dict[str, Any] = {
        "mig": m["mig"],
        "mig_per_factor": [float(v) for v in m["mig_per_factor"]],
        "factor_latent": [int(v) for v in np.argmax(m["mutual_information"], axis=0)],
        "mutual_information": np.asarray(m["mutual_information"]).round(5).tolist(),
        "s_alignment": s_alignment(mu, logvar, s[idx]),
    }
    u = idx[:uptake_points]
    original = np.asarray(images[u])
    perturbed = x[:uptake_points]
    if transform is None:
        record["uptake"] = None
    else:
        vae = model.vae
        vae.eval()
        with torch.inference_mode():
            recon = torch.sigmoid(vae.decode(torch.from_numpy(mu[:uptake_points]))).numpy()
        record["uptake"] = pattern_uptake(original, perturbed, recon.transpose(0, 2, 3, 1))
    return record


def write_choice(folder: Path, step: int) -> int:
    """``folder/choice.json`` from the records in ``folder`` (:func:`confirmed_choice`), naming
    the records at ``step`` it was taken on. Taken once: records added later (more seeds, other
    settings) do not re-decide it, and an existing choice is not overwritten."""
    if (folder / CHOICE_FILE).exists():
        print(
            f"no choice: {folder / CHOICE_FILE} was already taken (on the records it names); "
            "it is not re-taken on later records: remove it to decide again",
            file=sys.stderr,
        )
        return 1
    files = record_files(folder)
    records = [json.loads(p.read_text()) for p in files]
    try:
        choice = confirmed_choice(records, step)
    except ValueError as exc:
        print(f"no choice: {exc}", file=sys.stderr)
        return 1
    choice["records"] = [p.name for p, r in zip(files, records) if r["step"] == step]
    choice["package_version"] = __version__
    text = (json.dumps(choice, indent=1) + "\n").encode()
    write_atomic(folder / CHOICE_FILE, lambda f: f.write(text))
    print(f"chosen: {json.dumps(choice)}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line (also what :mod:`generation.campaign` checks a jobs file against)."""
    p = argparse.ArgumentParser(
        prog="python -m generation.screen",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=("dsprites", "shapes3d"), default="shapes3d")
    p.add_argument("--config", choices=("perturbed", "noise", "original"), default="perturbed")
    p.add_argument(
        "--rule",
        choices=(*S_RULES, ISOLATED),
        default="balanced-rotation",
        help=f"the s rule; {ISOLATED!r} (with --config perturbed): s an extra factor, uniform and "
        "independent of the others per grid image, from --build-seed (the paper's Fig. 4(c) "
        "dataset), not read off the reference",
    )
    p.add_argument("--kappa", type=float, default=2.0, help="pattern rows per unit of s")
    p.add_argument("--eps", type=float, default=0.175, help="perturbation bound ε")
    p.add_argument("--beta", type=float, default=None, help="β (default: the zoo's)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--build-seed", type=int, default=0, help="pattern and noise seed")
    p.add_argument("--milestones", default="2500,5000,7500,10000", help="steps to score at")
    p.add_argument("--points", type=int, default=10_000, help="MIG / alignment sample size")
    p.add_argument("--uptake-points", type=int, default=1_000, help="uptake sample size")
    p.add_argument("--workdir", type=Path, required=True, help="checkpoints and caches")
    p.add_argument("--smoke", action="store_true", help="the smoke sub-grid: seconds, for tests")
    p.add_argument("--out", type=Path, required=True, help="folder of the JSON records")
    p.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: write OUT/screen.md, the tables of the records in --out, and "
        "OUT/mig_by_step.png, their MIG over training",
    )
    p.add_argument(
        "--choose-at",
        type=int,
        metavar="STEP",
        help="with --summarise: write OUT/choice.json, the perturbed setting with the largest "
        "drop at STEP that shows the effect over 5 seeds (ratio ≤ 0.5, Welch p < 0.05, noise ≥ "
        "0.8× original), naming the records it was taken on, or exit 1 naming why none does; taken "
        "once: an existing choice.json is kept",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.summarise:
        if not a.out.is_dir():
            print(f"error: {a.out}: no such folder of screen records", file=sys.stderr)
            return 2
        (a.out / "screen.md").write_text(screen_document(a.out))
        plot_learning_curves(read_records(a.out), a.out / FIGURE_FILE)
        print((a.out / "screen.md").read_text())
        return 0 if a.choose_at is None else write_choice(a.out, a.choose_at)
    try:
        if a.config != "original":
            check_epsilon(a.eps)
        if a.config == "perturbed":
            check_kappa(a.kappa)
        elif a.rule == ISOLATED:
            raise InvalidArgumentError(
                f"--rule {ISOLATED} is a perturbed dataset's s: use it with --config perturbed "
                f"(the {a.config} config does not depend on s)"
            )
        milestones = sorted({int(v) for v in a.milestones.split(",")})
        if not milestones or milestones[0] < 1:
            raise InvalidArgumentError("--milestones must be positive step counts")
    except (PerturbedDisentanglementError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    beta_label = "" if a.beta is None else f"-beta{a.beta:g}"
    strength = "" if a.config == "original" else f"-eps{a.eps:g}"
    pattern = f"-{a.rule}-k{a.kappa:g}" if a.config == "perturbed" else ""
    name = f"{a.config}{pattern}{strength}{beta_label}-seed{a.seed}"
    a.workdir.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)

    gt = ground_truth(a.dataset)
    if a.smoke:
        gt = preset_ground_truth(gt, "smoke")
    images = shared_grid(gt, a.workdir)
    factors = gt.factors(np.arange(len(gt)))
    if a.rule == ISOLATED:
        s = isolated_s(len(gt), a.build_seed)
        s_choice: dict[str, Any] = {"rule": ISOLATED, "seed": a.build_seed}
    else:
        mu, logvar = reference_encoding(gt, images, a.workdir)
        choice = choose_s(a.rule, mu, logvar, factors, list(gt.factor_names))
        s, _ = standardise(choice.direction(mu), factors)
        s_choice = choice.as_dict()
    entanglement = s_entanglement(s, factors, list(gt.factor_names))
    log(f"{name}: s by {a.rule}: {s_choice}")
    log(f"s entanglement: {entanglement['variance_fraction']}")
    transform = batch_transform(a.config, s, a.eps, a.kappa, a.build_seed)
    hparams = None if a.beta is None else {"beta": a.beta}
    for step in milestones:
        path = a.out / f"{name}-step{step}.json"
        if path.exists():
            continue
        t = time.perf_counter()
        result = train(
            "beta_vae",
            images,
            dataset=a.dataset,
            hparams=hparams,
            steps=step,
            seed=a.seed,
            checkpoint_dir=a.workdir / "runs" / name,
            checkpoint_every=1000,
            keep_checkpoints=1,
            num_threads=1,
            progress=False,
            transform=transform,
        )
        train_seconds = time.perf_counter() - t
        t = time.perf_counter()
        record = evaluate(
            result.objective,
            images,
            transform,
            factors,
            s,
            points=a.points,
            uptake_points=a.uptake_points,
        )
        record.update(
            name=name,
            dataset=a.dataset,
            config=a.config,
            rule=a.rule,
            kappa=a.kappa if a.config == "perturbed" else None,
            epsilon=0.0 if a.config == "original" else a.eps,
            beta=float(result.objective.hparams["beta"]),
            seed=a.seed,
            build_seed=a.build_seed,
            step=step,
            s_choice=s_choice,
            s_entanglement=entanglement,
            train_seconds=round(train_seconds, 1),
            eval_seconds=round(time.perf_counter() - t, 1),
            package_version=__version__,
        )
        text = json.dumps(record, indent=1).encode()
        write_atomic(path, lambda f, text=text: f.write(text))
        al = record["s_alignment"]
        up = record["uptake"]
        log(
            f"{name} step {step}: MIG {record['mig']:.3f}, uptake "
            f"{'-' if up is None else f'{up:.3f}'}, least-noise latent {al['least_noise']} "
            f"(NMI with s {al['least_noise_nmi']:.2f}; best {al['best']} {al['best_nmi']:.2f})"
        )
        if not math.isfinite(record["mig"]):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
