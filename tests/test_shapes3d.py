"""Shapes3D: factor grid, procedural renderer invariants, and the official-file reader.

The official ``3dshapes.h5`` (5.9 GB of images) is not available here, so the reader is tested on
files written in the official format by ``write_official_format``: the real shapes, dtypes and
labels, images chunked per image with only a few chunks written; HDF5 returns the fill value
(0) for the others, so a full-size file costs a few MB and well under a second.
"""

from __future__ import annotations

import colorsys
import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from perturbed_disentanglement.errors import ChecksumError, DataFormatError, InvalidArgumentError
from perturbed_disentanglement.ground_truth import ground_truth
from perturbed_disentanglement.ground_truth.shapes3d import (
    FACTOR_SIZES,
    HUES,
    NUM_IMAGES,
    OFFICIAL_SHA256,
    ORIENTATIONS,
    SCALES,
    SHAPES,
    OfficialShapes3D,
    ProceduralShapes3D,
    _room_hit,
    camera_rays,
    combine,
    expected_labels,
    hsv_rgb,
    load_official,
    object_hit,
)

SKY = np.array([153, 226, 249])


@pytest.fixture(scope="module")
def gt() -> ProceduralShapes3D:
    return ProceduralShapes3D()


def idx(gt: ProceduralShapes3D, fh=0, wh=0, oh=0, scale=4, shape=0, orient=7) -> int:
    return int(gt.index([[fh, wh, oh, scale, shape, orient]])[0])


# --- factors --------------------------------------------------------------------------------
def test_factor_grid_matches_the_official_one(gt):
    assert len(gt) == NUM_IMAGES == 480_000
    assert gt.factor_names == (
        "floor_hue",
        "wall_hue",
        "object_hue",
        "scale",
        "shape",
        "orientation",
    )
    assert gt.factor_sizes == FACTOR_SIZES == (10, 10, 10, 8, 4, 15)
    assert gt.categories == {"shape": SHAPES}
    np.testing.assert_allclose(gt.factor_values_of(0)[0], [0, 0, 0, 0.75, 0, -30])
    np.testing.assert_allclose(gt.factor_values_of(len(gt) - 1)[0], [0.9, 0.9, 0.9, 1.25, 3, 30])
    assert gt.factors(1).tolist() == [[0, 0, 0, 0, 0, 1]]  # orientation fastest
    assert gt.factors(15).tolist() == [[0, 0, 0, 0, 1, 0]]
    assert gt.factors(48_000).tolist() == [[1, 0, 0, 0, 0, 0]]  # floor hue slowest


def test_factor_index_round_trip(gt):
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(gt), 1000)
    assert np.array_equal(gt.index(gt.factors(i)), i)
    f = gt.sample_factors(500, rng)
    assert np.array_equal(gt.factors(gt.index(f)), f)
    np.testing.assert_allclose(gt.factor_values_of(i), expected_labels()[i])


def test_factory_returns_procedural_without_path():
    assert isinstance(ground_truth("shapes3d"), ProceduralShapes3D)
    assert isinstance(ground_truth("3dshapes"), ProceduralShapes3D)


def test_hsv_rgb_matches_colorsys():
    for h in HUES:
        np.testing.assert_allclose(hsv_rgb(h), colorsys.hsv_to_rgb(h, 1.0, 1.0), atol=1e-12)


# --- renderer invariants ----------------------------------------------------------------------
def test_images_are_uint8_64x64x3_and_deterministic(gt):
    i = np.array([0, 12_345, 479_999, 12_345])
    x = gt.images(i)
    assert x.dtype == np.uint8 and x.shape == (4, 64, 64, 3)
    assert np.array_equal(x[1], x[3])
    assert np.array_equal(ProceduralShapes3D().images(i), x)
    assert gt.images(np.array([], dtype=np.int64)).shape == (0, 64, 64, 3)


