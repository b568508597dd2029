"""The build's pure pieces: PNG encoder, config planning, builders' features and YAML, shards."""

from __future__ import annotations

import io
import zlib

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from builders import BUILDERS, get_builder
from builders.base import ShardWriter, plan_rows_per_shard, shard_path
from cards import comparison_figure, difference_image, figure_caption
from perturbed_disentanglement import ground_truth
from perturbed_disentanglement.errors import DataFormatError, InvalidArgumentError
from perturbed_disentanglement.perturbation.configs import (
    DatasetConfig,
    config_images,
    epsilon_label,
    plan_configs,
)
from perturbed_disentanglement.perturbation.pattern import Pattern, perturb, uniform_noise
from perturbed_disentanglement.util.png import (
    FILTERS,
    STRATEGIES,
    PngEncoder,
    decode_png,
    decode_pngs,
    pillow_encode,
)


# --- PNG -------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_every_filter_and_strategy_round_trips_through_pillow(channels) -> None:
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 256, (5, 64, 64, channels), dtype=np.uint8)
    images[:, 20:40] = 200  # flat areas, where filters and strategies differ
    images[1] = 0
    for f in FILTERS:
        for strategy in STRATEGIES:
            encoder = PngEncoder(f, 6, strategy)
            blobs = encoder.encode(images)
            np.testing.assert_array_equal(decode_pngs(blobs), images, err_msg=encoder.label)
            with Image.open(io.BytesIO(blobs[0])) as im:
                assert im.mode == ("L" if channels == 1 else "RGB") and im.size == (64, 64)


def test_png_bytes_are_deterministic_and_plain() -> None:
    images = ground_truth("dsprites").images(np.arange(0, 737_280, 99_991))
    a, b = (
        PngEncoder("none", 6, "huffman").encode(images),
        PngEncoder("none", 6, "huffman").encode(images),
    )
    assert a == b
    for blob in a:  # signature, IHDR, one IDAT, IEND: no time or text chunks
        assert blob.startswith(b"\x89PNG\r\n\x1a\n") and blob.endswith(b"IEND\xaeB`\x82")
        assert b"tIME" not in blob and b"tEXt" not in blob and blob.count(b"IDAT") == 1
    settings = PngEncoder().to_dict()
    assert settings["encoder"] == "perturbed_disentanglement.util.png"
    assert settings["zlib_version"] == zlib.ZLIB_RUNTIME_VERSION
    np.testing.assert_array_equal(decode_png(pillow_encode(images[:1])[0]), images[0])


