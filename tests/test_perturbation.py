"""The perturbation and the noise control: exact byte bounds, the pattern's geometry, keyed noise.

Everything is compared bit for bit (integer arithmetic and single IEEE operations), so the tests
hold on any CPU. Seeds used: Pattern(seed=0, kappa=32) unless a test says otherwise.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import pickle

import numpy as np
import pytest

from perturbed_disentanglement.errors import DataFormatError, InvalidArgumentError
from perturbed_disentanglement.ground_truth import ArrayGroundTruth, Factor
from perturbed_disentanglement.perturbation import pattern as pm
from perturbed_disentanglement.perturbation.pattern import (
    Pattern,
    max_step,
    noise_perturbation,
    pattern_field,
    pattern_perturbation,
    perturb,
    uniform_noise,
)
from perturbed_disentanglement.perturbation.view import PerturbedView

KAPPA = 32.0
EPSILONS = (0.1, 0.0123, 0.5, 3 / 255, 0.2, 0.003)  # 0.003: below one level, d = 0


@pytest.fixture(scope="module")
def pattern() -> Pattern:
    return Pattern(seed=0, kappa=KAPPA)


def random_images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """Random bytes with the extremes 0 and 255 (where the clip acts) over-represented."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 64, 64, channels), dtype=np.uint8)
    pick = rng.random(x.shape)
    x[pick < 0.2] = 0
    x[pick > 0.8] = 255
    return x


def reference_field(s: float, p: Pattern) -> np.ndarray:
    """f(s)[i, j] = P[i + rint(kappa * clip(s) / c_j) + o, j], one column at a time."""
    sc = min(max(float(s), -4.0), 4.0)
    f = np.empty((64, 64), np.int8)
    for j in range(64):
        k = int(np.rint((p.kappa * sc) / float(p.column_factors[j])))
        f[:, j] = p.rows[np.arange(64) + k + p.offset, j]
    return f


