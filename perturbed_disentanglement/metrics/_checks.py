"""Input validation shared by the array metrics: one clear error instead of a NaN or a deep traceback.

Every metric takes ``codes`` float ``[N, d]`` (the representation, usually the encoder mean) and
``factors`` int ``[N, k]`` (factor indices or values). disentanglement_lib stores both transposed
(``[d, N]`` and ``[k, N]``); ours are row-per-sample like every other array in this package.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import InvalidArgumentError

RandomState = int | np.random.RandomState | np.random.Generator | None


def check_codes(codes: object, *, name: str = "codes", min_dims: int = 1) -> np.ndarray:
    """Return ``codes`` as a finite floating ``[N, d]`` array (float32 stays float32).

    The dtype is kept because dlib discretises the float32 encoder output directly and
    ``np.histogram`` computes its bin edges in the input's precision; upcasting first could move a
    point that sits exactly on a bin edge into the neighbouring bin.
    """
    try:
        arr = np.asarray(codes)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be a numeric array [N, d]: {exc}") from exc
    if arr.ndim != 2:
        raise InvalidArgumentError(
            f"{name} must be a 2-D array [N, d] (one row per sample), got shape {arr.shape}"
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InvalidArgumentError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidArgumentError(
            f"{name} is empty (shape {arr.shape}); expected [N, d], N, d > 0"
        )
    if arr.shape[1] < min_dims:
        raise InvalidArgumentError(
            f"{name} has {arr.shape[1]} code dimension(s); this metric needs at least {min_dims}"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidArgumentError(
            f"{name} contains NaN or infinite values (first at row {bad[0]}, dimension {bad[1]}); "
            "the metrics need finite codes"
        )
    return arr


def check_factors(
    factors: object, *, name: str = "factors", min_factors: int = 1, allow_constant: bool = False
) -> np.ndarray:
    """Return ``factors`` as an int64 ``[N, k]`` array; integral floats are accepted.

    A factor that takes a single value has zero entropy, so MIG divides by zero and the
    classifiers of DCI, SAP and explicitness cannot be fitted (dlib returns NaN or crashes).
    Unless ``allow_constant``, such a factor is an :class:`InvalidArgumentError`: drop it
    before calling, as dlib's own dSprites loader drops the one-valued ``color`` factor.
    """
    try:
        arr = np.asarray(factors)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be an integer array [N, k]: {exc}") from exc
    if arr.ndim != 2:
        raise InvalidArgumentError(
            f"{name} must be a 2-D array [N, k] (one row per sample), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidArgumentError(
            f"{name} is empty (shape {arr.shape}); expected [N, k], N, k > 0"
        )
    if arr.shape[1] < min_factors:
        raise InvalidArgumentError(
            f"{name} has {arr.shape[1]} factor(s); this metric needs at least {min_factors}"
        )
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidArgumentError(
                f"{name} must hold integer factor indices; got non-integral or non-finite floats"
            )
        arr = arr.astype(np.int64)
    else:
        raise InvalidArgumentError(f"{name} must hold integer factor indices, got {arr.dtype}")
    if not allow_constant:
        check_not_constant(arr, name=name)
    return arr


def check_not_constant(factors: np.ndarray, *, name: str = "factors") -> None:
    """Raise if a factor column takes a single value (see :func:`check_factors`)."""
    constant = [j for j in range(factors.shape[1]) if np.all(factors[:, j] == factors[0, j])]
    if constant:
        raise InvalidArgumentError(
            f"{name} column(s) {constant} take a single value: such a factor has zero entropy "
            "and no metric is defined for it; drop the column(s) first"
        )


def check_pair(
    codes: object,
    factors: object,
    *,
    suffix: str = "",
    min_dims: int = 1,
    min_factors: int = 1,
    min_points: int = 2,
    allow_constant: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (codes, factors) pair: shapes, dtypes, finiteness, equal lengths."""
    c = check_codes(codes, name=f"codes{suffix}", min_dims=min_dims)
    f = check_factors(
        factors, name=f"factors{suffix}", min_factors=min_factors, allow_constant=True
    )
    if c.shape[0] != f.shape[0]:
        raise InvalidArgumentError(
            f"codes{suffix} has {c.shape[0]} rows but factors{suffix} has {f.shape[0]}; "
            "expected one factor row per code row"
        )
    if c.shape[0] < min_points:
        raise InvalidArgumentError(
            f"codes{suffix} has {c.shape[0]} point(s); this metric needs at least {min_points}"
        )
    if not allow_constant:
        check_not_constant(f, name=f"factors{suffix}")
    return c, f


def check_train_test(
    codes_train: object,
    factors_train: object,
    codes_test: object,
    factors_test: object,
    *,
    min_dims: int = 1,
    min_factors: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a train and a test pair and check they have the same d and k.

    Only the training factors must be non-constant (a classifier needs two classes to fit); a
    test set may legitimately be small enough to miss values.
    """
    ctr, ftr = check_pair(
        codes_train, factors_train, suffix="_train", min_dims=min_dims, min_factors=min_factors
    )
    cte, fte = check_pair(
        codes_test,
        factors_test,
        suffix="_test",
        min_dims=min_dims,
        min_factors=min_factors,
        min_points=1,
        allow_constant=True,
    )
    if ctr.shape[1] != cte.shape[1]:
        raise InvalidArgumentError(
            f"codes_train has {ctr.shape[1]} dimensions but codes_test has {cte.shape[1]}"
        )
    if ftr.shape[1] != fte.shape[1]:
        raise InvalidArgumentError(
            f"factors_train has {ftr.shape[1]} factors but factors_test has {fte.shape[1]}"
        )
    return ctr, ftr, cte, fte


def check_n_jobs(n_jobs: object) -> int:
    """``n_jobs`` is a positive int or -1 (all cores), as in joblib."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        raise InvalidArgumentError(f"n_jobs must be an int (>= 1 or -1), got {n_jobs!r}")
    if n_jobs == 0 or n_jobs < -1:
        raise InvalidArgumentError(f"n_jobs must be >= 1 or -1 (all cores), got {n_jobs}")
    return int(n_jobs)


def seed_from(random_state: RandomState) -> int:
    """One int seed for every estimator of a call, so that results do not depend on ``n_jobs``.

    An int is used as is; a ``RandomState``/``Generator`` is drawn from once; ``None`` means 0 (the
    metrics are deterministic by default: a harness comparing hundreds of models should not see
    estimator noise between runs).
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
        f"random_state must be an int, RandomState, Generator or None, got {type(random_state)}"
    )


def split_train_test(
    codes: object, factors: object, train_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split points into the first ``ceil(N * train_fraction)`` and the rest, as dlib does.

    dlib's ``utils.split_train_test`` keeps order (the points are already i.i.d. samples), so
    this does too. Both parts must be non-empty.
    """
    c, f = check_pair(codes, factors, allow_constant=True)
    if not isinstance(train_fraction, numbers.Real) or not 0.0 < float(train_fraction) < 1.0:
        raise InvalidArgumentError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    n = c.shape[0]
    n_train = int(np.ceil(n * float(train_fraction)))
    if n_train >= n or n_train < 1:
        raise InvalidArgumentError(
            f"{n} points are too few for train_fraction={train_fraction}: the split would leave "
            f"{n_train} training and {n - n_train} test points; both must be at least 1"
        )
    return c[:n_train], f[:n_train], c[n_train:], f[n_train:]
