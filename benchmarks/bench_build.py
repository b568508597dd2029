"""The build's speed: our shard pipeline vs a plain ``datasets`` pipeline, reading back, encoders.

Usage::

    python benchmarks/bench_build.py --rows 20000           # a slice (minutes on 2 cores)
    python benchmarks/bench_build.py                        # the whole dSprites grid
    python benchmarks/bench_build.py --dataset shapes3d --rows 10000

Three measurements, each a ratio of two ways in the same run (the machine may be shared):

1. **write** — the ``perturbed`` config of the first ``--rows`` grid rows, from nothing to a
   Parquet file: ours (``generation.build``'s pipeline: render a block of 1,024 rows once,
   perturb, PNG-encode with :mod:`perturbed_disentanglement.util.png`, Arrow, ``ShardWriter``; on
   ``--jobs`` threads) against a plain ``Dataset.from_generator`` that yields one PIL image and
   its factors per row (rendered and perturbed in the same numpy blocks, so only the per-row path
   differs: ``datasets`` encodes each PIL image with Pillow) and then ``to_parquet``. Target >= 3×.
2. **read** — that config back: ``load_dataset(folder, "perturbed").with_format("numpy")``
   iterated in batches of 1,024 (after the one-off Parquet -> Arrow preparation, timed apart)
   against decoding the same PNG bytes with Pillow straight from the Parquet file.
3. **encoders** — on ``--encode-rows`` evenly spaced rows of each config kind (original,
   perturbed, noise): Pillow at levels 1, 6 and 9 and our encoder over filters, zlib levels and
   strategies; µs per image (one thread) and bytes per image; then the chosen encoder on one
   thread against ``--jobs`` threads.

``s`` is the shipped reference's when there is one, else a stand-in (the standardised posX
factor): the cost does not depend on it. ``--json PATH`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builders import get_builder  # noqa: E402
from builders.base import ROW_GROUP_ROWS, ShardWriter  # noqa: E402
from generation.build import Context, ordered_map  # noqa: E402
from perturbed_disentanglement import ground_truth  # noqa: E402
from perturbed_disentanglement.errors import ArtifactError  # noqa: E402
from perturbed_disentanglement.perturbation.configs import DatasetConfig, config_images  # noqa: E402
from perturbed_disentanglement.perturbation.pattern import Pattern, default_strength  # noqa: E402
from perturbed_disentanglement.reference.stage import load_reference  # noqa: E402
from perturbed_disentanglement.util.png import (  # noqa: E402
    PngEncoder,
    decode_png,
    decode_png_batch,
    pillow_encode,
)

ENCODERS = [
    PngEncoder(f, level, strategy)
    for f in ("none", "sub", "up", "paeth")
    for level, strategy in (
        (1, "default"),
        (6, "default"),
        (9, "default"),
        (6, "huffman"),
        (6, "rle"),
    )
] + [PngEncoder("adaptive", 6, "default")]


def _s(gt, dataset: str) -> tuple[np.ndarray, str]:
    try:
        return load_reference(dataset, gt, shipped=True).s, "the shipped reference"
    except ArtifactError:
        pos = gt.factors(np.arange(len(gt)))[:, -2].astype(np.float64)  # posX / shape: any factor
        return ((pos - pos.mean()) / pos.std()).astype(np.float32), "a stand-in (a factor)"


def bench_write(ctx: Context, config: DatasetConfig, rows: int, jobs: int, tmp: Path) -> dict:
    """Ours vs from_generator + to_parquet, on rows [0, rows) of one config."""
    import datasets

    builder = ctx.builder
    blocks = [(a, min(a + ROW_GROUP_ROWS, rows)) for a in range(0, rows, ROW_GROUP_ROWS)]
    t0 = time.perf_counter()
    writer = ShardWriter(
        tmp / "ours" / "data" / config.name / "train-00000-of-00001.parquet", builder.schema
    )
    for tables in ordered_map(lambda ab: ctx.block(*ab, [config]), blocks, jobs):
        writer.write(tables[config.name])
    _, ours_bytes = writer.commit()
    ours = time.perf_counter() - t0

    def rows_of_blocks():
        from PIL import Image

        for a, b in blocks:
            original = ctx.grid.images(np.arange(a, b))
            index = ctx.index[a:b]
            images = config_images(
                config, original, index, ctx.s[a:b], pattern=ctx.pattern, seed=ctx.seed
            )
            factors = ctx.root.factors(index)
            values = ctx.root.factor_values_of(index)
            for k in range(b - a):
                img = images[k, :, :, 0] if images.shape[3] == 1 else images[k]
                row = {"image": Image.fromarray(img), "index": int(index[k])}
                for j, name in enumerate(builder.factor_names):
                    row[name] = int(factors[k, j])
                    row[f"{name}_value"] = float(values[k, j])
                row["s"] = float(ctx.s[a + k])
                row["epsilon"] = config.epsilon
                yield row

    cache = tmp / "hf-cache"
    t0 = time.perf_counter()
    ds = datasets.Dataset.from_generator(
        rows_of_blocks, features=builder.features, cache_dir=str(cache)
    )
    t_gen = time.perf_counter() - t0
    ds.to_parquet(str(tmp / "plain.parquet"))
    plain = time.perf_counter() - t0
    return {
        "rows": rows,
        "ours_s": ours,
        "ours_images_per_s": rows / ours,
        "ours_bytes": ours_bytes,
        "plain_s": plain,
        "plain_generate_s": t_gen,
        "plain_images_per_s": rows / plain,
        "plain_bytes": (tmp / "plain.parquet").stat().st_size,
        "speedup": plain / ours,
    }


def bench_read(ctx: Context, config: DatasetConfig, tmp: Path) -> dict:
    """load_dataset(...).with_format("numpy") vs Pillow on the Parquet file's PNG bytes."""
    import datasets
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, DatasetCardData

    folder = tmp / "ours"
    shard = folder / "data" / config.name / "train-00000-of-00001.parquet"
    rows = pq.ParquetFile(shard).metadata.num_rows
    meta = ctx.builder.card_metadata({config.name: {"rows": rows, "bytes": shard.stat().st_size}})
    DatasetCard("---\n" + DatasetCardData(**meta).to_yaml() + "\n---\n").save(folder / "README.md")
    t0 = time.perf_counter()
    ds = datasets.load_dataset(
        str(folder), config.name, split="train", cache_dir=str(tmp / "read-cache")
    )
    prepare = time.perf_counter() - t0
    ds = ds.with_format("numpy")
    t0 = time.perf_counter()
    seen = 0
    for start in range(0, rows, 1024):
        seen += len(ds[start : start + 1024]["image"])
    through_datasets = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = 0
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024, columns=["image"]):
        for blob in batch.column("image").field("bytes").to_pylist():
            decode_png(blob)
            decoded += 1
    direct = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = 0
    shape = ctx.grid.image_shape
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024, columns=["image"]):
        fast += len(decode_png_batch(batch.column("image").field("bytes").to_pylist(), shape))
    batch_s = time.perf_counter() - t0
    assert seen == decoded == fast == rows
    return {
        "rows": rows,
        "prepare_s": prepare,
        "datasets_numpy_images_per_s": rows / through_datasets,
        "pillow_direct_images_per_s": rows / direct,
        "ratio_datasets_over_direct": direct / through_datasets,
        "decode_png_batch_images_per_s": rows / batch_s,
    }


