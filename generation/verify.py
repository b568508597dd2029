"""Verify a built dataset folder against its manifest and a regeneration of every row.

    python -m generation.verify perturbed-dsprites
    python -m generation.verify perturbed-dsprites-smoke --workdir build/perturbed-dsprites-smoke

Files: every shard's size, sha256, row count and schema against the manifest; no stray Parquet
under ``data/``; the card against the manifest. Rows, all of them: index order, factors, ``s``
bit-exact against the reference's s, ``epsilon``, the ε-bound of every stored byte and every image
bit-exact against its regeneration. It exits non-zero with a report that names the config, shard,
row, grid index and what differs; an unfinished build is reported as "unfinished build".

``s`` comes from ``--reference`` (an artifact folder), ``--workdir`` (the build's cache), or the
reference shipped with the package when the manifest says the build used it.

The checks live in :mod:`builders.verification`; this module is their command line.
"""

from __future__ import annotations

import argparse
import sys

from builders.verification import (
    VerifyReport,
    stamp,
    verify_folder,
)

__all__ = ["VerifyReport", "main", "stamp", "verify_folder"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generation.verify",
        description="Check a built dataset folder row by row against its manifest and a "
        "regeneration; exit 1 with a precise report if anything differs.",
    )
    parser.add_argument("folder", help="the dataset folder (holds manifest.json)")
    parser.add_argument("--reference", help="reference artifact folder the build used")
    parser.add_argument("--workdir", help="the build's work directory (holds the s it used)")
    parser.add_argument("--source", help="the official file, if the build read one")
    parser.add_argument(
        "--no-verify-checksum",
        action="store_true",
        help="accept a --source whose checksum is not the official one (as the build did)",
    )
    parser.add_argument("--files-only", action="store_true", help="hashes, counts, card; no rows")
    parser.add_argument("--jobs", type=int, default=None, help="threads (default: every core)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = verify_folder(
        args.folder,
        reference=args.reference,
        workdir=args.workdir,
        source=args.source,
        verify_checksum=not args.no_verify_checksum,
        rows=not args.files_only,
        jobs=args.jobs,
        progress=not args.no_progress,
    )
    print(report.format())
    if report.ok:
        stamp(args.folder, report)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
