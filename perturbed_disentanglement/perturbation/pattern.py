"""The paper's perturbation (§4.2, SPEC §3) and its uniform-noise control: pure, vectorised numpy.

Everything here is a stable contract: the bytes a build writes depend only on the definitions
below (IEEE-754 float64/float32 arithmetic and wrap-around uint64 integer arithmetic), never on
the CPU, the chunking, the thread count or the numpy version.

**The pattern** (:class:`Pattern`): ``P ∈ {-1, +1}^(H×64)`` and column factors
``c_j ∈ {1, 2, 3, 4}``, with ``o = ceil(4κ)`` and ``H = 64 + 2o``, drawn from ``seed`` by the
counter stream ``word(w)`` of :func:`stream_words` (key ``seed ^ PATTERN_DOMAIN``):

- ``c_j = 1 + ((word(j // 32) >> (2 * (j % 32))) & 3)`` for the columns ``j = 0..63``;
- row ``i`` of ``P`` is the logical row ``r = i - o`` and reads the word
  ``word(2 + z(r))``, ``z(r) = 2r`` for ``r >= 0`` and ``-2r - 1`` for ``r < 0``:
  ``P[i, j] = +1`` if bit ``j`` of that word is set, else ``-1``.

So the rows of one seed do not depend on κ: a larger κ only adds rows above and below.

**The field** (:func:`pattern_field`): ``f(s)[i, j] = P[i + k_j(s) + o, j]`` with
``k_j(s) = rint((κ · clip(s, -4, 4)) / c_j)``: float64 throughout (``s`` given as float32 is
widened exactly), one multiply then one divide, ``np.rint`` rounds half to even. ``|k_j| <= o``,
so the index stays inside ``P``. All columns with the same ``c_j`` share one shift, so ``f(s)``
only depends on the four shifts ``k(c) = rint(κ·s/c)``, ``c = 1..4``.

**Quantisation** (:func:`max_step`): a perturbation of real size ``ε`` (pixels in [0, 1]) may move
a byte by at most ``d = floor(fl(255·ε) + 1e-9)`` (the float64 product, read with a 1e-9
tolerance so that an ε meant as ``n/255`` but a hair below it in floating point still gives
``n``). Every stored change is rounded *toward the original byte*, so ``|x̃ - x| <= d <= 255·ε``
holds exactly on the bytes for any ε (up to that 1e-9 read of ``255·ε``), where plain rounding
overshoots by up to half a level.

**The perturbation** (:func:`perturb`): ``x̃ = clip(x + d · f(s), 0, 255)`` on every channel:
the real change ``255·ε·f`` rounded toward ``x`` is ``±d``, the largest integer step not
exceeding it; the clip only shortens it.

**The noise control** (:func:`uniform_noise`): for the image of grid index ``g`` (``[64, 64, C]``,
``n = 4096·C`` samples in C order) sample ``p`` is the 16-bit lane ``p % 4`` (bits
``16·(p % 4)`` to ``16·(p % 4) + 15``) of ``word(g · n/4 + p // 4)`` in the stream keyed by
``seed ^ NOISE_DOMAIN``. The lane's bit 15 is the sign (set: add, clear: subtract) and its low
15 bits ``r`` give the magnitude ``m = trunc(float32(2r + 1) * float32(fl(255·ε) / 65536))``
(one IEEE float32 multiply, truncated toward zero): ``255·u`` for ``u`` uniform on ``[-ε, ε]``
at 2⁻¹⁶ resolution, truncated toward zero. ``x̃ = clip(x ± m, 0, 255)``; ``m < 255·ε`` always,
so the same bound holds. The stream is a pure function of ``(seed, g, p)``: any subset of
images, in any order and any chunking, gives the bytes of the whole grid.

**The stream** (:func:`stream_words`): SplitMix64 (Steele, Lea & Flood 2014) used as a counter
generator: ``word(w) = mix64(key + (w + 1) · 0x9E3779B97F4A7C15 mod 2^64)`` with
``key = mix64(seed ^ domain)`` and ``mix64`` SplitMix64's finaliser, all in uint64 wrap-around
arithmetic: exact, and vectorised in numpy (about 2 ns of one core per 64-bit word).

A *perturbation callable* (what the metrics and :class:`~.perturbed_view.PerturbedView` take) is
``perturb(images, indices, s) -> images``; :func:`pattern_perturbation` and
:func:`noise_perturbation` make them from the functions here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import numbers
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError

IMAGE_SIZE = 64  # rows and columns of every image; the pattern has one column per image column
S_CLIP = 4.0  # s is clipped to [-S_CLIP, S_CLIP] before it moves the pattern
MAX_KAPPA = 256.0  # beyond it the pattern (and its manifest entry) grows without adding anything
EPSILON_MAX = 0.5
EPSILON_TOLERANCE = 1e-9  # how 255·ε is read: see max_step
MAX_SEED = 2**63 - 1
MAX_INDEX = 2**40  # noise indices stay below it, so the stream counters never wrap

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment
PATTERN_DOMAIN = int.from_bytes(b"pattern\x00", "little")  # keys the pattern's stream
NOISE_DOMAIN = int.from_bytes(b"noise\x00\x00\x00", "little")  # keys the noise's stream

#: The default strength (κ, ε) per dataset, and the only place that holds it. Chosen by the
#: effect on trained models where a screen has shown one (``python -m generation.screen
#: --summarise --choose-at STEP``: docs/results/<dataset>-screen/choice.json), else by Fig. 4's
#: criterion (``python -m generation.choose_strength``, docs/fig4_<dataset>.json): the smallest ε
#: at which s dominates the local statistics but not the global ones (paper §5.2).
DEFAULT_STRENGTH: dict[str, tuple[float, float]] = {
    "dsprites": (64.0, 0.125),
    "shapes3d": (1.0, 0.25),  # the screen's choice (docs/results/shapes3d-screen/choice.json)
}


def default_strength(dataset: str) -> tuple[float, float]:
    """``(kappa, epsilon)`` a build uses for ``dataset`` unless told otherwise."""
    if dataset not in DEFAULT_STRENGTH:
        raise InvalidArgumentError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(DEFAULT_STRENGTH)}"
        )
    return DEFAULT_STRENGTH[dataset]


PATTERN_FORMAT = "perturbed-disentanglement/pattern"
PATTERN_FORMAT_VERSION = 1

#: ``perturb(images, indices, s) -> images``: uint8 ``[n, H, W, C]``, int64 ``[n]`` grid indices,
#: float64 ``[n]`` (or None) values of ``s``; returns uint8 images of the same shape.
Perturbation = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]

_MASK64 = (1 << 64) - 1
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_BLOCK_BYTES = 1 << 22  # output bytes one thread task handles (many chunks)
_PATTERN_CHUNK_BYTES = 1 << 18  # output bytes per in-cache step of perturb
_NOISE_CHUNK_SAMPLES = 1 << 17  # samples per in-cache step of uniform_noise


# --- the counter stream ------------------------------------------------------------------------
def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference the vectorised code must equal)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, domain: int) -> int:
    """The stream key of ``seed`` for one use (``PATTERN_DOMAIN`` or ``NOISE_DOMAIN``)."""
    return mix64(_check_seed(seed) ^ domain)


def stream_words(key: int, counters: np.ndarray | Sequence[int]) -> np.ndarray:
    """``word(w) = mix64(key + (w + 1)·GOLDEN_GAMMA)`` for each counter ``w`` (uint64 array).

    The SplitMix64 sequence started at state ``key``, addressable at any position.
    """
    w = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (w + np.uint64(1)) * np.uint64(GOLDEN_GAMMA) + np.uint64(key)
    _mix64_inplace(z, np.empty_like(z))
    return z


def _mix64_inplace(z: np.ndarray, tmp: np.ndarray) -> None:
    """SplitMix64's finaliser on a uint64 array, in place (``tmp``: scratch of the same shape)."""
    for shift, mult in ((30, _MIX1), (27, _MIX2)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        np.bitwise_xor(z, tmp, out=z)
        np.multiply(z, np.uint64(mult), out=z)
    np.right_shift(z, np.uint64(31), out=tmp)
    np.bitwise_xor(z, tmp, out=z)


# --- argument checks ---------------------------------------------------------------------------
def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgumentError(f"seed must be an int in [0, 2**63 - 1], got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InvalidArgumentError(f"seed must be in [0, 2**63 - 1], got {seed}")
    return int(seed)


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be finite, got {value}")
    return value


def check_kappa(kappa: object) -> float:
    """``kappa`` (pattern rows per unit of s) as a float in ``(0, MAX_KAPPA]``, else an error."""
    value = _check_real(kappa, "kappa (pattern rows per unit of s)")
    if not 0.0 < value <= MAX_KAPPA:
        raise InvalidArgumentError(
            f"kappa (pattern rows per unit of s) must be in (0, {MAX_KAPPA:g}], got {value}"
        )
    return value


def check_epsilon(epsilon: object) -> float:
    """``epsilon`` (the max-norm size, pixels in [0, 1]) as a float in ``(0, 0.5]``."""
    value = _check_real(epsilon, "epsilon")
    if not 0.0 < value <= EPSILON_MAX:
        raise InvalidArgumentError(
            f"epsilon must be in (0, {EPSILON_MAX}] (pixels in [0, 1]), got {value}"
        )
    return value


def max_step(epsilon: float) -> int:
    """The largest byte change an ε-perturbation may make: ``floor(fl(255·ε) + 1e-9)``.

    ``fl(255·ε)`` is the float64 product; the tolerance only matters when it lies within 1e-9
    below an integer, i.e. for an ε meant as ``n/255`` (every ``n/255`` computed in float64
    already gives exactly ``n``).
    """
    return math.floor(check_epsilon(epsilon) * 255.0 + EPSILON_TOLERANCE)


def check_images(images: object, name: str = "images") -> np.ndarray:
    """``images`` if it is a uint8 ``[N, 64, 64, C]`` array (C >= 1), else a DataFormatError."""
    expected = f"{name} must be a uint8 numpy array [N, {IMAGE_SIZE}, {IMAGE_SIZE}, C]"
    if not isinstance(images, np.ndarray):
        raise DataFormatError(f"{expected}, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise DataFormatError(f"{expected} (bytes 0..255), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or images.shape[3] < 1:
        raise DataFormatError(f"{expected}, got shape {list(images.shape)}")
    return images


def check_s(s: object, n: int, *, name: str = "s", per: str = "image") -> np.ndarray:
    """``s`` as a finite float64 ``[n]`` array (one value per ``per``), else an error."""
    if isinstance(s, np.ndarray) and s.dtype == np.bool_:
        raise InvalidArgumentError(f"{name} must be a float array [{n}], got dtype bool")
    try:
        arr = np.asarray(s, dtype=np.float64)  # float32 widens exactly
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{name} must be a float array [{n}] (one per {per}): {exc}"
        ) from exc
    if arr.shape != (n,):
        raise InvalidArgumentError(
            f"{name} must have one value per {per}, shape [{n}], got {list(arr.shape)}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad))
        raise InvalidArgumentError(
            f"{name} contains NaN or infinite values (first at {per} {first}: {arr[first]}); "
            "expected finite"
        )
    return arr


def check_noise_indices(indices: object, n: int) -> np.ndarray:
    """``indices`` as int64 ``[n]`` grid indices in ``[0, 2**40)``, else an error."""
    arr = np.asarray(indices)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if not (arr.size == 0 and arr.dtype == np.float64):  # np.asarray([]) is float64
            raise InvalidArgumentError(
                f"indices must be an integer array [{n}] (grid indices), got dtype {arr.dtype}"
            )
    if arr.shape != (n,):
        raise InvalidArgumentError(
            f"indices must have one grid index per image, shape [{n}], got {list(arr.shape)}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= MAX_INDEX):
        bad = arr[(arr < 0) | (arr >= MAX_INDEX)][0]
        raise InvalidArgumentError(f"indices must be grid indices in [0, 2**40), got {int(bad)}")
    return arr.astype(np.int64, copy=False)


def _check_out(out: np.ndarray | None, images: np.ndarray) -> np.ndarray:
    """A fresh output array, or ``out`` if it fits (``out is images`` works in place)."""
    if out is None:
        return np.empty(images.shape, np.uint8)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != images.shape:
        raise InvalidArgumentError(
            f"out must be a uint8 array of the images' shape {list(images.shape)}"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise InvalidArgumentError("out must be a writeable C-contiguous array")
    if out is not images and np.may_share_memory(out, images):
        raise InvalidArgumentError("out must be the images themselves or not overlap them")
    return out


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise InvalidArgumentError(f"threads must be an int >= 1 or None, got {threads!r}")
    return int(threads)


def _run_blocks(n: int, rows_per_block: int, threads: int, work: Callable[[int, int], None]):
    """``work(a, b)`` over ``[0, n)`` in blocks of rows; blocks run on ``threads`` threads.

    The blocks write disjoint rows and numpy releases the GIL in the loops, so threads scale.
    """
    starts = range(0, n, rows_per_block)
    spans = [(a, min(a + rows_per_block, n)) for a in starts]
    if threads == 1 or len(spans) == 1:
        for a, b in spans:
            work(a, b)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(spans))) as pool:
        list(pool.map(lambda span: work(*span), spans))


# --- the pattern -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """The fixed random pattern ``P`` and column factors ``c`` of one build (paper §4.2).

    A frozen value: equal when seed and κ are; ``P``, ``c`` are derived from them (see the module
    docstring for the exact draw). :meth:`to_dict` gives a few KB of JSON for the manifest.
    """

    seed: int
    kappa: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", _check_seed(self.seed))
        object.__setattr__(self, "kappa", check_kappa(self.kappa))

    @property
    def offset(self) -> int:
        """``o = ceil(4κ)``: the largest shift, in rows, of any column."""
        return math.ceil(S_CLIP * self.kappa)

    @property
    def num_rows(self) -> int:
        """``H = 64 + 2o``."""
        return IMAGE_SIZE + 2 * self.offset

    @cached_property
    def column_factors(self) -> np.ndarray:
        """``c``: int64 ``[64]`` in ``{1, 2, 3, 4}`` (read-only)."""
        words = stream_words(stream_key(self.seed, PATTERN_DOMAIN), [0, 1])
        j = np.arange(IMAGE_SIZE, dtype=np.uint64)
        bits = (words[j // np.uint64(32)] >> (np.uint64(2) * (j % np.uint64(32)))) & np.uint64(3)
        c = bits.astype(np.int64) + 1
        c.flags.writeable = False
        return c

    @cached_property
    def rows(self) -> np.ndarray:
        """``P``: int8 ``[H, 64]`` of ±1 (read-only); row ``i`` is the logical row ``i - o``."""
        r = np.arange(self.num_rows, dtype=np.int64) - self.offset
        zigzag = np.where(r >= 0, 2 * r, -2 * r - 1)
        words = stream_words(stream_key(self.seed, PATTERN_DOMAIN), 2 + zigzag)
        bits = (words[:, None] >> np.arange(IMAGE_SIZE, dtype=np.uint64)[None, :]) & np.uint64(1)
        p = np.where(bits == 1, 1, -1).astype(np.int8)
        p.flags.writeable = False
        return p

    # --- serialisation for the manifest -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: seed, κ, c, ``P`` bit-packed in base64 (+1 = bit set), and a sha256.

        The sha256 is over the canonical JSON of every other entry (sorted keys, no spaces).
        """
        content = {
            "format": PATTERN_FORMAT,
            "version": PATTERN_FORMAT_VERSION,
            "seed": self.seed,
            "kappa": self.kappa,
            "offset": self.offset,
            "shape": [self.num_rows, IMAGE_SIZE],
            "column_factors": [int(c) for c in self.column_factors],
            "rows_packbits_base64": base64.b64encode(
                np.packbits(self.rows > 0, axis=None).tobytes()
            ).decode("ascii"),
        }
        return {**content, "sha256": _content_sha256(content)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pattern:
        """The pattern of :meth:`to_dict`, checked: format, sha256, and that P and c are the
        ones its seed draws (a DataFormatError names what differs)."""
        if not isinstance(data, dict):
            raise DataFormatError(f"a pattern must be a dict from Pattern.to_dict(), got {data!r}")
        expected = {
            "format",
            "version",
            "seed",
            "kappa",
            "offset",
            "shape",
            "column_factors",
            "rows_packbits_base64",
            "sha256",
        }
        if set(data) != expected:
            raise DataFormatError(
                f"a pattern needs exactly the keys {sorted(expected)}; "
                f"missing {sorted(expected - set(data))}, unexpected {sorted(set(data) - expected)}"
            )
        if data["format"] != PATTERN_FORMAT or data["version"] != PATTERN_FORMAT_VERSION:
            raise DataFormatError(
                f"not a pattern of format {PATTERN_FORMAT!r} version {PATTERN_FORMAT_VERSION}: "
                f"got {data['format']!r} version {data['version']!r}"
            )
        content = {k: v for k, v in data.items() if k != "sha256"}
        if _content_sha256(content) != data["sha256"]:
            raise DataFormatError(
                "the pattern's sha256 does not match its content: it was modified or corrupted"
            )
        try:
            pattern = cls(seed=data["seed"], kappa=data["kappa"])
        except InvalidArgumentError as exc:
            raise DataFormatError(f"the stored pattern has invalid parameters: {exc}") from exc
        drawn = pattern.to_dict()
        for key in ("offset", "shape", "column_factors", "rows_packbits_base64"):
            if data[key] != drawn[key]:
                raise DataFormatError(
                    f"the stored pattern's {key} differs from the one seed {pattern.seed} and "
                    f"kappa {pattern.kappa} draw: written by another version of the draw"
                )
        return pattern

    @property
    def sha256(self) -> str:
        """The sha256 of :meth:`to_dict`'s content: identifies the pattern in a manifest."""
        return self.to_dict()["sha256"]

    # --- the four shifts ----------------------------------------------------------------------
    def shifts(self, s: np.ndarray) -> np.ndarray:
        """``k(c) = rint((κ·clip(s, -4, 4)) / c)`` for ``c = 1..4``: int64 ``[n, 4]``.

        ``s`` must already be a finite float64 array (see :func:`check_s`).
        """
        ks = self.kappa * np.clip(s, -S_CLIP, S_CLIP)
        return np.stack([np.rint(ks / c) for c in (1.0, 2.0, 3.0, 4.0)], axis=1).astype(np.int64)

    def fields(self, shifts: np.ndarray) -> np.ndarray:
        """``f`` for rows of four shifts (``[u, 4]``, from :meth:`shifts`): int8 ``[u, 64, 64]``."""
        per_column = shifts[:, self.column_factors - 1]  # [u, 64]
        i = np.arange(IMAGE_SIZE)[None, :, None]
        return self.rows[i + per_column[:, None, :] + self.offset, np.arange(IMAGE_SIZE)]


def _content_sha256(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_pattern(pattern: object) -> Pattern:
    if not isinstance(pattern, Pattern):
        raise InvalidArgumentError(f"pattern must be a Pattern, got {type(pattern).__name__}")
    return pattern


def _distinct_fields(s: np.ndarray, pattern: Pattern) -> tuple[np.ndarray, np.ndarray]:
    """The distinct shift rows of ``s`` (int64 ``[u, 4]``) and each image's row among them.

    ``f(s)`` takes at most about ``17κ`` distinct values (the cells of the four roundings), so
    the fields are built once per distinct value, not once per image.
    """
    base = 2 * pattern.offset + 1  # each shift + o is in [0, 2o]
    keys = np.zeros(len(s), np.int64)
    for k in (pattern.shifts(s) + pattern.offset).T[::-1]:
        keys *= base
        keys += k
    distinct, inverse = np.unique(keys, return_inverse=True)
    shifts = np.empty((len(distinct), 4), np.int64)
    for c in range(4):
        distinct, shifts[:, c] = np.divmod(distinct, base)
    return shifts - pattern.offset, inverse.reshape(-1)


def _as_s(s: object) -> np.ndarray:
    """``s`` checked as a 1-D finite float64 array of any length."""
    n = np.shape(s)[0] if np.ndim(s) == 1 else -1
    if n < 0:
        raise InvalidArgumentError(f"s must be a 1-D float array, got shape {list(np.shape(s))}")
    return check_s(s, n)


def pattern_field(s: np.ndarray | Sequence[float], pattern: Pattern) -> np.ndarray:
    """``f(s)``: int8 ``[n, 64, 64]`` of ±1 for each value of ``s`` (see the module docstring)."""
    pattern = _check_pattern(pattern)
    s = _as_s(s)
    if len(s) == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.int8)
    shifts, inverse = _distinct_fields(s, pattern)
    return pattern.fields(shifts)[inverse]


# --- the perturbation --------------------------------------------------------------------------
def perturb(
    images: np.ndarray,
    s: np.ndarray | Sequence[float],
    epsilon: float,
    pattern: Pattern,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """``clip(x + d·f(s), 0, 255)`` with ``d = max_step(epsilon)``: uint8, the images' shape.

    Args:
        images: uint8 ``[N, 64, 64, C]``; the same ``f`` is added to every channel.
        s: float ``[N]``, finite: the scalar each image's pattern follows (clipped to ±4).
        epsilon: the size in (0, 0.5], pixels in [0, 1]; every byte moves by at most
            ``max_step(epsilon) <= 255·ε``.
        pattern: the :class:`Pattern`.
        out: where to write (``images`` itself works in place); default a new array.
        threads: worker threads (default: every core); the bytes never depend on it.
    """
    pattern = _check_pattern(pattern)
    images = check_images(images)
    d = max_step(epsilon)
    s = check_s(s, len(images))
    threads = _check_threads(threads)
    result = _check_out(out, images)
    n, channels = len(images), images.shape[3]
    if n == 0:
        return result
    shifts, inverse = _distinct_fields(s, pattern)
    # per distinct field, the XOR mask of the trick below: 0x00 where f = +1, 0xFF where f = -1
    masks = np.repeat((pattern.fields(shifts) < 0).view(np.uint8) * np.uint8(255), channels, -1)
    masks = masks.reshape(len(shifts), IMAGE_SIZE, IMAGE_SIZE, channels)
    image_bytes = IMAGE_SIZE * IMAGE_SIZE * channels
    chunk = max(1, _PATTERN_CHUNK_BYTES // image_bytes)
    block = max(chunk, _BLOCK_BYTES // image_bytes // chunk * chunk)
    local = threading.local()

    def work(a: int, b: int) -> None:
        if getattr(local, "mask", None) is None:
            local.mask = np.empty((chunk, IMAGE_SIZE, IMAGE_SIZE, channels), np.uint8)
            # an array, not a scalar: numpy's minimum with a scalar skips its SIMD loop
            local.high = np.full((1, IMAGE_SIZE, IMAGE_SIZE, channels), 255 - d, np.uint8)
        for lo in range(a, b, chunk):
            hi = min(lo + chunk, b)
            m = local.mask[: hi - lo]
            np.take(masks, inverse[lo:hi], axis=0, out=m, mode="clip")
            y = result[lo:hi]
            # x + d (f = +1) saturates as min(x, 255 - d) + d; x - d (f = -1) is the same on
            # the complement 255 - x = x ^ 0xFF: so y = (min(x ^ m, 255 - d) + d) ^ m
            np.bitwise_xor(images[lo:hi], m, out=y)
            np.minimum(y, local.high, out=y)
            np.add(y, np.uint8(d), out=y)
            np.bitwise_xor(y, m, out=y)

    _run_blocks(n, block, threads, work)
    return result


# --- the noise control -------------------------------------------------------------------------
def uniform_noise(
    images: np.ndarray,
    indices: np.ndarray | Sequence[int],
    epsilon: float,
    seed: int,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """``clip(x + trunc(255·u), 0, 255)``, ``u ~ U[-ε, ε]`` per pixel and channel, keyed by index.

    Args:
        images: uint8 ``[N, 64, 64, C]``.
        indices: int ``[N]``: each image's grid index; it alone (with ``seed``) fixes the noise,
            so a row regenerates alone, in any order (see the module docstring for the stream).
        epsilon: the size in (0, 0.5], pixels in [0, 1].
        seed: the build seed, an int in [0, 2**63 - 1].
        out: where to write (``images`` itself works in place); default a new array.
        threads: worker threads (default: every core); the bytes never depend on it.
    """
    images = check_images(images)
    eps255 = check_epsilon(epsilon) * 255.0
    indices = check_noise_indices(indices, len(images))
    key = stream_key(seed, NOISE_DOMAIN)
    threads = _check_threads(threads)
    result = _check_out(out, images)
    n = len(images)
    if n == 0:
        return result
    samples = images[0].size  # 4096·C, a multiple of 4
    words = samples // 4
    scale = np.float32(eps255 / 65536.0)
    with np.errstate(over="ignore"):
        # word counter g·words + k: its SplitMix64 state is key + (g·words + k + 1)·gamma
        lane_state = np.arange(1, words + 1, dtype=np.uint64) * np.uint64(GOLDEN_GAMMA)
        lane_state += np.uint64(key)
        row_state = indices.astype(np.uint64) * np.uint64((words * GOLDEN_GAMMA) & _MASK64)
    flat_out = result.reshape(n, samples)  # a view: result is C-contiguous
    rows = max(1, _NOISE_CHUNK_SAMPLES // samples)  # whole images per in-cache step
    pieces = max(1, samples // _NOISE_CHUNK_SAMPLES)  # or pieces of an image
    piece_words = words // pieces if words % pieces == 0 else words
    pieces = words // piece_words
    block = max(rows, _BLOCK_BYTES // samples // rows * rows)
    local = threading.local()

    def buffers() -> dict[str, np.ndarray]:
        if getattr(local, "buf", None) is None:
            nw = rows * piece_words
            ns = 4 * nw
            local.buf = {
                "z": np.empty(nw, np.uint64),
                "tmp": np.empty(nw, np.uint64),
                "f": np.empty(ns, np.float32),
                "lanes16": np.empty(ns, np.uint16),
                "add": np.empty(ns, np.uint8),
                "mag": np.empty(ns, np.uint8),
            }
        return local.buf

    def step(lo: int, hi: int, w0: int, w1: int) -> None:
        """Rows ``lo:hi``, words ``w0:w1`` of each (samples ``4·w0 : 4·w1``)."""
        buf = buffers()
        nr, nw = hi - lo, w1 - w0
        size, ns = nr * nw, 4 * nr * nw
        z = buf["z"][:size].reshape(nr, nw)
        with np.errstate(over="ignore"):
            np.add(lane_state[None, w0:w1], row_state[lo:hi, None], out=z)
        _mix64_inplace(z, buf["tmp"][:size].reshape(nr, nw))
        r = z.reshape(-1)
        if sys.byteorder != "little":
            r = r.astype("<u8")
        r = r.view("<u2")  # lane t of a word = its bits 16t .. 16t + 15
        odd, f, mag = buf["lanes16"][:ns], buf["f"][:ns], buf["mag"][:ns]
        np.left_shift(r, np.uint16(1), out=odd)  # drops the sign bit
        np.bitwise_or(odd, np.uint16(1), out=odd)  # 2r + 1 with r the low 15 bits
        np.copyto(f, odd)  # exact: < 2^16
        np.multiply(f, scale, out=f)  # < 255·ε: one IEEE float32 rounding
        np.copyto(mag, f, casting="unsafe")  # truncation toward zero
        sign16 = odd.view(np.int16)  # reused
        np.right_shift(r.view("<i2"), np.int16(15), out=sign16)  # bit 15 set -> -1
        add = buf["add"][:ns]
        np.copyto(add, sign16, casting="unsafe")  # 0xFF: add m, 0: subtract m
        x = images[lo:hi].reshape(nr, samples)[:, 4 * w0 : 4 * w1]  # a copy only if strided
        y = flat_out[lo:hi, 4 * w0 : 4 * w1]
        add, mag = add.reshape(nr, 4 * nw), mag.reshape(nr, 4 * nw)
        # x - m saturates as max(x, m) - m; x + m is the same on the complement x ^ 0xFF:
        # y = (max(x ^ a, m) - m) ^ a with a = 0xFF to add, 0 to subtract
        np.bitwise_xor(x, add, out=y)
        np.maximum(y, mag, out=y)
        np.subtract(y, mag, out=y)
        np.bitwise_xor(y, add, out=y)

    def work(a: int, b: int) -> None:
        for lo in range(a, b, rows):
            hi = min(lo + rows, b)
            for p in range(pieces):
                step(lo, hi, p * piece_words, (p + 1) * piece_words)

    _run_blocks(n, block, threads, work)
    return result


# --- adapters for the metrics ------------------------------------------------------------------
@dataclass(frozen=True)
class PatternPerturbation:
    """``perturb(images, indices, s)`` for the paper's pattern: ``s`` is required, indices unused.

    Made by :func:`pattern_perturbation`; frozen and picklable, so it can go to worker processes.
    """

    pattern: Pattern
    epsilon: float

    def __post_init__(self) -> None:
        _check_pattern(self.pattern)
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))

    def __call__(self, images: np.ndarray, indices: np.ndarray, s: np.ndarray | None) -> np.ndarray:
        if s is None:
            raise InvalidArgumentError(
                "the pattern perturbation needs s (one value per image); got None: give the "
                "PerturbedView or fig4_quantities s_values"
            )
        return perturb(images, s, self.epsilon, self.pattern)


@dataclass(frozen=True)
class NoisePerturbation:
    """``perturb(images, indices, s)`` for the uniform-noise control: keyed by indices, s unused.

    Made by :func:`noise_perturbation`.
    """

    epsilon: float
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(self, "seed", _check_seed(self.seed))

    def __call__(self, images: np.ndarray, indices: np.ndarray, s: np.ndarray | None) -> np.ndarray:
        return uniform_noise(images, indices, self.epsilon, self.seed)


def pattern_perturbation(pattern: Pattern, epsilon: float) -> PatternPerturbation:
    """The pattern as a perturbation callable ``(images, indices, s) -> perturb(images, s, ...)``.

    For :class:`~.perturbed_view.PerturbedView` and ``metrics.fig4_quantities``, which pass each
    image's ``s`` (shifted values too, to measure how the images move with ``s``).
    """
    return PatternPerturbation(pattern, epsilon)


def noise_perturbation(epsilon: float, seed: int) -> NoisePerturbation:
    """The noise control as a perturbation callable ``(images, indices, s) -> uniform_noise(...)``.

    It ignores ``s``: its expansiveness along ``s`` is 0 by construction.
    """
    return NoisePerturbation(epsilon, seed)