def test_procedural_pickles_with_its_views(gt):
    i = np.array([idx(gt, 1, 2, 3), idx(gt, 4, 5, 6, shape=3)])
    x = gt.images(i)
    clone = pickle.loads(pickle.dumps(gt))
    assert np.array_equal(clone.images(i), x)


def test_bad_indices_are_rejected(gt):
    with pytest.raises(InvalidArgumentError, match="out of range"):
        gt.images([480_000])
    with pytest.raises(InvalidArgumentError):
        gt.floor_hue_block(3, 3)
    with pytest.raises(InvalidArgumentError):
        gt.block([0], [480])


def test_sky_is_the_official_colour_and_identical_across_hues(gt):
    rng = np.random.default_rng(1)
    hues = rng.integers(0, 10, (20, 3))
    x = gt.images([idx(gt, *h) for h in hues])
    top = x[:, :8]  # the sky fills the top rows in every view
    assert np.all(top == top[0])
    assert np.all(np.abs(top[0].astype(int) - SKY) <= 1)


def test_object_hue_changes_only_object_pixels(gt):
    for shape in range(4):
        a, b = gt.images([idx(gt, 2, 5, 0, shape=shape), idx(gt, 2, 5, 6, shape=shape)])
        view = gt.view(gt.view_index(gt.factors(idx(gt, shape=shape)))[0])
        changed = np.any(a != b, axis=-1).reshape(-1)
        assert changed.sum() > 50
        assert not np.any(changed & (view.obj == 0))


def test_floor_and_wall_hues_change_only_their_pixels(gt):
    view = gt.view(gt.view_index(gt.factors(idx(gt)))[0])
    a, b, c = gt.images([idx(gt, 0, 0, 0), idx(gt, 4, 0, 0), idx(gt, 0, 4, 0)])
    floor_changed = np.any(a != b, axis=-1).reshape(-1)
    wall_changed = np.any(a != c, axis=-1).reshape(-1)
    assert floor_changed.sum() > 500 and wall_changed.sum() > 500
    assert not np.any(floor_changed & (view.floor == 0))
    assert not np.any(wall_changed & (view.wall == 0))


def _hue_of(pixels: np.ndarray) -> float:
    r, g, b = np.median(pixels.reshape(-1, 3), axis=0) / 255.0
    return colorsys.rgb_to_hsv(r, g, b)[0]


def test_orientation_moves_the_camera_but_keeps_colours(gt):
    fh, wh, oh = 0, 6, 3  # red floor, blue wall, cyan-green object
    ims = gt.images([idx(gt, fh, wh, oh, orient=k) for k in (0, 7, 14)])
    views = [gt.view(gt.view_index(gt.factors(idx(gt, orient=k)))[0]) for k in (0, 7, 14)]
    masks = [(v.wall > 0).reshape(64, 64) for v in views]
    assert (masks[0] != masks[2]).sum() > 20  # the room moved in the image
    assert (masks[0] != masks[1]).sum() > 20
    for im, v in zip(ims, views):
        pure_wall = ((v.floor == 0) & (v.obj == 0) & (v.wall > 0)).reshape(64, 64)
        pure_floor = ((v.wall == 0) & (v.obj == 0) & (v.floor > 0)).reshape(64, 64)
        assert _hue_of(im[pure_wall]) == pytest.approx(HUES[wh], abs=0.02)
        assert _hue_of(im[pure_floor]) == pytest.approx(HUES[fh], abs=0.02)


def test_larger_scale_covers_more_pixels_and_shapes_differ(gt):
    masks = {}
    for shape in range(4):
        cover = []
        for s in range(len(SCALES)):
            v = gt.view(gt.view_index(np.array([[0, 0, 0, s, shape, 7]]))[0])
            cover.append(float(v.obj.sum()))
            masks[shape, s] = v.obj > 0
        assert np.all(np.diff(cover) > 0), (SHAPES[shape], cover)
    for a in range(4):
        for b in range(a + 1, 4):
            inter = (masks[a, 7] & masks[b, 7]).sum()
            union = (masks[a, 7] | masks[b, 7]).sum()
            assert inter / union < 0.9, (SHAPES[a], SHAPES[b])


