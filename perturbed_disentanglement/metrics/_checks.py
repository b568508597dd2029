"""Input validation shared by every metric: one clear error instead of a NaN or a deep traceback.

The array metrics take ``codes`` float ``[N, d]`` (the representation, usually the encoder
mean) and ``factors`` int ``[N, k]`` (factor indices or values). disentanglement_lib stores both
transposed (``[d, N]`` and ``[k, N]``); ours are row-per-sample like every other array here.
The scalar checks (:func:`check_count`, :func:`check_real`) serve the ground-truth metrics too.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import InvalidArgumentError


def _as_2d(value: object, name: str, axes: str, kind: str) -> np.ndarray:
    """``value`` as a 2-D array ``[axes]``, or an error naming ``name`` and its shape."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be {kind} [{axes}]: {exc}") from exc
    if arr.ndim != 2:
        raise InvalidArgumentError(
            f"{name} must be a 2-D array [{axes}] (one row per sample), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidArgumentError(
            f"{name} is empty (shape {arr.shape}); expected [{axes}], both sizes > 0"
        )
    return arr


def check_finite(
    arr: np.ndarray,
    name: str,
    *,
    axes: tuple[str, ...] = ("row", "dimension"),
    error: type[Exception] = InvalidArgumentError,
) -> None:
    """Raise ``error`` naming the first NaN/inf of ``arr`` by its ``axes`` labels, if any."""
    if not np.all(np.isfinite(arr)):
        first = np.argwhere(~np.isfinite(arr))[0]
        where = ", ".join(f"{label} {int(i)}" for label, i in zip(axes, first))
        raise error(f"{name} contains NaN or infinite values (first at {where}); expected finite")


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (sizes, counts, bins), or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(value: object, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite float ``>= minimum`` (``> minimum`` if ``strict``), or an error."""
    bound = f"> {minimum}" if strict else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a finite number {bound}, got {value!r}")
    x = float(value)
    if not np.isfinite(x) or x < minimum or (strict and x == minimum):
        raise InvalidArgumentError(f"{name} must be a finite number {bound}, got {value!r}")
    return x


def check_codes(codes: object, *, name: str = "codes", min_dims: int = 1) -> np.ndarray:
    """Return ``codes`` as a finite floating ``[N, d]`` array (float32 stays float32).

    The dtype is kept because dlib discretises the float32 encoder output directly and
    ``np.histogram`` computes its bin edges in the input's precision; upcasting first could move a
    point that sits exactly on a bin edge into the neighbouring bin.
    """
    arr = _as_2d(codes, name, "N, d", "a numeric array")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InvalidArgumentError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.shape[1] < min_dims:
        raise InvalidArgumentError(
            f"{name} has {arr.shape[1]} code dimension(s); this metric needs at least {min_dims}"
        )
    check_finite(arr, name)
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
    arr = _as_2d(factors, name, "N, k", "an integer array")
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
