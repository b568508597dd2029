"""Seeding: the one rule turning a ``random_state`` argument into a seed or a numpy Generator.

Every metric takes ``random_state``: an int seed in ``[0, 2**32)``, a ``np.random.Generator``, a
legacy ``np.random.RandomState`` or ``None``. ``None`` means seed 0, not OS entropy: the metrics
are deterministic by default, so a harness scoring hundreds of models gets the same numbers when it
is rerun.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import InvalidArgumentError

RandomState = int | np.random.RandomState | np.random.Generator | None


def seed_from(random_state: RandomState) -> int:
    """One int seed, e.g. for every scikit-learn estimator of a call (results then do not depend
    on ``n_jobs``).

    An int is used as is; a ``RandomState``/``Generator`` is drawn from once; ``None`` means 0.
    """
    if random_state is None:
        return 0
    if isinstance(random_state, bool):
        raise InvalidArgumentError("random_state must be an int, RandomState, Generator or None")
    if isinstance(random_state, numbers.Integral):
        if not 0 <= int(random_state) < 2**32:
            raise InvalidArgumentError(f"random_state must be in [0, 2**32), got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise InvalidArgumentError(
        "random_state must be an int, RandomState, Generator or None, "
        f"got {type(random_state).__name__}"
    )


def as_generator(random_state: RandomState) -> np.random.Generator:
    """A ``np.random.Generator``: a Generator is used as is (its stream continues), anything else
    seeds a new one with :func:`seed_from`."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(seed_from(random_state))
