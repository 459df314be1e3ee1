"""Augmentation: exact identity, dihedral transforms, label alignment, elastic statistics, crops, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tiled_unet.training.augment import AugmentConfig, augment, elastic_displacement
from tiled_unet.synthetic import nuclei

NONE = AugmentConfig.none()
SPATIAL_ONLY = AugmentConfig(gamma=(1.0, 1.0), intensity_scale=(1.0, 1.0), intensity_shift=0.0, noise_std=0.0)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def dihedral(array: np.ndarray, axes=(-2, -1)) -> list[np.ndarray]:
    """The 8 flips/quarter turns of ``array`` in the plane of ``axes``."""
    turned = [np.rot90(array, k, axes=axes) for k in range(4)]
    return turned + [np.flip(t, axes[0]) for t in turned]


def index_of(result: np.ndarray, candidates: list[np.ndarray]) -> int:
    matches = [i for i, c in enumerate(candidates) if c.shape == result.shape and np.array_equal(c, result)]
    assert matches, "result is none of the expected transforms"
    return matches[0]


@pytest.fixture(scope="module")
def cells():
    image, labels = nuclei((64, 64), count=10, seed=1)
    return image.astype(np.float32)[None] / 4000, labels


@pytest.mark.parametrize("shape", [(2, 17, 23), (1, 5, 12, 9)])
def test_identity_config_changes_nothing(shape):
    generator = rng(1)
    image = generator.random(shape, dtype=np.float32)
    labels = generator.integers(0, 1000, shape[1:]).astype(np.uint32)
    weights = generator.random(shape[1:])
    out, (labels_out,), (weights_out,) = augment(image, labels=(labels,), floats=(weights,), config=NONE, rng=rng(5))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(labels_out, labels)
    np.testing.assert_array_equal(weights_out, weights)
    assert labels_out.dtype == np.uint32 and weights_out.dtype == np.float64 and out.dtype == np.float32


@pytest.mark.parametrize("elastic_std", [0.0, 1e-9])
def test_flips_and_quarter_turns_are_numpy_ops(elastic_std):
    """Exact indexing (no elastic) and the interpolating path (tiny elastic) agree with numpy."""
    config = AugmentConfig(**{**NONE.to_dict(), "flip_probability": 0.5, "rot90": True,
                              "elastic": elastic_std > 0, "elastic_std": elastic_std})
    generator = rng(2)
    image = generator.random((1, 12, 12), dtype=np.float32)
    labels = generator.integers(0, 50, (12, 12)).astype(np.int32)
    seen = set()
    for seed in range(40):
        out, (labels_out,), (float_out,) = augment(image, labels=(labels,), floats=(labels.astype(np.float32),),
                                                   config=config, rng=rng(seed))
        found = index_of(labels_out, dihedral(labels))
        np.testing.assert_allclose(out[0], dihedral(image[0])[found], atol=1e-6)
        np.testing.assert_allclose(float_out, labels_out, atol=1e-6)
        seen.add(found)
    assert seen == set(range(8))


def test_3d_flips_every_axis_and_turns_only_yx():
    config = AugmentConfig(**{**NONE.to_dict(), "flip_probability": 0.5, "rot90": True})
    labels = rng(3).integers(0, 99, (4, 6, 6)).astype(np.uint16)
    candidates = dihedral(labels) + dihedral(labels[::-1])
    seen = {index_of(augment(labels[None].astype(np.float32), labels=(labels,), config=config, rng=rng(s))[1][0],
                     candidates) for s in range(60)}
    assert seen == set(range(16))


def test_non_square_patches_only_turn_by_half_turns():
    config = AugmentConfig(**{**NONE.to_dict(), "rot90": True})
    labels = np.arange(6 * 9).reshape(6, 9)
    results = {augment(labels[None].astype(np.float32), labels=(labels,), config=config,
                       rng=rng(s))[1][0].tobytes() for s in range(30)}
    assert results == {labels.tobytes(), np.rot90(labels, 2).tobytes()}


def test_labels_keep_their_values(cells):
    image, labels = cells
    targets = np.where(labels > 0, 1, 0).astype(np.uint8)
    targets[labels == 3] = 2
    targets[:, :5] = 255
    for seed in range(5):
        _, (labels_out, targets_out), _ = augment(image, labels=(labels, targets), config=AugmentConfig(),
                                                  rng=rng(seed))
        assert set(np.unique(labels_out)) <= set(np.unique(labels))
        assert set(np.unique(targets_out)) <= {0, 1, 2, 255}
        assert (targets_out == 255).any() and targets_out.dtype == np.uint8


@pytest.mark.parametrize("shape", [(64, 64), (10, 40, 40)])
def test_labels_stay_aligned_with_the_image(shape):
    rng_shape = rng(4)
    mask = np.zeros(shape, np.uint8)
    for _ in range(8):
        centre = rng_shape.uniform(0, shape)
        grid = np.indices(shape) - centre.reshape((-1,) + (1,) * len(shape))
        mask[(grid**2).sum(0) < 7.0**2] = 1
    config = AugmentConfig(**{**SPATIAL_ONLY.to_dict(), "across_z": True})
    for seed in range(3):
        out, (mask_out,), (float_out,) = augment(mask[None].astype(np.float32), labels=(mask,),
                                                 floats=(mask.astype(np.float32),), config=config, rng=rng(seed))
        assert not np.array_equal(mask_out, mask)
        np.testing.assert_array_equal(out[0], float_out)  # one coordinate map for all
        agreement = np.mean(np.rint(out[0]) == mask_out)
        assert agreement > 0.98, agreement


@pytest.mark.parametrize("shape", [(1, 1, 9, 9), (2, 1, 5), (1, 2, 1, 7)])
def test_axes_of_length_one(shape):
    image = rng(13).random(shape, dtype=np.float32)
    config = AugmentConfig(**{**SPATIAL_ONLY.to_dict(), "across_z": True})
    out, (ones,), _ = augment(image, labels=(np.ones(shape[1:], np.uint8),), config=config, rng=rng(0))
    assert out.shape == shape and np.isfinite(out).all() and np.all(ones == 1)
    assert image.min() <= out.min() and out.max() <= image.max()  # linear interpolation stays in range


def test_same_seed_same_result(cells):
    image, labels = cells
    first = augment(image, labels=(labels,), floats=(image[0],), config=AugmentConfig(), rng=rng(7))
    second = augment(image, labels=(labels,), floats=(image[0],), config=AugmentConfig(), rng=rng(7))
    other = augment(image, labels=(labels,), floats=(image[0],), config=AugmentConfig(), rng=rng(8))
    for a, b in zip((first[0], *first[1], *first[2]), (second[0], *second[1], *second[2])):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("image_shape, output_shape", [
    ((2, 30, 41), None), ((1, 50, 50), (32, 36)), ((1, 8, 30, 31), None), ((3, 12, 40, 40), (6, 24, 24)),
])
def test_output_shapes_and_dtypes(image_shape, output_shape):
    generator = rng(9)
    image = generator.random(image_shape).astype(np.float64)
    spatial = image_shape[1:]
    labels = generator.integers(0, 5, spatial).astype(np.int64)
    mask = generator.random(spatial) > 0.5
    weights = generator.random(spatial).astype(np.float16)
    out, (labels_out, mask_out), (weights_out,) = augment(
        image, labels=(labels, mask), floats=(weights,), config=AugmentConfig(), rng=generator,
        output_shape=output_shape)
    expected = tuple(output_shape or spatial)
    assert out.shape == (image_shape[0], *expected) and out.dtype == np.float32
    assert labels_out.shape == mask_out.shape == weights_out.shape == expected
    assert labels_out.dtype == np.int64 and mask_out.dtype == bool and weights_out.dtype == np.float32
    assert np.isfinite(out).all()


def test_output_shape_is_a_centred_crop_or_mirrored_extension():
    image = rng(10).random((1, 20, 25), dtype=np.float32)
    small = augment(image, config=NONE, rng=rng(0), output_shape=(10, 12))[0]
    np.testing.assert_array_equal(small, image[:, 5:15, 6:18])  # start = (20 - 10) // 2, (25 - 12) // 2
    large = augment(image, config=NONE, rng=rng(0), output_shape=(24, 31))[0]
    np.testing.assert_array_equal(large, np.pad(image, ((0, 0), (2, 2), (3, 3)), mode="reflect"))
    # a flipped crop is the flip of the crop (the crop is centred)
    flips = AugmentConfig(**{**NONE.to_dict(), "flip_probability": 1.0})
    flipped = augment(image, config=flips, rng=rng(0), output_shape=(10, 13))[0]
    np.testing.assert_array_equal(flipped, image[:, 5:15, 6:19][:, ::-1, ::-1])


def coordinate_image(shape) -> np.ndarray:
    """One channel per axis holding that axis' pixel coordinate."""
    return np.indices(shape).astype(np.float32)


