"""Checks of files the official-file readers open: that they exist, and their published digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import ChecksumError, DataFormatError


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file (``algorithm`` as :func:`hashlib.new` names it), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    return file_digest(path, "sha256", chunk)


def verify_sha256(path: str | os.PathLike, expected: str | None, *, verify: bool) -> None:
    """Raise ``ChecksumError`` naming both hashes if ``path`` is not the published file."""
    if not verify or expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 is {actual}, but the published file has {expected}. "
            "If this is a deliberately modified copy, pass verify_checksum=False."
        )


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a clear error if it does not exist or is not a file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise DataFormatError(f"{p}: is not a regular file")
    return p