# --- the pattern -------------------------------------------------------------------------------
def test_pattern_shape_values_and_draw(pattern):
    assert pattern.offset == 128 and pattern.num_rows == 320
    assert pattern.rows.shape == (320, 64) and pattern.rows.dtype == np.int8
    assert set(np.unique(pattern.rows)) == {-1, 1}
    assert set(np.unique(pattern.column_factors)) == {1, 2, 3, 4}
    assert not pattern.rows.flags.writeable and not pattern.column_factors.flags.writeable
    assert Pattern(seed=0, kappa=2.5).offset == 10  # ceil(4 kappa), kappa need not be an int
    # the documented draw, re-implemented on Python ints
    key = pm.mix64(0 ^ pm.PATTERN_DOMAIN)

    def word(w: int) -> int:
        return pm.mix64(key + (w + 1) * pm.GOLDEN_GAMMA)

    c = [1 + ((word(j // 32) >> (2 * (j % 32))) & 3) for j in range(64)]
    assert list(pattern.column_factors) == c
    for r in (-128, -1, 0, 1, 63, 191):
        bits = word(2 + (2 * r if r >= 0 else -2 * r - 1))
        row = [1 if (bits >> j) & 1 else -1 for j in range(64)]
        assert list(pattern.rows[r + pattern.offset]) == row


def test_pattern_is_a_value_fixed_by_its_seed(pattern):
    again = Pattern(seed=0, kappa=32)
    assert again == pattern and hash(again) == hash(pattern) and again.kappa == 32.0
    np.testing.assert_array_equal(again.rows, pattern.rows)
    other = Pattern(seed=1, kappa=32)
    assert other != pattern and not np.array_equal(other.rows, pattern.rows)
    # a pinned value: the draw is a stable contract (changing it changes every published byte)
    assert pattern.sha256 == PINNED_PATTERN_SHA256
    assert pickle.loads(pickle.dumps(pattern)) == pattern


def test_rows_of_a_seed_do_not_depend_on_kappa(pattern):
    small = Pattern(seed=0, kappa=8)  # o = 32: logical rows -32 .. 95
    start = pattern.offset - small.offset
    np.testing.assert_array_equal(small.rows, pattern.rows[start : start + small.num_rows])
    np.testing.assert_array_equal(small.column_factors, pattern.column_factors)


def test_pattern_round_trips_through_json(pattern):
    d = pattern.to_dict()
    text = json.dumps(d)
    assert len(text) < 4_000  # a few KB in the manifest (kappa = 32)
    back = Pattern.from_dict(json.loads(text))
    assert back == pattern
    np.testing.assert_array_equal(back.rows, pattern.rows)
    odd = Pattern(seed=2**63 - 1, kappa=0.1 + 0.2)  # float kappa survives JSON exactly
    assert Pattern.from_dict(json.loads(json.dumps(odd.to_dict()))).kappa == 0.1 + 0.2
    packed = base64.b64decode(d["rows_packbits_base64"])
    bits = np.unpackbits(np.frombuffer(packed, np.uint8))[: 320 * 64].reshape(320, 64)
    np.testing.assert_array_equal(np.where(bits == 1, 1, -1), pattern.rows)


def test_pattern_refuses_a_tampered_or_foreign_dict(pattern):
    d = pattern.to_dict()
    flipped = copy.deepcopy(d)
    b = bytearray(base64.b64decode(flipped["rows_packbits_base64"]))
    b[5] ^= 1
    flipped["rows_packbits_base64"] = base64.b64encode(bytes(b)).decode()
    with pytest.raises(DataFormatError, match="sha256"):
        Pattern.from_dict(flipped)
    # consistent hash but rows that the seed does not draw: another version of the draw
    flipped["sha256"] = pm._content_sha256({k: v for k, v in flipped.items() if k != "sha256"})
    with pytest.raises(DataFormatError, match="rows_packbits_base64 differs"):
        Pattern.from_dict(flipped)
    c = copy.deepcopy(d)
    c["column_factors"][0] = 5 - c["column_factors"][0]
    c["sha256"] = pm._content_sha256({k: v for k, v in c.items() if k != "sha256"})
    with pytest.raises(DataFormatError, match="column_factors differs"):
        Pattern.from_dict(c)
    with pytest.raises(DataFormatError, match="keys"):
        Pattern.from_dict({k: v for k, v in d.items() if k != "seed"})
    with pytest.raises(DataFormatError, match="format"):
        Pattern.from_dict({**d, "format": "other"})
    bad = {**d, "kappa": -1.0}
    bad["sha256"] = pm._content_sha256({k: v for k, v in bad.items() if k != "sha256"})
    with pytest.raises(DataFormatError, match="kappa"):
        Pattern.from_dict(bad)
    with pytest.raises(DataFormatError, match="dict"):
        Pattern.from_dict("not a dict")


@pytest.mark.parametrize("kappa", [0, -1.0, math.nan, math.inf, -math.inf, 300.0, "32", True, None])
def test_pattern_refuses_bad_kappa(kappa):
    with pytest.raises(InvalidArgumentError, match="kappa"):
        Pattern(seed=0, kappa=kappa)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "0", True])
def test_pattern_refuses_bad_seed(seed):
    with pytest.raises(InvalidArgumentError, match="seed"):
        Pattern(seed=seed, kappa=KAPPA)


# --- the field f(s) ----------------------------------------------------------------------------
def test_field_follows_its_definition(pattern):
    rng = np.random.default_rng(1)
    s = np.concatenate(
        [
            rng.standard_normal(40),
            [0.0, -0.0, 4.0, -4.0, 7.5, -1e9, 0.5 / KAPPA, 1.5 / KAPPA, -2.5 / KAPPA],
            (np.arange(-8, 9) + 0.5) * 3 / KAPPA,  # ties of the c = 3 columns
        ]
    )
    f = pattern_field(s, pattern)
    assert f.shape == (len(s), 64, 64) and f.dtype == np.int8
    for k, value in enumerate(s):
        np.testing.assert_array_equal(f[k], reference_field(value, pattern), err_msg=f"s={value}")
    # s is clipped to [-4, 4]; float32 s is widened exactly
    np.testing.assert_array_equal(f[s == 7.5][0], reference_field(4.0, pattern))
    s32 = rng.standard_normal(20).astype(np.float32)
    np.testing.assert_array_equal(
        pattern_field(s32, pattern), pattern_field(s32.astype(np.float64), pattern)
    )
    # half-way cases round half to even: kappa * s / c = 0.5 -> 0, 1.5 -> 2
    assert pattern.shifts(np.array([0.5 / KAPPA, 1.5 / KAPPA]))[:, 0].tolist() == [0, 2]


def test_shift_by_c_over_kappa_moves_each_column_one_row(pattern):
    rng = np.random.default_rng(2)
    for kappa in (KAPPA, 24.5):
        p = Pattern(seed=0, kappa=kappa)
        for c in (1, 2, 3, 4):
            cols = np.flatnonzero(p.column_factors == c)
            assert cols.size
            # exact: s = q c / kappa gives kappa s / c = q with no rounding (kappa = 32);
            # generic: keep kappa s / c away from the rounding ties; s + c / kappa within +-4
            if kappa == KAPPA:
                s0 = np.arange(-(4 * kappa // c), (4 * kappa - c) // c + 1) * c / kappa
            else:
                s0 = rng.uniform(-3.5, 3.5 - c / kappa, 50)
                frac = (kappa * s0 / c) % 1.0
                s0 = s0[np.abs(frac - 0.5) > 0.01]
            s1 = s0 + c / kappa
            f0, f1 = pattern_field(s0, p), pattern_field(s1, p)
            # column j of f(s + c_j/kappa) is column j of f(s) moved up by one row
            np.testing.assert_array_equal(f1[:, :-1, cols], f0[:, 1:, cols])
            assert (
                f1[:, -1, cols] == p.rows[63 + p.shifts(s1)[:, c - 1] + p.offset][:, cols]
            ).all()


def test_field_is_injective_over_cells_of_s(pattern):
    """f is piecewise constant: its breaks are where some kappa s / c crosses a half-integer.

    Every cell between consecutive breaks (over all four c, s in [-4, 4]) gets its own field,
    and two cells of the finest column factor (c = 1, width 1/kappa) differ in many pixels.
    Seed 0, kappa = 32.
    """
    breaks = np.unique(
        np.concatenate(
            [
                (np.arange(-(4 * KAPPA // c) - 1, 4 * KAPPA // c + 1) + 0.5) * c / KAPPA
                for c in (1, 2, 3, 4)
            ]
        )
    )
    breaks = np.concatenate([[-4.0], breaks[(breaks > -4) & (breaks < 4)], [4.0]])
    mids = (breaks[:-1] + breaks[1:]) / 2
    fields = pattern_field(mids, pattern)
    distinct = {f.tobytes() for f in fields}
    # 449 cells: 256 + 128 + 64 breaks of c = 1, 2, 4 (those of c = 3 fall on c = 1's)
    assert len(distinct) == len(mids) == 449
    # the same holds on a fine regular grid: one field per c = 1 cell at least
    fine = pattern_field(np.linspace(-4, 4, 20_001), pattern)
    assert len({f.tobytes() for f in fine}) >= 8 * KAPPA + 1
    # neighbouring c = 1 cells: the c = 1 columns move by one row
    centres = np.arange(-4 * KAPPA, 4 * KAPPA + 1) / KAPPA
    f = pattern_field(centres, pattern).astype(np.int16)
    changed = (f[1:] != f[:-1]).reshape(len(centres) - 1, -1).sum(axis=1)
    assert changed.min() >= 200  # of 4096 pixels; about half of the c = 1 columns' 64 rows


def test_field_is_not_periodic_in_s(pattern):
    """The field never repeats: fields of distinct cells differ (no aliasing across the range)."""
    centres = np.arange(-4 * KAPPA, 4 * KAPPA + 1) / KAPPA
    f = pattern_field(centres, pattern).reshape(len(centres), -1).astype(np.int16)
    gram = f @ f.T  # 4096 - 2 * Hamming distance
    np.fill_diagonal(gram, -4096)
    assert gram.max() < 4096 - 2 * 200


# --- the perturbation --------------------------------------------------------------------------
def test_max_step_is_floor_of_255_epsilon():
    assert [max_step(e) for e in (0.1, 0.0123, 0.5, 0.2, 0.3, 0.003)] == [25, 3, 127, 51, 76, 0]
    assert [max_step(n / 255) for n in range(1, 128)] == list(range(1, 128))
    assert max_step(3 / 255 - 1e-12) == 3  # read with a 1e-9 tolerance
    assert max_step(3 / 255 - 1e-8) == 2


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_perturb_bound_is_exact_and_change_maximal(pattern, channels, epsilon):
    x = random_images(30, channels, seed=channels)
    s = np.random.default_rng(3).standard_normal(30) * 2
    y = perturb(x, s, epsilon, pattern)
    assert y.dtype == np.uint8 and y.shape == x.shape
    diff = y.astype(np.int16) - x
    d = max_step(epsilon)
    assert np.abs(diff).max() <= epsilon * 255 and np.abs(diff).max() <= d
    # maximal: exactly d in the pattern's direction unless the clip stops it
    f = pattern_field(s, pattern)[..., None].astype(np.int16)
    np.testing.assert_array_equal(y, np.clip(x.astype(np.int16) + d * f, 0, 255))
    if d:
        free = (x >= d) & (x <= 255 - d)
        assert (np.abs(diff[free]) == d).all()


def test_perturb_adds_the_same_field_to_every_channel(pattern):
    grey = random_images(10, 1, seed=4)
    x = np.repeat(grey, 3, axis=-1)
    s = np.linspace(-3, 3, 10)
    y = perturb(x, s, 0.1, pattern)
    np.testing.assert_array_equal(y[..., 0], y[..., 1])
    np.testing.assert_array_equal(y[..., 0], y[..., 2])
    np.testing.assert_array_equal(y[..., :1], perturb(grey, s, 0.1, pattern))


def test_perturb_bytes_do_not_depend_on_threads_chunks_or_place(pattern, monkeypatch):
    x = random_images(50, 3, seed=5)
    s = np.random.default_rng(5).standard_normal(50)
    y = perturb(x, s, 0.15, pattern, threads=1)
    np.testing.assert_array_equal(perturb(x, s, 0.15, pattern, threads=2), y)
    monkeypatch.setattr(pm, "_PATTERN_CHUNK_BYTES", 3 * 12288)
    monkeypatch.setattr(pm, "_BLOCK_BYTES", 7 * 12288)
    np.testing.assert_array_equal(perturb(x, s, 0.15, pattern, threads=3), y)
    inplace = x.copy()
    assert perturb(inplace, s, 0.15, pattern, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, y)
    # any subset, in any order: each image only depends on its own s
    order = np.random.default_rng(6).permutation(50)[:17]
    np.testing.assert_array_equal(perturb(x[order], s[order], 0.15, pattern), y[order])
    assert perturb(x[:0], s[:0], 0.15, pattern).shape == (0, 64, 64, 3)


# --- the noise control -------------------------------------------------------------------------
def reference_noise(x: np.ndarray, g: int, epsilon: float, seed: int, p: int) -> int:
    """Sample p (flat C-order position) of grid image g, from the documented definition."""
    key = pm.mix64(seed ^ pm.NOISE_DOMAIN)
    words = x.size // 4
    word = pm.mix64(key + (g * words + p // 4 + 1) * pm.GOLDEN_GAMMA)
    lane = (word >> (16 * (p % 4))) & 0xFFFF
    m = int(np.float32(2 * (lane & 0x7FFF) + 1) * np.float32(epsilon * 255.0 / 65536.0))
    value = int(x.reshape(-1)[p]) + (m if lane >> 15 else -m)
    return min(max(value, 0), 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_noise_follows_its_definition(channels):
    x = random_images(3, channels, seed=7)
    indices = np.array([0, 5, 737_279])
    y = uniform_noise(x, indices, 0.1, 11)
    rng = np.random.default_rng(7)
    for row, g in enumerate(indices):
        for p in [0, 1, 2, 3, 4, x[0].size - 1, *rng.integers(0, x[0].size, 40)]:
            got = int(y[row].reshape(-1)[p])
            assert got == reference_noise(x[row], int(g), 0.1, 11, int(p)), (g, p)
    # pinned bytes: the stream is a stable contract
    if channels == 1:
        assert y[0, 0, :8, 0].tolist() == PINNED_NOISE_ROW


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_noise_bound_is_exact(channels, epsilon):
    x = random_images(20, channels, seed=8)
    y = uniform_noise(x, np.arange(20) * 1000, epsilon, 3)
    diff = np.abs(y.astype(np.int16) - x)
    assert diff.max() <= epsilon * 255 and diff.max() <= max_step(epsilon)


def test_noise_is_keyed_by_index_alone():
    n = 60
    x = random_images(n, 3, seed=9)
    idx = np.arange(1000, 1000 + n)
    whole = uniform_noise(x, idx, 0.1, 5, threads=1)
    np.testing.assert_array_equal(uniform_noise(x, idx, 0.1, 5, threads=2), whole)
    order = np.random.default_rng(9).permutation(n)
    np.testing.assert_array_equal(uniform_noise(x[order], idx[order], 0.1, 5), whole[order])
    np.testing.assert_array_equal(uniform_noise(x[7:8], idx[7:8], 0.1, 5), whole[7:8])
    parts = [uniform_noise(x[a : a + 13], idx[a : a + 13], 0.1, 5) for a in range(0, n, 13)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    inplace = x.copy()
    assert uniform_noise(inplace, idx, 0.1, 5, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, whole)
    # another seed, or the same image under another index, gets other noise
    assert not np.array_equal(uniform_noise(x, idx, 0.1, 6), whole)
    assert not np.array_equal(uniform_noise(x[:1], idx[1:2], 0.1, 5), whole[:1])
    # strided input (a view of every other image) works and gives the same bytes
    np.testing.assert_array_equal(uniform_noise(x[::2], idx[::2], 0.1, 5), whole[::2])
    flipped = x[..., ::-1]
    np.testing.assert_array_equal(
        uniform_noise(flipped, idx, 0.1, 5), uniform_noise(flipped.copy(), idx, 0.1, 5)
    )
    # duplicates: the same index gives the same bytes
    dup = uniform_noise(x[[3, 3]], idx[[3, 3]], 0.1, 5)
    np.testing.assert_array_equal(dup, whole[[3, 3]])


@pytest.mark.parametrize("chunk", [1 << 12, 5000, 1 << 20])
def test_noise_bytes_do_not_depend_on_chunking(monkeypatch, chunk):
    x = random_images(9, 3, seed=10)
    idx = np.array([4, 8, 15, 16, 23, 42, 99, 7, 0])
    expected = uniform_noise(x, idx, 0.07, 1)
    monkeypatch.setattr(pm, "_NOISE_CHUNK_SAMPLES", chunk)
    monkeypatch.setattr(pm, "_BLOCK_BYTES", 2 * 12288)
    np.testing.assert_array_equal(uniform_noise(x, idx, 0.07, 1, threads=2), expected)


def test_noise_distribution_is_truncated_uniform():
    x = np.full((64, 64, 64, 1), 128, np.uint8)  # no clipping at 128 +- 25
    q = uniform_noise(x, np.arange(64), 0.1, 0).astype(np.int16) - 128  # 262,144 samples
    e = 25.5
    assert abs(q.mean()) < 0.05 and q.min() == -25 and q.max() == 25
    counts = np.bincount((q + 25).reshape(-1), minlength=51) / q.size
    # trunc(U[-e, e]): 0 takes (-1, 1), |k| = 1..24 take a unit each, 25 takes the 0.5 left
    expected = np.full(51, 1 / (2 * e))
    expected[25] = 2 / (2 * e)
    expected[[0, 50]] = 0.5 / (2 * e)
    np.testing.assert_allclose(counts, expected, atol=0.0015)
    assert abs(np.std(q) - math.sqrt(np.sum(expected * (np.arange(51) - 25.0) ** 2))) < 0.05
    # neighbouring pixels and channels are uncorrelated
    flat = q.reshape(64, -1).astype(np.float64)
    assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < 0.01


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0, -0.1, 0.5000001, 1.0, math.nan, math.inf, "0.1", None])
def test_refuses_bad_epsilon(pattern, epsilon):
    x = random_images(2, 1)
    with pytest.raises(InvalidArgumentError, match="epsilon"):
        perturb(x, [0.0, 1.0], epsilon, pattern)
    with pytest.raises(InvalidArgumentError, match="epsilon"):
        uniform_noise(x, [0, 1], epsilon, 0)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 64, 64, 1), np.float32),
        np.zeros((2, 64, 64), np.uint8),
        np.zeros((2, 32, 32, 1), np.uint8),
        np.zeros((2, 64, 64, 0), np.uint8),
        [[0]],
    ],
    ids=["float", "no-channel-axis", "32px", "zero-channels", "list"],
)
def test_refuses_bad_images(pattern, images):
    with pytest.raises(DataFormatError, match=r"uint8 numpy array \[N, 64, 64, C\]"):
        perturb(images, [0.0, 1.0], 0.1, pattern)
    with pytest.raises(DataFormatError, match=r"uint8 numpy array \[N, 64, 64, C\]"):
        uniform_noise(images, [0, 1], 0.1, 0)


@pytest.mark.parametrize(
    ("s", "match"),
    [
        ([0.0, math.nan], "NaN or infinite"),
        ([math.inf, 0.0], "NaN or infinite"),
        ([0.0], "one value per image"),
        ([0.0, 1.0, 2.0], "one value per image"),
        ([[0.0, 1.0]], "one value per image"),
        (["a", "b"], "float array"),
        (np.array([True, False]), "bool"),
    ],
)
def test_refuses_bad_s(pattern, s, match):
    with pytest.raises(InvalidArgumentError, match=match):
        perturb(random_images(2, 1), s, 0.1, pattern)


def test_pattern_field_refuses_bad_s(pattern):
    with pytest.raises(InvalidArgumentError, match="1-D"):
        pattern_field(np.zeros((2, 2)), pattern)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        pattern_field([np.nan], pattern)
    with pytest.raises(InvalidArgumentError, match="Pattern"):
        pattern_field([0.0], {"seed": 0})
    assert pattern_field([], pattern).shape == (0, 64, 64)


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        ([0], "one grid index per image"),
        ([0, 1, 2], "one grid index per image"),
        ([0.0, 1.0], "integer"),
        ([True, False], "integer"),
        ([-1, 0], "grid indices in"),
        ([0, 2**40], "grid indices in"),
    ],
)
def test_noise_refuses_bad_indices(indices, match):
    with pytest.raises(InvalidArgumentError, match=match):
        uniform_noise(random_images(2, 1), indices, 0.1, 0)


def test_refuses_bad_seed_pattern_out_and_threads(pattern):
    x = random_images(2, 1)
    with pytest.raises(InvalidArgumentError, match="seed"):
        uniform_noise(x, [0, 1], 0.1, -1)
    with pytest.raises(InvalidArgumentError, match="Pattern"):
        perturb(x, [0.0, 0.0], 0.1, pattern.to_dict())
    with pytest.raises(InvalidArgumentError, match="out"):
        perturb(x, [0.0, 0.0], 0.1, pattern, out=np.empty((2, 64, 64, 3), np.uint8))
    three = random_images(3, 1)
    with pytest.raises(InvalidArgumentError, match="overlap"):
        uniform_noise(three[:2], [0, 1], 0.1, 0, out=three[1:])
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        uniform_noise(x, [0, 1], 0.1, 0, out=np.empty((4, 64, 64, 1), np.uint8)[::2])
    with pytest.raises(InvalidArgumentError, match="threads"):
        perturb(x, [0.0, 0.0], 0.1, pattern, threads=0)


# --- adapters for the metrics ------------------------------------------------------------------
def tiny_gt() -> ArrayGroundTruth:
    images = random_images(6, 3, seed=12)
    return ArrayGroundTruth(
        "tiny", (Factor("a", np.arange(3.0)), Factor("b", np.arange(2.0))), images
    )


def test_adapters_are_perturbation_callables(pattern):
    gt = tiny_gt()
    s = np.linspace(-1, 1, len(gt))
    view = PerturbedView(gt, pattern_perturbation(pattern, 0.1), s)
    x = gt.images(np.arange(6))
    np.testing.assert_array_equal(view.images([4, 1]), perturb(x[[4, 1]], s[[4, 1]], 0.1, pattern))
    noisy = PerturbedView(gt, noise_perturbation(0.1, 9))
    np.testing.assert_array_equal(noisy.images([5]), uniform_noise(x[5:6], [5], 0.1, 9))
    # picklable (worker processes) and validated when made
    adapter = pickle.loads(pickle.dumps(pattern_perturbation(pattern, 0.1)))
    assert adapter == pattern_perturbation(pattern, 0.1)
    with pytest.raises(InvalidArgumentError, match="epsilon"):
        noise_perturbation(0.0, 1)
    with pytest.raises(InvalidArgumentError, match="needs s"):
        PerturbedView(gt, pattern_perturbation(pattern, 0.1)).images([0])


def test_perturbed_view_is_still_importable_from_metrics():
    from perturbed_disentanglement import metrics

    assert metrics.PerturbedView is PerturbedView


def test_fig4_sees_the_pattern_move_with_s_and_the_noise_not(pattern):
    from perturbed_disentanglement.metrics import fig4_quantities

    gt = tiny_gt()
    s = np.linspace(-1, 1, len(gt))
    moved = fig4_quantities(gt, perturb=pattern_perturbation(pattern, 0.1), s_values=s)
    still = fig4_quantities(gt, perturb=noise_perturbation(0.1, 0), s_values=s)
    assert moved.expansiveness["s"].mean_norm > 1.0
    assert still.expansiveness["s"].mean_norm == 0.0


PINNED_PATTERN_SHA256 = "977330137db910181e5c51d29be854b5e18e2e3f824d411bcb950b8d64e9b1e1"
PINNED_NOISE_ROW = [149, 67, 214, 14, 156, 2, 18, 160]


def test_benchmark_smoke_runs():
    """benchmarks/bench_perturbation.py --smoke (dSprites, 512 images) runs and checks the bound."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_perturbation.py"
    out = subprocess.run(
        [sys.executable, str(script), "--smoke", "--dataset", "dsprites"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if "|" in line}
    assert {"copy", "perturb", "noise"} <= set(rows)
    # the largest change seen on a sample of rows: exactly max_step(0.1) = 25
    assert int(rows["perturb"].split()[-1]) == 25 and int(rows["noise"].split()[-1]) == 25