def test_png_encoder_refuses_bad_settings_and_arrays() -> None:
    with pytest.raises(InvalidArgumentError, match="filter"):
        PngEncoder("median")
    with pytest.raises(InvalidArgumentError, match="strategy"):
        PngEncoder("none", 6, "lzma")
    with pytest.raises(InvalidArgumentError, match="level"):
        PngEncoder("none", 10)
    with pytest.raises(DataFormatError, match="uint8"):
        PngEncoder().encode(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(DataFormatError, match="channels"):
        PngEncoder().encode(np.zeros((1, 8, 8, 5), np.uint8))


# --- configs ---------------------------------------------------------------------------------
def test_config_names_follow_the_spec() -> None:
    names = [c.name for c in plan_configs(["perturbed", "noise", "original"], [0.125, 0.05, 0.2])]
    assert names == [
        "perturbed",
        "noise",
        "original",
        "perturbed-eps0.05",
        "noise-eps0.05",
        "perturbed-eps0.2",
        "noise-eps0.2",
    ]
    configs = plan_configs(["original", "noise"], [0.1])
    assert [(c.name, c.epsilon, c.max_step) for c in configs] == [
        ("noise", 0.1, 25),
        ("original", 0.0, 0),
    ]
    assert epsilon_label(0.05) == "0.05" and epsilon_label(1 / 255) == "0.00392157"
    with pytest.raises(InvalidArgumentError, match="unknown"):
        plan_configs(["perturbed", "blur"], [0.1])
    with pytest.raises(InvalidArgumentError, match="twice"):
        plan_configs(["noise", "noise"], [0.1])
    with pytest.raises(InvalidArgumentError, match="epsilon"):
        plan_configs(["noise"], [0.7])


def test_config_images_are_the_perturbation_functions() -> None:
    gt = ground_truth("dsprites")
    index = np.array([5, 70_000, 512_345])
    original = gt.images(index)
    s = np.array([-1.0, 0.2, 3.5], np.float32)
    pattern = Pattern(seed=3, kappa=16)
    kw = {"pattern": pattern, "seed": 9}
    np.testing.assert_array_equal(
        config_images(DatasetConfig("p", "perturbed", 0.1), original, index, s, **kw),
        perturb(original, s, 0.1, pattern),
    )
    np.testing.assert_array_equal(
        config_images(DatasetConfig("n", "noise", 0.1), original, index, s, **kw),
        uniform_noise(original, index, 0.1, 9),
    )
    same = config_images(DatasetConfig("o", "original", 0.0), original, index, s, **kw)
    assert same is not original and np.array_equal(same, original)


# --- builders --------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_builders_declare_the_spec_columns_for_their_ground_truth(dataset) -> None:
    builder = get_builder(dataset)
    gt = ground_truth(dataset)
    builder.check_ground_truth(gt)
    features = builder.features
    names = list(gt.factor_names)
    assert list(features) == [
        "image",
        "index",
        *names,
        *[f"{n}_value" for n in names],
        "s",
        "epsilon",
    ]
    assert features["image"] == datasets.Image(mode="L" if dataset == "dsprites" else "RGB")
    assert features["index"] == datasets.Value("int64")
    for name, size in zip(names, gt.factor_sizes):
        assert (
            isinstance(features[name], datasets.ClassLabel) and features[name].num_classes == size
        )
        assert features[f"{name}_value"] == datasets.Value("float32")
    assert features["shape"].names == list(gt.categories["shape"])
    assert features["s"] == features["epsilon"] == datasets.Value("float32")
    other = ground_truth("shapes3d" if dataset == "dsprites" else "dsprites")
    with pytest.raises(DataFormatError):
        builder.check_ground_truth(other)


def test_card_yaml_round_trips_through_datasets() -> None:
    builder = get_builder("dsprites")
    configs = {"perturbed": {"rows": 10, "bytes": 1000}, "noise": {"rows": 10, "bytes": 2000}}
    meta = builder.card_metadata(configs)
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(**meta)
    parsed = datasets.utils.metadata.MetadataConfigs.from_dataset_card_data(data)
    assert parsed.get_default_config_name() == "perturbed"
    assert parsed["noise"]["data_files"] == [
        {"split": "train", "path": "data/noise/train-*.parquet"}
    ]
    infos = datasets.info.DatasetInfosDict.from_dataset_card_data(data)
    assert infos["noise"].features == builder.features
    assert infos["noise"].splits["train"].num_examples == 10


def test_card_yaml_marks_the_manifests_default_config() -> None:
    """A build without ``perturbed`` has another default (the manifest's): the YAML says so."""
    from huggingface_hub import DatasetCardData

    builder = get_builder("dsprites")
    configs = {"noise": {"rows": 10, "bytes": 1000}, "original": {"rows": 10, "bytes": 900}}
    data = DatasetCardData(**builder.card_metadata(configs, default="noise"))
    parsed = datasets.utils.metadata.MetadataConfigs.from_dataset_card_data(data)
    assert parsed.get_default_config_name() == "noise"


def test_shard_writer_is_atomic_and_keeps_features(tmp_path) -> None:
    builder = get_builder("dsprites")
    gt = ground_truth("dsprites")
    index = np.arange(8)
    png = PngEncoder().encode(gt.images(index))
    table = builder.table(
        png, index, gt.factors(index), gt.factor_values_of(index), np.zeros(8, np.float32), 0.1
    )
    path = tmp_path / shard_path("perturbed", 0, 1)
    writer = ShardWriter(path, builder.schema)
    writer.write(table)
    assert not path.exists()  # only the temporary file so far
    sha, size = writer.commit()
    assert path.exists() and size == path.stat().st_size and len(sha) == 64
    assert path.stat().st_mode & 0o044  # readable by others, as a published file
    read = pq.read_table(path)
    assert datasets.Features.from_arrow_schema(read.schema) == builder.features
    aborted = ShardWriter(tmp_path / "data" / "x" / "train-00000-of-00001.parquet", builder.schema)
    aborted.write(table)
    aborted.abort()
    assert not list((tmp_path / "data" / "x").iterdir())
    assert shard_path("noise-eps0.05", 2, 13) == "data/noise-eps0.05/train-00002-of-00013.parquet"


def test_shards_are_planned_at_a_few_hundred_megabytes() -> None:
    rows = plan_rows_per_shard(2_000, 737_280)  # a noise-like dSprites config
    assert rows % 1024 == 0 and 150e6 < rows * 2_000 < 300e6
    assert plan_rows_per_shard(100, 1_536) >= 1_536  # small: one shard


def test_figure_shows_five_columns_and_is_deterministic() -> None:
    gt = ground_truth("shapes3d")
    original = gt.images(np.array([0, 123_456]))
    perturbed = perturb(original, np.array([0.5, -1.0]), 0.175, Pattern(seed=0, kappa=32))
    noise = uniform_noise(original, np.array([0, 123_456]), 0.175, 0)
    png = comparison_figure(original, perturbed, noise, epsilon=0.175)
    assert png == comparison_figure(original, perturbed, noise, epsilon=0.175)  # same bytes
    assert png != comparison_figure(original, perturbed, noise, epsilon=0.175, noise_epsilon=0.2)
    assert comparison_figure(original, perturbed, noise)  # without ε: scaled by the largest Δ
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB" and im.size[0] > 5 * 192 and im.size[1] > 2 * 192
        assert im.size[0] * im.size[1] < 1_500_000 and len(png) < 400_000
        # the perturbed - original tile of the first row is difference_image, drawn 3x
        x, y = 6 + 3 * (192 + 6), 68
        tile = np.asarray(im)[y : y + 192 : 3, x : x + 192 : 3]
    diff = difference_image(perturbed, original, 0.175)
    assert diff.dtype == np.uint8 and diff.shape == (2, 64, 64, 1)
    np.testing.assert_array_equal(tile, np.repeat(diff[0], 3, axis=2))
    assert np.all(difference_image(original, original, 0.175) == 128)


def test_the_difference_map_spans_black_to_white_over_plus_minus_epsilon() -> None:
    """The card's difference_image is the report's signed_difference (one function)."""
    from perturbed_disentanglement.perturbation.difference import signed_difference

    assert difference_image is signed_difference
    eps = 0.2  # 51 bytes exactly
    original = np.full((1, 1, 103, 1), 100, np.uint8)
    changed = (100 + np.arange(-51, 52)).astype(np.uint8).reshape(1, 1, 103, 1)
    grey = difference_image(changed, original, eps)[0, 0, :, 0].astype(int)
    assert grey[51] == 128  # no change: mid-grey, the exact middle value
    assert grey[0] == 0 and grey[-1] == 255  # -ε black, +ε white
    assert np.all(np.diff(grey) >= 0) and np.all(np.diff(grey[::4]) > 0)  # monotone
    assert difference_image(changed[..., :1, :], original[..., :1, :], 0.4)[0, 0, 0, 0] == 64
    # beyond ±ε (never made by the configs) is clipped to black and white
    assert difference_image(np.full_like(original, 255), original, eps).min() == 255
    # RGB: one channel, the mean over the channels
    rgb = np.full((1, 1, 3, 3), 100, np.uint8)
    rgb_changed = np.array([[[[151, 100, 49], [151, 151, 151], [151, 100, 100]]]], np.uint8)
    shown = difference_image(rgb_changed, rgb, eps)
    assert shown.shape == (1, 1, 3, 1)
    one = difference_image(np.array([[[[100], [151], [117]]]], np.uint8), rgb[..., :1], eps)
    np.testing.assert_array_equal(shown, one)  # means 0, +51, +17
    assert shown[0, 0, :, 0].tolist() == [128, 255, 170]
    # without ε the largest difference is the scale
    assert difference_image(changed, original)[0, 0, -1, 0] == 255
    with pytest.raises(InvalidArgumentError, match="epsilon"):
        difference_image(changed, original, 0.0)


def test_figure_caption_gives_the_scale_and_the_clipping() -> None:
    dsprites = figure_caption({"dataset": "dsprites", "figure": {"epsilon": 0.125}})
    assert "±ε (ε = 0.125) spans the grey range: mid-grey is no change" in dsprites
    assert "background can only brighten" in dsprites and "RGB" not in dsprites
    shapes3d = figure_caption({"dataset": "shapes3d", "figure": {"epsilon": 0.1}})
    assert "mean over the RGB channels" in shapes3d and "(ε = 0.1)" in shapes3d


@pytest.mark.parametrize("channels", [1, 3])
def test_the_verifiers_batch_decoder_equals_pillow_and_rejects_corruption(channels) -> None:
    from perturbed_disentanglement.util.png import decode_png_batch

    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (6, 64, 64, channels), dtype=np.uint8)
    images[:, 30:] = np.arange(64, dtype=np.uint8)[None, None, :, None]  # gradients: Sub/Up rows
    for f in FILTERS:  # average, paeth and adaptive rows go through Pillow
        blobs = PngEncoder(f, 6).encode(images)
        np.testing.assert_array_equal(decode_png_batch(blobs, (64, 64, channels)), images)
        np.testing.assert_array_equal(decode_pngs(blobs), images)
    blobs = PngEncoder("sub", 6).encode(images)
    bad = bytearray(blobs[3])
    bad[60] ^= 0x04  # inside the IDAT data: its CRC no longer matches
    with pytest.raises(DataFormatError, match="PNG 3 of the batch.*CRC"):
        decode_png_batch([*blobs[:3], bytes(bad)], (64, 64, channels))
    with pytest.raises(DataFormatError, match="header"):
        decode_png_batch(blobs[:1], (32, 64, channels))
    with pytest.raises(DataFormatError, match="signature"):
        decode_png_batch([b"GIF89a" + blobs[0][6:]], (64, 64, channels))
