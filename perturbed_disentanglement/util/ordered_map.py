"""``map`` on threads, in order, with bounded look-ahead: the shape of every streamed stage.

The build and the verifier both turn a long sequence of blocks (render, perturb, encode; or decode,
regenerate, compare) into results consumed in order; numpy, zlib and pyarrow release the GIL, so
threads use every core while only ``2·jobs`` blocks are ever held in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor


def ordered_map(fn: Callable, items: Iterable, jobs: int) -> Iterator:
    """``map(fn, items)`` on ``jobs`` threads, in order, with at most ``2·jobs`` items in flight."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=jobs)
    pending: deque = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            result = pending.popleft().result()
            for item in it:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
