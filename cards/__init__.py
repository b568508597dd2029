"""Dataset cards: rendered from a build's manifest with huggingface_hub's card classes.

``render_card(manifest, builder, manifest_sha256)`` fills ``cards/template.md`` (Jinja) through
``DatasetCard.from_template`` with a ``DatasetCardData`` whose YAML carries the licence, tags and
``datasets``' own ``configs:`` and ``dataset_info`` entries; nothing in the YAML is written by
hand. The prose states what the manifest records (reference restarts, κ, ε, seeds, encoders).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .figure import comparison_figure, difference_image

TEMPLATE = Path(__file__).resolve().parent / "template.md"

_TITLES = {"dsprites": "dSprites", "shapes3d": "Shapes3D"}
_GROUND_TRUTH = {
    "dsprites": (
        "The images are the package's procedural dSprites: the 737,280 official sprites "
        "rasterised at 64×64 from vector shapes; the square and ellipse match the official "
        "frames exactly and the heart, whose outline was never published, was fitted to 66 real "
        "frames (mean IoU 0.9997). It is a re-rendering, not the official file."
    ),
    "shapes3d": (
        "The images are the package's procedural Shapes3D: a numpy ray-cast re-rendering of the "
        "480,000-image MuJoCo scene. Camera, room, sky and colours match the real images to about "
        "a pixel, but shading, shadows and the wall texture are approximated, so numbers on it "
        "are not numbers on the official dataset."
    ),
}


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


def _strides(strides: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (strides or {}).items())


def _columns(builder: Any, manifest: dict[str, Any]) -> list[dict[str, str]]:
    cols = [
        {
            "name": "image",
            "type": f"Image ({builder.image_mode}, PNG)",
            "what": "the 64×64 image of this config",
        },
        {
            "name": "index",
            "type": "int64",
            "what": "grid index: row-major over the factors, last fastest (the official files')",
        },
    ]
    for f in builder.factors:
        names = list(f.categories) if f.categories else None
        what = (
            f"class of {f.name}: {', '.join(names)}"
            if names
            else f"class of {f.name}: {f.size} values, named by their value"
        )
        cols.append({"name": f.name, "type": f"ClassLabel ({f.size})", "what": what})
    for f in builder.factors:
        cols.append(
            {
                "name": f"{f.name}_value",
                "type": "float32",
                "what": f"value of {f.name}, as in the official files",
            }
        )
    cols.append(
        {
            "name": "s",
            "type": "float32",
            "what": "the reference VAE's standardised leading latent, which the pattern follows "
            "(the same in every config)",
        }
    )
    cols.append({"name": "epsilon", "type": "float32", "what": "the config's ε (0 for original)"})
    return cols


_RULE_TEXT = {
    "paper": "the paper's: the latent with the least posterior variance over the grid",
    "entangled-latent": "the active latent least dominated by a single factor",
    "balanced-rotation": "the rotation of the two least-noise latents that balances their "
    "factors' shares of Var(s)",
}


def _entanglement_text(entanglement: dict[str, Any]) -> str:
    shares = ", ".join(
        f"{name} {value:.2f}"
        for name, value in sorted(entanglement["variance_fraction"].items(), key=lambda kv: -kv[1])
        if value >= 0.01
    )
    if entanglement["dominated"]:
        return (
            f"{shares}. **Warning:** `s` is dominated by {entanglement['dominant']} (more than "
            f"{entanglement['threshold']} of its variance)"
        )
    return f"{shares}; no factor dominates it"


def _limitations(manifest: dict[str, Any]) -> list[str]:
    ref = manifest["reference"]
    proto = ref["protocol"]
    items = []
    if manifest["ground_truth"]["source"] == "procedural":
        items.append(_GROUND_TRUTH[manifest["dataset"]])
    else:
        items.append(
            f"Built from the official file `{manifest['ground_truth'].get('source_file')}`; "
            + (
                "s was recomputed on it by the reference's encoder."
                if ref.get("recomputed")
                else "s was computed on these images."
            )
        )
    items.append(
        f"The reference protocol was the affordable one: {proto['restarts']} restart(s) × "
        f"{proto['steps']:,} steps (preset `{proto['preset']}`), where the paper's is 10 × "
        "300,000 steps (disentanglement_lib); a longer protocol may choose another restart and "
        "another s."
    )
    items.append(
        "κ (the pattern's rows per unit of s) is not published by the paper: it and ε are this "
        "build's parameters. The package's defaults are measured: by their effect on trained "
        "β-VAEs where a screen has shown one (`python -m generation.screen`, 5 seeds), else by "
        "the paper's Fig. 4 criterion (`python -m generation.choose_strength`)."
    )
    if manifest["smoke"]:
        items.append("This is a smoke build: a sub-grid and a briefly trained reference.")
    return items


def build_command(manifest: dict[str, Any]) -> str:
    """The command line that rebuilds this folder, from the manifest's build parameters."""
    build, gt, ref = manifest["build"], manifest["ground_truth"], manifest["reference"]
    words = ["python -m generation.build", f"--dataset {manifest['dataset']}"]
    if manifest["smoke"]:
        words.append("--smoke")
    if gt.get("source_file"):
        words.append(f"--source {gt['source_file']}")
    if ref.get("source") == "path":
        words.append(f"--reference {ref.get('path')}")
    if ref.get("s_rule_requested"):
        words.append(f"--s-rule {ref['s_rule_requested']}")
    elif ref.get("source") == "retrained" and not manifest["smoke"]:
        words.append(f"--retrain --preset {ref.get('preset')}")
    words.append("--eps " + " ".join(repr(float(e)) for e in build["epsilons"]))
    words.append(f"--kappa {float(build['kappa'])!r}")
    words.append(f"--seed {build['seed']}")
    kinds = list(dict.fromkeys(manifest["configs"][n]["kind"] for n in build["configs"]))
    words.append("--configs " + ",".join(kinds))
    return " ".join(words)