def test_affine_crop_reads_around_the_input_centre_without_mirroring():
    config = AugmentConfig(**{**SPATIAL_ONLY.to_dict(), "elastic": False, "rot90": False,
                              "flip_probability": 0.0, "rotation": 15.0, "scale": (0.85, 1.15)})
    shape, output_shape = (80, 90), (40, 40)
    for seed in range(5):
        source = augment(coordinate_image(shape), config=config, rng=rng(seed), output_shape=output_shape)[0]
        assert source.min() > 0 and (source.max(axis=(1, 2)) < np.array(shape) - 1).all()
        np.testing.assert_allclose(source.mean(axis=(1, 2)), [20 + 19.5, 25 + 19.5], atol=1e-3)
        # a linear map: neighbouring steps are equal everywhere
        step = np.diff(source, axis=2)
        np.testing.assert_allclose(step, step[:, :1, :1] * np.ones_like(step), atol=1e-3)
        length = np.hypot(*step[:, 0, 0])
        assert 1 / 1.15 - 1e-3 <= length <= 1 / 0.85 + 1e-3


def test_elastic_field_statistics():
    std = 10.0
    node_values, spread = [], []
    for seed in range(100):
        field = elastic_displacement((61, 41), 3, std, rng(seed))
        # the field passes through the coarse draws at the nodes (corners, edge midpoints, centre)
        coarse = rng(seed).normal(0.0, std, size=(3, 3))
        np.testing.assert_allclose(field[0][::30, ::20], coarse, atol=1e-9)
        node_values.append(field[:, ::30, ::20].ravel())
        spread.append(np.mean(field**2))
        assert np.abs(np.diff(field, axis=1)).max() < std  # smooth: small change per pixel
    assert abs(np.std(np.concatenate(node_values)) / std - 1) < 0.06
    assert 0.7 < np.sqrt(np.mean(spread)) / std < 0.95


