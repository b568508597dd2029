"""The shared ground-truth API: index arithmetic, validation and the factory."""

import numpy as np
import pytest

from perturbed_disentanglement import ArrayGroundTruth, Factor, ground_truth
from perturbed_disentanglement.errors import ChecksumError, DataFormatError, InvalidArgumentError
from perturbed_disentanglement.ground_truth import sha256_of, verify_sha256


@pytest.fixture
def toy():
    specs = [
        Factor("shape", np.array([1.0, 2.0]), ("a", "b")),
        Factor("x", np.linspace(0, 1, 3)),
        Factor("y", np.linspace(0, 1, 4)),
    ]
    images = np.arange(24, dtype=np.uint8).reshape(24, 1, 1, 1).repeat(4, 1).repeat(4, 2)
    return ArrayGroundTruth("toy", specs, images)


def test_metadata(toy):
    assert toy.factor_names == ("shape", "x", "y")
    assert toy.factor_sizes == (2, 3, 4)
    assert len(toy) == 24
    assert toy.image_shape == (4, 4, 1)
    assert toy.categories == {"shape": ("a", "b")}
    assert "shape=2" in repr(toy)


def test_row_major_order_last_factor_fastest(toy):
    np.testing.assert_array_equal(
        toy.factors([0, 1, 4, 23]), [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 3]]
    )
    idx = np.arange(len(toy))
    np.testing.assert_array_equal(toy.index(toy.factors(idx)), idx)
    assert toy.factors(5).dtype == np.int64 and toy.index([1, 2, 3]).dtype == np.int64


def test_factor_values_of(toy):
    np.testing.assert_allclose(toy.factor_values_of([23]), [[2.0, 1.0, 1.0]])


def test_images_follow_indices(toy):
    imgs = toy.images([3, 7])
    assert imgs.shape == (2, 4, 4, 1) and imgs.dtype == np.uint8
    assert imgs[0, 0, 0, 0] == 3 and imgs[1, 2, 2, 0] == 7


@pytest.mark.parametrize("bad", [-1, 24, [0, 99]])
def test_out_of_range_indices(toy, bad):
    with pytest.raises(InvalidArgumentError, match="out of range"):
        toy.images(bad)


def test_float_indices_rejected(toy):
    with pytest.raises(InvalidArgumentError, match="integers"):
        toy.factors([0.5])


def test_bad_factor_rows(toy):
    with pytest.raises(InvalidArgumentError, match=r"factor 'x' index 3 is out of range 0\.\.2"):
        toy.index([[0, 3, 0]])
    with pytest.raises(InvalidArgumentError, match=r"shape \[n, 3\]"):
        toy.index([[0, 1]])
    with pytest.raises(InvalidArgumentError, match="integer"):
        toy.index([[0.0, 1.0, 1.0]])


def test_sample_factors_is_seeded_and_in_range(toy):
    a = toy.sample_factors(100, np.random.default_rng(1))
    b = toy.sample_factors(100, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert (a >= 0).all() and (a < np.array(toy.factor_sizes)).all()


def test_array_ground_truth_checks_its_array():
    with pytest.raises(DataFormatError, match="uint8"):
        ArrayGroundTruth("t", [Factor("a", np.arange(2.0))], np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(DataFormatError, match=r"\[2, H, W, C\]"):
        ArrayGroundTruth("t", [Factor("a", np.arange(2.0))], np.zeros((3, 4, 4, 1), np.uint8))


def test_unknown_dataset():
    with pytest.raises(InvalidArgumentError, match="unknown dataset 'mnist'"):
        ground_truth("mnist")


def test_checksum_error_names_both_hashes(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    actual = sha256_of(f)
    with pytest.raises(ChecksumError) as err:
        verify_sha256(f, "0" * 64, verify=True)
    assert actual in str(err.value) and "0" * 64 in str(err.value)
    assert "verify_checksum=False" in str(err.value)
    verify_sha256(f, "0" * 64, verify=False)  # the explicit opt-out


def test_ragged_factor_rows_are_a_clear_error(toy):
    with pytest.raises(InvalidArgumentError, match="rectangular"):
        toy.index([[0, 1, 2], [0, 1]])


def test_the_factory_imports_the_renderers_and_not_the_other_way_round():
    """ground_truth() builds dSprites and Shapes3D; they build on the grid API, not on the factory
    (the subpackage's ``__init__``: no import circle), and the factory re-exports that API."""
    import ast
    import importlib
    from pathlib import Path

    from perturbed_disentanglement.ground_truth import grid

    # the package's ground_truth is the function; the subpackage is reached by its full name
    factory = importlib.import_module("perturbed_disentanglement.ground_truth")

    package = Path(factory.__file__).parent
    for module in ("grid", "official_files", "dsprites", "shapes3d", "subgrid"):
        tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.level == 1 and node.module is None), module  # from . import
                assert not (node.module or "").endswith("ground_truth"), module
    assert factory.GroundTruth is grid.GroundTruth and factory.Factor is grid.Factor
    assert factory.ArrayGroundTruth is grid.ArrayGroundTruth