def _variable(config: str) -> str:
    return re.sub(r"\W", "_", config)


def usage_lines(manifest: dict[str, Any]) -> list[str]:
    """``load_dataset`` lines for the configs this folder holds (the default config first)."""
    build = manifest["build"]
    default = build["default_config"]
    repo = manifest["name"]
    lines = [f'{_variable(default)} = load_dataset("{repo}", split="train")  # the default config']
    for name in build["configs"]:
        if name != default:
            lines.append(f'{_variable(name)} = load_dataset("{repo}", "{name}", split="train")')
    return lines


def figure_caption(manifest: dict[str, Any]) -> str:
    """How to read ``images/samples.png`` (drawn by :func:`comparison_figure`): its columns,
    the signed ±ε scale of the differences and, on binary dSprites, what clipping leaves."""
    figure = manifest["figure"]
    eps = figure.get("epsilon")
    scale = f"±ε (ε = {eps:g})" if eps is not None else "±ε"
    text = (
        "Columns: original, perturbed, noise, and the perturbed and noise images' signed "
        "differences from the original"
        + (" (the mean over the RGB channels)" if manifest["dataset"] == "shapes3d" else "")
        + f", drawn so that {scale} spans the grey range: mid-grey is no change, black −ε, "
        "white +ε. The perturbation moves every pixel by the full ±ε (the sign of a fixed random "
        "±1 pattern that shifts with s), so its difference is black and white dots; the noise "
        "moves each pixel by an amount uniform in [−ε, ε], so its difference is greys."
    )
    if manifest["dataset"] == "dsprites":
        text += (
            " dSprites is binary, so clipping at 0 and 255 keeps only the inward half of ±ε: the "
            "black background can only brighten (grey or white), the white sprite only darken "
            "(grey or black)."
        )
    else:
        text += " Clipping at 0 and 255 keeps only the inward half of ±ε on saturated channels."
    return text


