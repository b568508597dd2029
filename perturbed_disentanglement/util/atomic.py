"""Atomic writes: a file or folder is either complete under its final name or absent.

Everything the pipelines cache or publish goes through here: content is written to a unique
temporary name beside the target, flushed to disk, then renamed over it (a rename within one
filesystem is atomic), so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of what we write: as a plain ``open()``/``mkdir()`` would give under the umask
#: (``mkstemp``/``mkdtemp`` create private 0600/0700 entries, wrong for published files).
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def make_temp_dir(target: str | os.PathLike) -> Path:
    """A fresh, empty folder beside ``target`` (same filesystem) with ordinary permissions."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, DIR_MODE)
    return tmp


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (so a rename survives a power cut); a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented, key-sorted JSON (stable bytes for equal values)."""
    text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode())


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file atomically (no pickles)."""
    return write_atomic(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder ``new`` to ``target``, replacing an existing ``target``.

    The old ``target`` is renamed aside first, put back if the rename fails, and deleted only
    once ``new`` is in place.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
    else:
        aside = new.with_name(new.name + "-old")
        os.rename(target, aside)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(target.parent)