def test_object_stands_in_the_middle_on_the_floor(gt):
    for shape in range(4):
        v = gt.view(gt.view_index(np.array([[0, 0, 0, 4, shape, 7]]))[0])
        rows, cols = np.nonzero((v.obj > 0).reshape(64, 64))
        assert abs(cols.mean() - 31.5) < 2  # centred at azimuth 0
        assert 45 <= rows.max() <= 60  # its base is low in the image, on the floor


@pytest.mark.parametrize("shape", range(4))
def test_culling_loses_no_object_samples(gt, shape):
    """The bounding-sphere culling of primary rays agrees with brute-force ray casting."""
    p = gt.scene
    o, d = camera_rays(float(ORIENTATIONS[3]), p)
    t_room, _ = _room_hit(o, d, p)
    t_obj, _ = object_hit(o, d, shape, float(SCALES[-1]), p)
    brute = (t_obj < t_room).reshape(64 * 64, -1).any(axis=1)
    view = gt.view(gt.view_index(np.array([[0, 0, 0, 7, shape, 3]]))[0])
    assert np.array_equal(brute, view.obj > 0)


def test_edges_are_antialiased(gt):
    view = gt.view(gt.view_index(gt.factors(idx(gt, shape=2)))[0])
    partial = (view.obj > 0) & (view.floor + view.wall > 0)
    assert partial.sum() > 20  # pixels that mix the sphere with what is behind it


# --- fast paths agree with the direct formula -----------------------------------------------
def test_images_equal_reference_formula(gt):
    rng = np.random.default_rng(2)
    f = gt.sample_factors(256, rng)
    f[:, 3:] = f[rng.integers(0, 12, 256), 3:]  # 12 geometries, many hue triples
    i = gt.index(f)
    assert np.array_equal(gt.images(i), gt.reference_images(i))


def test_block_equals_images(gt):
    views = np.array([0, 77, 250, 479])
    floor_hues = [3, 9]
    blk = gt.block(floor_hues, views)
    assert blk.shape == (200, 4, 64, 64, 3)
    sc, sh, ori = np.unravel_index(views, FACTOR_SIZES[3:])
    for c in (0, 1, 57, 100, 199):
        fh, wh, oh = floor_hues[c // 100], (c // 10) % 10, c % 10
        f = np.stack([np.full(4, fh), np.full(4, wh), np.full(4, oh), sc, sh, ori], axis=1)
        assert np.array_equal(blk[c], gt.images(gt.index(f)))


def test_view_weights_reproduce_images(gt):
    i = idx(gt, 1, 2, 3, scale=7, shape=3, orient=14)
    f = gt.factors(i)[0]
    v = gt.view(gt.view_index(f[None])[0])
    rgb = hsv_rgb(HUES[f[:3]]).astype(np.float32)
    direct = combine(v.floor, v.wall, v.obj, v.const, rgb[0], rgb[1], rgb[2]).reshape(64, 64, 3)
    assert np.array_equal(gt.images(i)[0], direct)
    assert ORIENTATIONS[f[5]] == 30.0


@pytest.mark.slow
def test_full_floor_hue_slice_matches_images():
    gt = ProceduralShapes3D()
    blk = gt.floor_hue_block(7, 8)
    assert blk.shape == (48_000, 64, 64, 3)
    i = np.random.default_rng(3).integers(7 * 48_000, 8 * 48_000, 500)
    assert np.array_equal(blk[i - 7 * 48_000], gt.images(i))


# --- the official file ------------------------------------------------------------------------
def write_official_format(
    path: Path,
    written: dict[int, np.ndarray],
    *,
    images_shape=(NUM_IMAGES, 64, 64, 3),
    images_dtype=np.uint8,
    labels: np.ndarray | None = None,
    images_key: str = "images",
) -> Path:
    """An HDF5 file in the official layout; only the images in ``written`` are stored."""
    lab = expected_labels() if labels is None else labels
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            images_key,
            shape=images_shape,
            dtype=images_dtype,
            chunks=(1, *images_shape[1:]),
            compression="gzip",
            fillvalue=0,
        )
        for i, im in written.items():
            ds[i] = im
        f.create_dataset("labels", data=lab, compression="gzip", chunks=(48_000, lab.shape[1]))
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict[int, np.ndarray]]:
    rng = np.random.default_rng(4)
    written = {
        int(i): rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in (0, 5, 7, 479_999)
    }
    path = write_official_format(tmp_path_factory.mktemp("s3d") / "3dshapes.h5", written)
    return path, written