def test_elastic_displacement_seen_through_augment():
    """Deforming a coordinate image reveals the displacement; 3D keeps Z unless across_z."""
    config = AugmentConfig(**{**SPATIAL_ONLY.to_dict(), "rot90": False, "flip_probability": 0.0,
                              "rotation": 0.0, "scale": (1.0, 1.0), "elastic_std": 4.0})
    shape, output_shape = (8, 70, 70), (8, 40, 40)
    identity = coordinate_image(shape)[:, :, 15:55, 15:55]
    squares = []
    for seed in range(12):
        source = augment(coordinate_image(shape), config=config, rng=rng(seed), output_shape=output_shape)[0]
        np.testing.assert_allclose(source[0], identity[0], atol=1e-4)  # no displacement along Z
        squares.append(np.mean((source[1:] - identity[1:]) ** 2))
    assert 0.6 < np.sqrt(np.mean(squares)) / 4.0 < 1.0
    across = AugmentConfig(**{**config.to_dict(), "across_z": True})
    source = augment(coordinate_image(shape), config=across, rng=rng(0), output_shape=output_shape)[0]
    assert np.abs(source[0] - identity[0]).max() > 0.5


def test_intensity_changes_image_only(cells):
    image, labels = cells
    base = AugmentConfig.none()
    doubled = AugmentConfig(**{**base.to_dict(), "intensity_scale": (2.0, 2.0)})
    out, (labels_out,), _ = augment(image, labels=(labels,), config=doubled, rng=rng(0))
    np.testing.assert_allclose(out, 2 * image, rtol=1e-6)
    np.testing.assert_array_equal(labels_out, labels)
    squared = AugmentConfig(**{**base.to_dict(), "gamma": (2.0, 2.0)})
    low, high = image.min(), image.max()
    expected = low + (high - low) * ((image - low) / (high - low)) ** 2
    np.testing.assert_allclose(augment(image, config=squared, rng=rng(0))[0], expected, rtol=1e-5, atol=1e-6)
    shifted = augment(image, config=AugmentConfig(**{**base.to_dict(), "intensity_shift": 0.2}), rng=rng(0))[0]
    offset = shifted - image
    assert np.ptp(offset) < 1e-6 and 0 < abs(offset.mean()) <= 0.2
    noisy = augment(image, config=AugmentConfig(**{**base.to_dict(), "noise_std": 0.1}), rng=rng(0))[0]
    assert 0 < np.std(noisy - image) <= 0.1 and abs(np.mean(noisy - image)) < 0.01