def card_context(manifest: dict[str, Any], builder: Any, manifest_sha256: str) -> dict[str, Any]:
    """The template's variables, all derived from the manifest."""
    from builders.citations import DSPRITES, LICENSE, PAPER, SHAPES3D

    dataset = manifest["dataset"]
    ref = manifest["reference"]
    proto = ref["protocol"]
    build = manifest["build"]
    configs = []
    for name in build["configs"]:  # the build's order (the manifest's keys are sorted)
        c = manifest["configs"][name]
        configs.append(
            {
                "name": name,
                "default": name == build["default_config"],
                "kind": c["kind"],
                "epsilon": f"{c['epsilon']:g}",
                "max_step": c["max_step"],
                "shards": len(c["shards"]),
                "size": _size(c["bytes"]),
            }
        )
    restarts = [
        {
            "restart": r["restart"],
            "chosen": r["restart"] == ref["chosen"],
            "seed": r["seed"],
            "mig": f"{r['mig']:.4f}",
            "active": r["active_units"],
            "variance": ", ".join(f"{v:.3f}" for v in r["mean_variance"]),
        }
        for r in ref["restarts"]
    ]
    source = {
        "shipped": "the reference shipped with the package",
        "path": "a reference artifact given to the build",
        "retrained": "trained by this build",
    }[ref["source"]]
    summary = (
        f"{proto['restarts']} restart(s) of a β-VAE (β = {proto['hparams'].get('beta')}, "
        f"{proto['latent_dim']} latents, {proto['steps']:,} steps each, preset "
        f"`{proto['preset']}`) were trained on the original grid and scored by MIG "
        f"(disentanglement_lib's protocol on {proto['mig_points']:,} points); the restart with the "
        f"lowest MIG, restart {ref['chosen']} (MIG {ref['chosen_mig']:.4f}), was kept: the most "
        f"entangled alignment the architecture produces (paper §4.1). Source: {source}."
    )
    gt = manifest["ground_truth"]
    if gt["source"] == "procedural":
        gt_summary = (
            f"Procedural {_TITLES[dataset]}, {gt['num_images']:,} images "
            f"(fingerprint `{gt['fingerprint']}`)."
        )
    else:
        gt_summary = (
            f"Official file `{gt.get('source_file')}` (sha256 `{gt.get('source_sha256')}`)."
        )
    if manifest["smoke"]:
        gt_summary += (
            f" Smoke sub-grid: every k-th value of each factor ({_strides(gt['strides'])})."
        )
    main = next(
        (
            manifest["configs"][n]
            for n in build["configs"]
            if manifest["configs"][n]["kind"] != "original"
        ),
        None,
    )
    pattern = manifest["pattern"]
    png = next(iter(manifest["png"].values()))
    figure = manifest["figure"]
    cite = PAPER + "\n\n" + (DSPRITES if dataset == "dsprites" else SHAPES3D)
    return {
        "pretty_name": builder.pretty_name,
        "dataset_title": _TITLES[dataset],
        "smoke": manifest["smoke"],
        "num_rows": gt["num_images"],
        "full_rows": gt.get("full_num_images", gt["num_images"]),
        "strides": _strides(gt.get("strides")),
        "figure_path": figure["path"],
        "figure_alt": f"original, perturbed and noise {_TITLES[dataset]} images",
        "figure_indices": ", ".join(str(i) for i in figure["indices"]),
        "figure_caption": figure_caption(manifest),
        "configs": configs,
        "columns": _columns(builder, manifest),
        "repo_hint": manifest["name"],
        "image_mode": builder.image_mode,
        "first_factor": builder.factors[0].name,
        "reference_summary": summary,
        "restarts": restarts,
        "s_rule": ref["s_rule"]["rule"],
        "s_rule_text": _RULE_TEXT.get(ref["s_rule"]["rule"], "")
        + f"; latents {', '.join(map(str, ref['s_rule']['latents']))}",
        "s_entanglement": _entanglement_text(ref["s_entanglement"]),
        "s_mean": f"{ref['s_mean']:.6g}",
        "s_std": f"{ref['s_std']:.6g}",
        "sign_factor": ref["sign_factor"],
        "pattern_rows": pattern["shape"][0],
        "offset": pattern["offset"],
        "pattern_sha": pattern["sha256"][:16],
        "kappa": f"{build['kappa']:g}",
        "seed": build["seed"],
        "main_step": main["max_step"] if main else 0,
        "main_epsilon": f"{main['epsilon']:g}" if main else "-",
        "ground_truth_summary": gt_summary,
        "png_encoder": f"{png['encoder']} v{png['encoder_version']}",
        "zlib_version": png["zlib_version"],
        "pyarrow_version": manifest["parquet"]["pyarrow_version"],
        "limitations": _limitations(manifest),
        "package_version": manifest["package_version"],
        "build_command": build_command(manifest),
        "usage_lines": usage_lines(manifest),
        "usage_var": _variable(build["default_config"]),
        "license_text": (
            f"{LICENSE.capitalize()}, like the package and like dSprites and "
            "3dshapes, whose generative design these images reproduce."
        ),
        "citations": cite,
        "manifest_sha256": manifest_sha256,
    }


def render_card(manifest: dict[str, Any], builder: Any, manifest_sha256: str) -> str:
    """The dataset card (README.md text) of a build: YAML from the card classes, then prose."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from builders.citations import LICENSE

    metadata = builder.card_metadata(
        {name: manifest["configs"][name] for name in manifest["build"]["configs"]},
        default=manifest["build"]["default_config"],
    )
    size = "1K<n<10K" if manifest["ground_truth"]["num_images"] < 10_000 else builder.size_category
    card_data = DatasetCardData(
        license=LICENSE,
        pretty_name=builder.pretty_name + (" (smoke build)" if manifest["smoke"] else ""),
        size_categories=[size] if manifest["ground_truth"]["num_images"] >= 1_000 else ["n<1K"],
        tags=["disentanglement", "representation-learning", "synthetic", manifest["dataset"]],
        configs=metadata["configs"],
        dataset_info=metadata["dataset_info"],
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        **card_context(manifest, builder, manifest_sha256),
    )
    return str(card)


__all__ = [
    "comparison_figure",
    "difference_image",
    "figure_caption",
    "card_context",
    "render_card",
    "TEMPLATE",
]
