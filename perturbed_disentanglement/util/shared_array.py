"""One uint8 array in a file that parallel processes share through the page cache.

Training runs on a 2-core machine go two at a time, and a Shapes3D grid is 5.9 GB: two private
copies and the evaluation's working set do not fit beside each other. The first process writes
the array once (under a lock of its folder, to a temporary file renamed into place, so a killed
writer leaves nothing that looks complete); every process then maps it read-only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import fsync_dir
from .lock import exclusive


def shared_array(
    path: str | os.PathLike,
    shape: Sequence[int],
    fill: Callable[[np.ndarray], None],
    *,
    what: str,
    log: Callable[[str], Any] = print,
) -> np.ndarray:
    """A read-only memory map of the uint8 ``.npy`` at ``path`` with ``shape``.

    If the file is absent, damaged or of another shape, ``fill(out)`` writes the array into a
    writable memory map of a temporary file, which then replaces ``path``. ``what`` names the
    array in the log and in the lock's message to a process that waits.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    folder = path.parent
    with exclusive(folder, what=f"{what} ({path})", wait=True, log=log):
        if path.exists():
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                if array.shape == shape and array.dtype == np.uint8:
                    return array
            except (OSError, ValueError):
                pass
            log(f"{path} is not {what}; writing it again")
        else:
            log(f"writing {what} to {path}, shared by parallel processes")
        tmp = folder / f".{path.name}.tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(out)
        out.flush()
        del out
        os.replace(tmp, path)
        fsync_dir(folder)
    return np.load(path, mmap_mode="r", allow_pickle=False)
