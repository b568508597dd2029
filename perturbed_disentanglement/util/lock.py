"""A lock file that keeps two processes from training the same run directory at once.

Restarts of the reference stage can train in separate processes (``--restart R``) sharing one work
directory; two writers of one checkpoint folder would corrupt it. The lock is a file created with
``O_EXCL`` holding the owner's host and pid; a lock whose process is gone (same host) is stale and
is taken over, so a killed run never blocks its own resume.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PerturbedDisentanglementError

LOCK_FILE = ".lock"


class BusyError(PerturbedDisentanglementError, RuntimeError):
    """Another live process holds the lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at ``path`` (``{"host", "pid"}``), or None when it is free or stale."""
    try:
        owner = json.loads(Path(path).read_text())
        host, pid = str(owner["host"]), int(owner["pid"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: written by a process killed mid-write, hence stale
    if host == socket.gethostname() and not _alive(pid):
        return None
    return {"host": host, "pid": pid}


def _try_acquire(path: Path) -> bool:
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if holder(path) is not None:
                return False
            path.unlink(missing_ok=True)  # stale: take it over
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(me)
        return True
    return False


@contextmanager
def exclusive(
    directory: str | os.PathLike,
    *,
    what: str,
    wait: bool = False,
    poll_seconds: float = 30.0,
    log: Callable[[str], None] = print,
) -> Iterator[None]:
    """Hold ``directory``'s lock for the ``with`` block.

    If another live process holds it: ``wait=False`` raises :class:`BusyError` naming it;
    ``wait=True`` says so once and polls every ``poll_seconds`` until it is free.
    """
    path = Path(directory) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    told = False
    while not _try_acquire(path):
        owner = holder(path) or {"host": "?", "pid": "?"}
        message = (
            f"{what} is in use by process {owner['pid']} on {owner['host']} "
            f"(lock file {path}; delete it only if no such process is running)"
        )
        if not wait:
            raise BusyError(message)
        if not told:
            log(f"{message}; waiting for it to finish")
            told = True
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
