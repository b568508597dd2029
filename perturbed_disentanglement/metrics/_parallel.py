"""Running independent classifier fits (one per factor or per code) serially or in processes."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import InvalidArgumentError

T = TypeVar("T")


def check_n_jobs(n_jobs: object) -> int:
    """``n_jobs`` is a positive int or -1 (all cores), as in joblib."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        raise InvalidArgumentError(f"n_jobs must be an int (>= 1 or -1), got {n_jobs!r}")
    if n_jobs == 0 or n_jobs < -1:
        raise InvalidArgumentError(f"n_jobs must be >= 1 or -1 (all cores), got {n_jobs}")
    return int(n_jobs)


def run_jobs(
    func: Callable[..., T],
    args: Sequence[tuple],
    n_jobs: object,
    *,
    cost: Sequence[float] | None = None,
) -> list[T]:
    """``[func(*a) for a in args]``, in ``n_jobs`` joblib processes unless ``n_jobs == 1``.

    Each task receives its own arguments (seeds included), so the results do not depend on
    ``n_jobs``. With ``cost``, the most expensive tasks are dispatched first so that no worker is
    left with a big one at the end; the results stay in the order of ``args``. ``n_jobs`` is
    validated here (:func:`check_n_jobs`).
    """
    n_jobs = check_n_jobs(n_jobs)
    if n_jobs == 1:
        return [func(*a) for a in args]
    from joblib import Parallel, delayed

    order = list(range(len(args)))
    if cost is not None:
        order.sort(key=lambda i: -cost[i])
    done = Parallel(n_jobs=min(n_jobs, len(args)) if n_jobs > 0 else n_jobs)(
        delayed(func)(*args[i]) for i in order
    )
    by_task = dict(zip(order, done))
    return [by_task[i] for i in range(len(args))]