def test_config_round_trip_and_defaults():
    config = AugmentConfig()
    assert config.elastic_grid == 3 and config.elastic_std == 10.0 and not config.across_z
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AugmentConfig(scale=[0.9, 1.1]).scale == (0.9, 1.1)


@pytest.mark.parametrize("options, match", [
    ({"elastic_grid": 1}, "elastic_grid"), ({"elastic_grid": 3.0}, "elastic_grid"),
    ({"elastic_std": -1.0}, "elastic_std"), ({"flip_probability": 1.5}, "flip_probability"),
    ({"rotation": "15"}, "rotation"), ({"rotation": 200.0}, "rotation"),
    ({"scale": (1.2, 0.8)}, "scale"), ({"scale": (0.0, 1.0)}, "scale"), ({"gamma": 1.0}, "gamma"),
    ({"intensity_scale": (1.0, float("inf"))}, "intensity_scale"), ({"noise_std": -0.1}, "noise_std"),
    ({"elastic": "yes"}, "elastic"), ({"intensity_shift": float("nan")}, "intensity_shift"),
])
def test_invalid_configs(options, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**options)


def test_unknown_config_key():
    with pytest.raises(ValueError, match="unknown keys"):
        AugmentConfig.from_dict({"elastic_sigma": 3.0})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"image": np.zeros((8, 8), np.float32)}, ValueError, "channel axis"),
    ({"labels": (np.zeros((8, 9), np.uint8),)}, ValueError, "spatial shape"),
    ({"labels": (np.zeros((8, 8), np.float32),)}, TypeError, "integer"),
    ({"labels": np.zeros((8, 8), np.uint8)}, TypeError, "tuple"),
    ({"floats": (np.zeros((8, 8), complex),)}, TypeError, "real-valued"),
    ({"rng": 0}, TypeError, "Generator"),
    ({"config": {}}, TypeError, "AugmentConfig"),
    ({"output_shape": (4,)}, ValueError, "output_shape"),
    ({"output_shape": (4, 0)}, ValueError, "output_shape"),
    ({"output_shape": "ab"}, TypeError, "output_shape"),
    ({"output_shape": (4.5, 4)}, TypeError, "output_shape"),
    ({"image": np.zeros((1, 8, 8), object)}, TypeError, "real-valued"),
])
def test_invalid_inputs(kwargs, error, match):
    arguments = {"image": np.zeros((1, 8, 8), np.float32), "config": AugmentConfig(), "rng": rng(0), **kwargs}
    image = arguments.pop("image")
    with pytest.raises(error, match=match):
        augment(image, **arguments)


def _median_seconds(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def test_2d_patch_speed():
    generator = rng(11)
    image = generator.random((1, 572, 572), dtype=np.float32)
    labels = generator.integers(0, 3, (572, 572)).astype(np.uint8)
    seconds = _median_seconds(lambda: augment(image, labels=(labels,), config=AugmentConfig(), rng=generator))
    assert seconds < 0.15, seconds  # about 30 ms on one free core


@pytest.mark.slow
def test_3d_patch_speed():
    generator = rng(12)
    image = generator.random((1, 96, 132, 132), dtype=np.float32)
    seconds = _median_seconds(lambda: augment(image, config=AugmentConfig(), rng=generator))
    assert seconds < 1.0, seconds


@pytest.mark.parametrize("spatial", [(40, 36), (12, 30, 30)])
@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(elastic=False, rotation=0.0, scale=(1.0, 1.0))],
                         ids=["elastic", "flips-and-turns"])
def test_companion_region_equals_that_crop_of_the_whole(spatial, config):
    rng = np.random.default_rng(3)
    image = rng.random((1, *spatial), dtype=np.float32)
    labels = rng.integers(0, 2**40, size=spatial, dtype=np.int64)
    weights = rng.random(spatial)
    region = tuple(slice(n // 4, n // 4 + n // 2) for n in spatial)
    for seed in range(6):
        whole = augment(image, labels=(labels,), floats=(weights,), config=config, rng=np.random.default_rng(seed))
        part = augment(image, labels=(labels,), floats=(weights,), config=config, rng=np.random.default_rng(seed),
                       companion_region=region)
        np.testing.assert_array_equal(part[0], whole[0])
        np.testing.assert_array_equal(part[1][0], whole[1][0][region])
        np.testing.assert_array_equal(part[2][0], whole[2][0][region])
    with pytest.raises(ValueError, match="companion_region must be"):
        augment(image, labels=(labels,), config=config, rng=rng, companion_region=(slice(0, 4),))