def bench_pipeline(
    ctx: Context, configs: list[DatasetConfig], rows: int, jobs: int, tmp: Path
) -> dict:
    """The build's shard stage and its verification for every config on rows [0, rows)."""
    from builders.verification import _Rows

    blocks = [(a, min(a + ROW_GROUP_ROWS, rows)) for a in range(0, rows, ROW_GROUP_ROWS)]
    writers = {
        c.name: ShardWriter(
            tmp / "all" / c.name / "train-00000-of-00001.parquet", ctx.builder.schema
        )
        for c in configs
    }
    t0, c0 = time.perf_counter(), time.process_time()
    for tables in ordered_map(lambda ab: ctx.block(*ab, configs), blocks, jobs):
        for name, table in tables.items():
            writers[name].write(table)
    sizes = {name: w.commit()[1] for name, w in writers.items()}
    write, write_cpu = time.perf_counter() - t0, time.process_time() - c0
    import pyarrow.parquet as pq

    checker = _Rows(
        ctx.builder,
        ctx.root,
        ctx.grid,
        ctx.index,
        ctx.s,
        ctx.pattern,
        ctx.seed,
        {c.name: c for c in configs},
    )
    readers = {
        c.name: pq.ParquetFile(tmp / "all" / c.name / "train-00000-of-00001.parquet").iter_batches(
            batch_size=ROW_GROUP_ROWS
        )
        for c in configs
    }

    def items():
        for a, b in blocks:
            yield a, b, {name: ("shard", 0, next(r)) for name, r in readers.items()}

    t0, c0 = time.perf_counter(), time.process_time()
    problems = 0
    for _checked, found in ordered_map(lambda it: checker.check(*it), items(), jobs):
        problems += len(found)
    verify, verify_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(ctx.grid)
    return {
        "rows": rows,
        "configs": [c.name for c in configs],
        "write_s": write,
        "verify_s": verify,
        "problems": problems,
        "bytes_per_row": {name: size / rows for name, size in sizes.items()},
        "write_cpu_s": write_cpu,
        "verify_cpu_s": verify_cpu,
        "projected_full_grid_s": (write + verify) * n / rows,
        # what the same CPU work takes on `jobs` otherwise idle cores (threads scale ~linearly
        # there; on a shared machine the wall time above is what was measured)
        "projected_full_grid_idle_s": (write_cpu + verify_cpu) * n / rows / jobs,
        "projected_full_grid_bytes": {name: size * n / rows for name, size in sizes.items()},
    }


