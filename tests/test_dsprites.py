"""dSprites: factor grid, procedural renderer (geometry, calibration), official-file readers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from perturbed_disentanglement.errors import ChecksumError, DataFormatError, InvalidArgumentError
from perturbed_disentanglement.ground_truth import dsprites as ds
from perturbed_disentanglement.ground_truth import ground_truth

from . import fixtures_dsprites as fx

CALIBRATION = Path(
    os.environ.get("DSPRITES_CALIBRATION", "/work/shared/calibration/dsprites_frames_origin.npz")
)
STEP = 32 / 31


@pytest.fixture(scope="module")
def gt() -> ds.ProceduralDSprites:
    return ds.ProceduralDSprites()


def _grid_images(gt, **fixed):
    """Images (bool [.., 64, 64]) for all combinations of the given factor index lists."""
    axes = [np.atleast_1d(fixed.get(n, range(s))) for n, s in zip(gt.factor_names, gt.factor_sizes)]
    mesh = np.meshgrid(*axes, indexing="ij")
    f = np.stack([m.ravel() for m in mesh], 1)
    imgs = gt.images(gt.index(f))[..., 0] > 0
    return imgs.reshape(*[len(a) for a in axes], 64, 64)


def _centroid(img: np.ndarray) -> np.ndarray:
    """(row, col) centroids of boolean images [..., 64, 64]."""
    area = img.sum((-2, -1))
    rows = (img * np.arange(64)[:, None]).sum((-2, -1)) / area
    cols = (img * np.arange(64)[None, :]).sum((-2, -1)) / area
    return np.stack([rows, cols], -1)


# --- factor grid ---------------------------------------------------------------------------------
def test_factor_grid(gt):
    assert gt.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert gt.factor_sizes == (3, 6, 40, 32, 32)
    assert len(gt) == 737_280 == ds.NUM_IMAGES
    assert gt.categories == {"shape": ("square", "ellipse", "heart")}
    np.testing.assert_array_equal(gt.factor_values[0], [1, 2, 3])
    np.testing.assert_allclose(gt.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(gt.factor_values[2][[0, -1]], [0, 2 * np.pi])
    np.testing.assert_allclose(np.diff(gt.factor_values[3]), 1 / 31)
    assert gt.image_shape == (64, 64, 1) and gt.source == "procedural"


def test_index_round_trip(gt):
    rng = np.random.default_rng(0)
    f = gt.sample_factors(500, rng)
    np.testing.assert_array_equal(gt.factors(gt.index(f)), f)
    idx = rng.integers(0, len(gt), 500)
    np.testing.assert_array_equal(gt.index(gt.factors(idx)), idx)
    # row-major, posY fastest, as in the official file
    assert gt.index([1, 2, 3, 4, 5])[0] == (((1 * 6 + 2) * 40 + 3) * 32 + 4) * 32 + 5
    np.testing.assert_allclose(gt.factor_values_of(gt.index([2, 5, 0, 31, 0]))[0], [3, 1, 0, 1, 0])


def test_factory_and_bad_indices(gt):
    assert isinstance(ground_truth("dsprites"), ds.ProceduralDSprites)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        gt.images([len(gt)])
    with pytest.raises(InvalidArgumentError, match="integers"):
        gt.images([0.5])
    assert gt.images([]).shape == (0, 64, 64, 1)


# --- renderer invariants ------------------------------------------------------------------------
def test_images_binary_uint8(gt):
    imgs = gt.images(np.random.default_rng(1).integers(0, len(gt), 256))
    assert imgs.dtype == np.uint8 and imgs.shape == (256, 64, 64, 1)
    assert set(np.unique(imgs)) == {0, 255}


def test_large_requests_are_batched_consistently(gt):
    idx = np.random.default_rng(2).integers(0, len(gt), ds._BATCH + 900)
    whole = gt.images(idx)
    np.testing.assert_array_equal(whole[:700], gt.images(idx[:700]))
    np.testing.assert_array_equal(whole[-900:], gt.images(idx[-900:]))


def test_orientation_0_equals_39(gt):
    for shape in range(3):
        imgs = _grid_images(gt, shape=shape, orientation=[0, 39], posX=[0, 7, 31], posY=[0, 20])
        np.testing.assert_array_equal(imgs[0, :, 0], imgs[0, :, 1])
        assert not np.array_equal(
            imgs[0, :, 0],
            _grid_images(gt, shape=shape, orientation=1, posX=[0, 7, 31], posY=[0, 20])[0],
        )


def test_measured_sizes_at_orientation_0(gt):
    """SPEC §2: square 20·scale, ellipse 26 × 14 and heart 20 × 17 px at scale 1, lobes up."""
    imgs = _grid_images(gt, orientation=0, posX=0, posY=0)[:, :, 0, 0, 0]  # [shape, scale]
    for k, s in enumerate(ds.SCALE_VALUES):
        side = round(20 * s)
        assert imgs[0, k].sum() == side * side
    rows, cols = np.nonzero(imgs[1, 5])
    assert (np.ptp(cols) + 1, np.ptp(rows) + 1) == (26, 14) and imgs[1, 5].sum() == 288
    rows, cols = np.nonzero(imgs[2, 5])
    assert (np.ptp(cols) + 1, np.ptp(rows) + 1) == (20, 17)
    assert abs(int(imgs[2, 5].sum()) - 222) <= 4
    lift = 15.5 - _centroid(imgs[2, 5])[0]
    assert 1.6 < lift < 2.2  # area centroid ≈1.9 px above the rotation centre
    # lobes up: the top row has two runs (a notch), the bottom row one short run (the tip)
    top, bottom = imgs[2, 5][rows.min()], imgs[2, 5][rows.max()]
    assert np.count_nonzero(np.diff(top.astype(int)) == 1) == 2
    assert bottom.sum() <= 3


def test_area_scales_with_scale_squared(gt):
    imgs = _grid_images(gt, orientation=[0, 5, 17, 26], posX=[3, 19], posY=[11])
    area = imgs.sum((-2, -1)).astype(float)  # [shape, scale, orient, posX, posY]
    ratio = area / area[:, 5:6]
    expected = (ds.SCALE_VALUES / 1.0) ** 2
    np.testing.assert_allclose(
        ratio, np.broadcast_to(expected[None, :, None, None, None], ratio.shape), rtol=0.12
    )


def test_rotation_about_the_centre(gt):
    """Square and ellipse are centrally symmetric: their centroid is the rotation centre."""
    for pos in (0, 13, 31):
        imgs = _grid_images(gt, shape=[0, 1], orientation=range(40), posX=pos, posY=31 - pos)
        c = _centroid(imgs)
        want = ds.centre_pixel(np.array([ds.POSITION_VALUES[31 - pos], ds.POSITION_VALUES[pos]]))
        assert np.abs(c - want).max() < 0.3


def test_orientation_turns_counter_clockwise(gt):
    """Heart lobes point up at 0; a quarter turn (index 10 ≈ 92°) points them left as displayed."""
    imgs = _grid_images(gt, shape=2, scale=5, orientation=[0, 10, 20, 30], posX=15, posY=15)
    c = _centroid(imgs.reshape(4, 64, 64)) - ds.centre_pixel(ds.POSITION_VALUES[15])
    assert c[0, 0] < -1.5  # up (rows grow downwards)
    assert c[1, 1] < -1.5  # left
    assert c[2, 0] > 1.5  # down
    assert c[3, 1] > 1.5  # right


def test_translation_steps_32_over_31_px(gt):
    imgs = _grid_images(gt, orientation=[0, 9], scale=[2, 5], posY=6)  # all posX
    c = _centroid(imgs)[..., 0, :]  # [shape, scale, orient, posX, 2]
    cols = c[..., 1]
    steps = np.diff(cols, axis=-1)
    assert np.abs(steps.mean(-1) - STEP).max() < 0.01
    assert np.abs(cols - cols[..., :1] - STEP * np.arange(32)).max() < 0.5
    assert np.abs(c[..., 0] - c[..., :1, 0]).max() < 0.3  # posX barely moves the rows
    # posY moves the rows downwards by the same step
    imgs_y = _grid_images(gt, shape=1, scale=5, orientation=0, posX=4)
    rows = _centroid(imgs_y)[0, 0, 0, 0, :, 0]
    np.testing.assert_allclose(rows - rows[0], STEP * np.arange(32), atol=0.5)


def test_translation_is_not_a_pixel_shift(gt):
    """Sub-pixel phases differ: posX 1 is not posX 0 shifted by one column (for a rotated heart)."""
    imgs = _grid_images(gt, shape=2, scale=5, orientation=7, posX=[0, 1, 31], posY=0)[0, 0, 0, :, 0]
    assert not np.array_equal(np.roll(imgs[0], 1, axis=1), imgs[1])
    np.testing.assert_array_equal(np.roll(imgs[0], 32, axis=1), imgs[2])  # 32 px: same phase


def test_blocks_match_images(gt):
    """The block renderer behind all_images() agrees with images() on several blocks."""
    for shape, k, o in ((0, 0, 0), (1, 3, 17), (2, 5, 7), (2, 1, 39), (0, 5, 21)):
        block = np.zeros((1024, 64, 8), np.uint64)
        ds._render_block_into(block, shape, k, o)
        start = gt.index([shape, k, o, 0, 0])[0]
        np.testing.assert_array_equal(
            block.view(np.uint8).reshape(1024, 64, 64, 1), gt.images(np.arange(start, start + 1024))
        )


@pytest.mark.slow
def test_all_images_matches_images(gt):
    imgs = gt.all_images()
    assert imgs.shape == (737_280, 64, 64, 1) and imgs.dtype == np.uint8
    idx = np.random.default_rng(3).integers(0, len(gt), 3000)
    np.testing.assert_array_equal(imgs[idx], gt.images(idx))
    by_orientation = imgs.reshape(3, 6, 40, -1)
    np.testing.assert_array_equal(by_orientation[:, :, 0], by_orientation[:, :, 39])
    assert not np.array_equal(by_orientation[:, :, 0], by_orientation[:, :, 1])


# --- calibration against real official frames ---------------------------------------------------
@pytest.fixture(scope="module")
def real_frames():
    if not CALIBRATION.is_file():
        pytest.skip(f"calibration frames not found at {CALIBRATION} (set DSPRITES_CALIBRATION)")
    data = np.load(CALIBRATION)
    return data["frames"] > 0, data["factors"].astype(np.int64)


def test_calibration_iou(gt, real_frames):
    frames, factors = real_frames
    rendered = gt.images(gt.index(factors))[..., 0] > 0
    iou = (rendered & frames).sum((1, 2)) / (rendered | frames).sum((1, 2))
    for shape in range(3):
        sel = factors[:, 0] == shape
        assert sel.sum() >= 40
        assert iou[sel].mean() >= 0.97, (ds.SHAPES[shape], iou[sel].mean())
        assert iou[sel].min() >= 0.90, (ds.SHAPES[shape], iou[sel].min())
    # square and ellipse are fitted exactly: every real pixel is reproduced
    assert (rendered != frames)[factors[:, 0] < 2].sum() == 0


# --- official files ------------------------------------------------------------------------------
def _load_subset(path, verify_checksum=False):
    return ds._load(path, verify_checksum=verify_checksum, subset=fx.SUBSET)


@pytest.mark.parametrize("writer", [fx.write_npz, fx.write_hdf5], ids=["npz", "hdf5"])
def test_official_subset_file_reads_back(tmp_path, gt, writer):
    suffix = ".npz" if writer is fx.write_npz else ".hdf5"
    path = writer(tmp_path / f"dsprites{suffix}")
    loaded = _load_subset(path)
    idx = fx.subset_indices()
    assert len(loaded) == len(idx) == 48 and loaded.source == str(path)
    assert loaded.factor_names == gt.factor_names
    assert loaded.factor_sizes == (3, 2, 2, 2, 2)
    np.testing.assert_array_equal(loaded.all_images(), gt.images(idx))
    np.testing.assert_allclose(loaded.factor_values_of(np.arange(48)), gt.factor_values_of(idx))
    assert loaded.categories == {"shape": ("square", "ellipse", "heart")}


def test_npz_md5_mismatch_only_warns(tmp_path):
    path = fx.write_npz(tmp_path / "d.npz")
    with pytest.warns(UserWarning, match="unconfirmed"):
        _load_subset(path, verify_checksum=True)


def test_hdf5_checksum_mismatch(tmp_path):
    path = fx.write_hdf5(tmp_path / "d.hdf5")
    with pytest.raises(ChecksumError, match="729fa22e"):
        _load_subset(path, verify_checksum=True)


@pytest.mark.parametrize("writer", [fx.write_npz, fx.write_hdf5], ids=["npz", "hdf5"])
def test_public_loader_requires_the_full_grid(tmp_path, writer):
    suffix = ".npz" if writer is fx.write_npz else ".hdf5"
    path = writer(tmp_path / f"d{suffix}")
    with pytest.raises(DataFormatError, match=r"expected uint8 \[737280, 64, 64\]"):
        ds.load_official(path, verify_checksum=False)
    with pytest.raises(DataFormatError, match="737280"):
        ground_truth("dsprites", path=path, verify_checksum=False)


def _drop(key):
    return lambda a: a.pop(key)


def _set(key, fn):
    def mutate(a):
        a[key] = fn(a[key])

    return mutate


def _cell(row, col):
    return (np.arange(48) == row)[:, None] & (np.arange(6) == col)[None, :]


def _swap_rows(a):
    a["latents_classes"] = a["latents_classes"][[1, 0, *range(2, 48)]]


BAD = [
    ("imgs missing", _drop("imgs"), r"missing .*imgs"),
    ("classes missing", _drop("latents_classes"), r"missing .*classes"),
    ("imgs float", _set("imgs", lambda x: x.astype(np.float32)), r"'imgs' is float32 .*expected uint8"),
    ("imgs shape", _set("imgs", lambda x: x[:, :32, :32]), r"'imgs' is uint8 \[48, 32, 32\]"),
    ("classes float", _set("latents_classes", lambda x: x.astype(np.float64)), "expected integer"),
    ("values int", _set("latents_values", lambda x: x.astype(np.int64)), "expected float"),
    ("values columns", _set("latents_values", lambda x: x[:, :5]), r"\[48, 5\].*\[48, 6\]"),
    ("order", _swap_rows, "not in the official grid order: row 0"),
    ("value", _set("latents_values", lambda x: x + 0.01 * _cell(3, 2)), "row 3 has scale"),
    ("pixel", _set("imgs", lambda x: x + np.uint8(2) * (np.arange(48) == 5)[:, None, None]), "image 5 has value"),
]  # fmt: skip


@pytest.mark.parametrize("what,mutate,message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("writer", [fx.write_npz, fx.write_hdf5], ids=["npz", "hdf5"])
def test_bad_files_are_rejected_clearly(tmp_path, writer, what, mutate, message):
    suffix = ".npz" if writer is fx.write_npz else ".hdf5"
    path = writer(tmp_path / f"bad{suffix}", mutate=mutate)
    with pytest.raises(DataFormatError, match=message):
        _load_subset(path)


def test_npz_bad_metadata(tmp_path):
    def meta(a):
        a["metadata"]["latents_sizes"] = np.array([1, 3, 6, 40, 16, 16])

    path = fx.write_npz(tmp_path / "m.npz", mutate=meta)
    with pytest.raises(DataFormatError, match=r"latents_sizes .*expected \[1, 3, 6, 40, 32, 32\]"):
        _load_subset(path)
    path = fx.write_npz(tmp_path / "m2.npz", mutate=_drop("metadata"))
    with pytest.raises(DataFormatError, match=r"missing keys \['metadata'\]"):
        _load_subset(path)


@pytest.mark.parametrize("writer", [fx.write_npz, fx.write_hdf5], ids=["npz", "hdf5"])
def test_truncated_and_missing_files(tmp_path, writer):
    suffix = ".npz" if writer is fx.write_npz else ".hdf5"
    path = fx.truncate(writer(tmp_path / f"t{suffix}"))
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        _load_subset(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ds.load_official(tmp_path / f"absent{suffix}")
    other = tmp_path / "d.txt"
    other.write_text("x")
    with pytest.raises(DataFormatError, match="unknown dSprites file type"):
        ds.load_official(other)


def test_hdf5_full_structure_is_checked_before_images(tmp_path):
    """A full-size hdf5 (images never written, so the file is small) with a wrong class column."""
    import h5py

    n = ds.NUM_IMAGES
    idx = np.arange(n)
    sizes = (1, 3, 6, 40, 32, 32)
    classes = np.stack(np.unravel_index(idx, sizes), 1).astype(np.int64)
    classes[:, [4, 5]] = classes[:, [5, 4]]  # posX and posY swapped: a transposed grid
    values = np.ones((n, 6))
    path = tmp_path / "full.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "imgs", shape=(n, 64, 64), dtype=np.uint8, chunks=(1024, 64, 64), compression="gzip"
        )
        f.create_dataset("latents/classes", data=classes, compression="gzip")
        f.create_dataset("latents/values", data=values, compression="gzip")
    assert path.stat().st_size < 50e6
    with pytest.raises(DataFormatError, match="not in the official grid order: row 1 has posX"):
        ds.load_official(path, verify_checksum=False)
    with pytest.raises(ChecksumError):
        ds.load_official(path, verify_checksum=True)