def test_official_format_fixture_is_small(official):
    path, _ = official
    assert path.stat().st_size < 20_000_000


def test_official_reader_reads_requested_images(official):
    path, written = official
    gt = ground_truth("shapes3d", path=path, verify_checksum=False)
    assert isinstance(gt, OfficialShapes3D)
    assert len(gt) == NUM_IMAGES and gt.source == str(path)
    x = gt.images([7, 0, 7, 1, 479_999, 5])
    for k, i in enumerate([7, 0, 7, 1, 479_999, 5]):
        expect = written.get(i, np.zeros((64, 64, 3), np.uint8))
        assert np.array_equal(x[k], expect)
    assert np.array_equal(gt.images(np.arange(4, 8))[1], written[5])  # contiguous read
    assert gt.images([]).shape == (0, 64, 64, 3)
    np.testing.assert_allclose(gt.factor_values_of([7])[0], [0, 0, 0, 0.75, 0, -30 + 7 * 60 / 14])


def test_official_reader_pickles(official):
    path, written = official
    gt = load_official(path, verify_checksum=False)
    gt.images([0])  # opens the file
    clone = pickle.loads(pickle.dumps(gt))
    assert np.array_equal(clone.images([5])[0], written[5])
    gt.close()
    clone.close()


def test_checksum_mismatch_names_both_hashes(official):
    path, _ = official
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as err:
        load_official(path)
    assert actual in str(err.value) and OFFICIAL_SHA256 in str(err.value)
    assert "verify_checksum=False" in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataFormatError, match="HDF5"):
        load_official(bad, verify_checksum=False)
    with pytest.raises(DataFormatError, match="regular file"):
        load_official(tmp_path, verify_checksum=False)


def test_truncated_file(official, tmp_path):
    path, _ = official
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError):
        load_official(cut, verify_checksum=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images_key": "imgs"}, "no dataset 'images'"),
        ({"images_shape": (1000, 64, 64, 3)}, r"'images' is uint8 \[1000, 64, 64, 3\]"),
        ({"images_shape": (NUM_IMAGES, 64, 64, 1)}, "expected uint8"),
        ({"images_dtype": np.float32}, "'images' is float32"),
        ({"labels": expected_labels().astype(np.float32)}, "'labels' is float32"),
        ({"labels": expected_labels()[:, :5]}, "'labels' is float64"),
    ],
)
def test_wrong_structure_is_rejected(tmp_path, kwargs, match):
    path = write_official_format(tmp_path / "x.h5", {}, **kwargs)
    with pytest.raises(DataFormatError, match=match):
        load_official(path, verify_checksum=False)


def test_wrong_labels_are_rejected(tmp_path):
    lab = expected_labels()
    lab[:, 3] *= 2.0  # scales out of range
    path = write_official_format(tmp_path / "range.h5", {}, labels=lab)
    with pytest.raises(DataFormatError, match="scale"):
        load_official(path, verify_checksum=False)
    lab = expected_labels()[::-1].copy()  # right values, wrong order
    path = write_official_format(tmp_path / "order.h5", {}, labels=lab)
    with pytest.raises(DataFormatError, match="grid order"):
        load_official(path, verify_checksum=False)