def bench_encoders(ctx: Context, configs: list[DatasetConfig], sample: int, jobs: int) -> dict:
    n = len(ctx.grid)
    rows = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(np.int64))
    original = ctx.grid.images(rows)
    results: dict = {}
    for config in configs:
        images = config_images(
            config, original, ctx.index[rows], ctx.s[rows], pattern=ctx.pattern, seed=ctx.seed
        )
        table = {}
        for level in (1, 6, 9):
            t0 = time.perf_counter()
            blobs = pillow_encode(images, level)
            dt = time.perf_counter() - t0
            table[f"pillow/{level}"] = (
                dt / len(rows) * 1e6,
                float(np.mean([len(b) for b in blobs])),
            )
        for enc in ENCODERS:
            t0 = time.perf_counter()
            blobs = enc.encode(images)
            dt = time.perf_counter() - t0
            table[enc.label] = (dt / len(rows) * 1e6, float(np.mean([len(b) for b in blobs])))
        chosen = ctx.builder.encoder(config)
        chunks = [images[a : a + 256] for a in range(0, len(images), 256)]
        t0 = time.perf_counter()
        for c in chunks:
            chosen.encode(c)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(chosen.encode, chunks))
        many = time.perf_counter() - t0
        results[config.kind] = {
            "table": table,
            "chosen": chosen.label,
            "threads": jobs,
            "thread_speedup": one / many,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument(
        "--rows", type=int, default=None, help="first rows of the grid (default all)"
    )
    parser.add_argument(
        "--encode-rows", type=int, default=2048, help="sample for the encoder table"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["write", "read", "pipeline", "encoders"]
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    gt = ground_truth(args.dataset)
    builder = get_builder(args.dataset)
    rows = min(args.rows or len(gt), len(gt))
    s, s_origin = _s(gt, args.dataset)
    kappa, epsilon = default_strength(args.dataset)
    pattern = Pattern(seed=0, kappa=kappa)
    ctx = Context(builder, gt, gt, np.arange(len(gt), dtype=np.int64), s, pattern, 0)
    if hasattr(gt, "ensure_views"):
        gt.ensure_views()  # Shapes3D's one-off 480 views, before any timing
    configs = [
        DatasetConfig("original", "original", 0.0),
        DatasetConfig("perturbed", "perturbed", epsilon),
        DatasetConfig("noise", "noise", epsilon),
    ]
    print(
        f"{args.dataset}: {rows:,} of {len(gt):,} rows, kappa {kappa:g}, epsilon {epsilon:g}, "
        f"s from {s_origin}; {args.jobs} job(s); load average {os.getloadavg()[0]:.1f}"
    )
    report: dict = {"dataset": args.dataset, "rows": rows, "jobs": args.jobs, "s": s_origin}
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        if "write" not in args.skip:
            w = bench_write(ctx, configs[1], rows, args.jobs, tmp)
            report["write"] = w
            print(
                f"\nwrite perturbed: ours {w['ours_s']:.1f} s ({w['ours_images_per_s']:,.0f} img/s, "
                f"{w['ours_bytes'] / 1e6:.1f} MB) vs from_generator + to_parquet {w['plain_s']:.1f} s "
                f"({w['plain_images_per_s']:,.0f} img/s, {w['plain_bytes'] / 1e6:.1f} MB): "
                f"{w['speedup']:.1f}x"
            )
            if "read" not in args.skip:
                r = bench_read(ctx, configs[1], tmp)
                report["read"] = r
                print(
                    f"read perturbed: load_dataset(...).with_format('numpy') "
                    f"{r['datasets_numpy_images_per_s']:,.0f} img/s (after {r['prepare_s']:.1f} s "
                    f"of preparation) vs Pillow on the PNG bytes {r['pillow_direct_images_per_s']:,.0f} "
                    f"img/s: {r['ratio_datasets_over_direct']:.2f}x; the verifier's batch decoder "
                    f"{r['decode_png_batch_images_per_s']:,.0f} img/s"
                )
        if "pipeline" not in args.skip:
            p = bench_pipeline(ctx, configs, rows, args.jobs, tmp)
            report["pipeline"] = p
            sizes = ", ".join(
                f"{name} {size / 1e6:,.0f} MB"
                for name, size in p["projected_full_grid_bytes"].items()
            )
            print(
                f"\nshard stage, all three configs: {p['write_s']:.1f} s "
                f"({rows * 3 / p['write_s']:,.0f} img/s); verification {p['verify_s']:.1f} s "
                f"({rows * 3 / p['verify_s']:,.0f} img/s, {p['problems']} problems); projected for "
                f"the whole grid: {p['projected_full_grid_s'] / 60:.1f} min at this load "
                f"({(p['write_cpu_s'] + p['verify_cpu_s']) / 60:.1f} CPU-min measured: "
                f"{p['projected_full_grid_idle_s'] / 60:.1f} min on {args.jobs} idle cores), {sizes}"
            )
        if "encoders" not in args.skip:
            e = bench_encoders(ctx, configs, args.encode_rows, args.jobs)
            report["encoders"] = e
            for kind, result in e.items():
                print(f"\nencoders, {kind} ({args.encode_rows:,} sampled rows, one thread):")
                base = result["table"]["pillow/6"][0]
                for label, (us, size) in sorted(result["table"].items(), key=lambda kv: kv[1][0]):
                    mark = "  <- chosen" if label == result["chosen"] else ""
                    print(
                        f"  {label:<22} {us:8.1f} us/img {size:8.0f} B/img  {base / us:5.1f}x pillow/6{mark}"
                    )
                print(
                    f"  chosen {result['chosen']} on {result['threads']} threads: "
                    f"{result['thread_speedup']:.2f}x one thread"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
