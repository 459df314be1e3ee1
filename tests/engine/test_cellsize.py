"""Cell size: measured diameters, the diameter option, its estimation and the resampled labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

import tiled_unet
from tiled_unet.engine.cellsize import cell_diameters, check_diameter, size_scale, training_diameter
from tiled_unet.engine.predict import scale_plan
from tiled_unet.engine.resample import resize_labels
from tiled_unet.synthetic import sample


def disk(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_cell_diameters_of_disks_touching_ones_and_cut_cells():
    labels = np.zeros((80, 120), np.int32)
    labels[disk(labels.shape, (40, 30), 10)] = 1
    labels[disk(labels.shape, (40, 50), 10) & (labels == 0)] = 2  # touching the first
    labels[disk(labels.shape, (40, 95), 5)] = 7
    sizes = cell_diameters(labels)
    assert sizes.shape == (3,)
    np.testing.assert_allclose(sizes, [21, 21, 11], atol=1.5)
    volume = np.repeat(labels[None], 3, axis=0)  # 3 planes: the Z extent does not limit the in-plane size
    np.testing.assert_allclose(cell_diameters(volume), sizes)
    median, (low, high) = training_diameter([labels])
    assert low <= median <= high and median == pytest.approx(21, abs=1.5)
    assert training_diameter([np.zeros((5, 5), int)]) == (0.0, ())


def test_diameter_option_is_checked():
    assert check_diameter("auto") == "auto" and check_diameter("OFF") == "off" and check_diameter("12.5") == 12.5
    for bad in (0, -3, float("nan"), float("inf"), "big", True, None):
        with pytest.raises(ValueError, match="diameter must be"):
            check_diameter(bad)


def test_size_scale_keeps_cells_inside_the_training_range():
    assert size_scale(12, 20, (7, 25)) == 1.0
    assert size_scale(12, 50, (7, 25)) == pytest.approx(0.5)
    assert size_scale(12, 3.5, (7, 25)) == pytest.approx(2.0)
    assert size_scale(12, 12.5) == 1.0 and size_scale(12, 24) == pytest.approx(0.5)
    assert size_scale(12, 20, (7, 25), "median") == 1.0  # inside: as is
    assert size_scale(12, 50, (7, 25), "median") == pytest.approx(12 / 50)  # outside: to the median
    with pytest.raises(ValueError, match="rescale_to"):
        dataclasses.replace(tiled_unet.load_model("placeholder-2d").model_config, rescale_to="end")


def test_resize_labels_by_nearest_neighbour_region_by_region():
    labels = np.arange(35, dtype=np.uint32).reshape(5, 7)
    big = resize_labels(labels, (10, 21))
    np.testing.assert_array_equal(big, np.repeat(np.repeat(labels, 2, 0), 3, 1))
    np.testing.assert_array_equal(resize_labels(labels, (10, 21), (slice(3, 8), slice(4, 20))), big[3:8, 4:20])
    np.testing.assert_array_equal(resize_labels(big, (5, 7)), labels)


@pytest.fixture(scope="module")
def sized_model():
    net = tiled_unet.load_model("placeholder-2d")
    net.model_config = dataclasses.replace(net.model_config, diameter=12.0, diameter_range=(10.0, 14.0))
    return net


def test_given_diameter_rescales_and_tiles_stay_exact(sized_model, tmp_path):
    image = np.random.default_rng(3).random((90, 110)).astype(np.float32)
    plan = scale_plan(image, sized_model, diameter=28.0)
    assert plan.factors == pytest.approx((0.5, 0.5)) and plan.diameter == pytest.approx(28.0)
    whole = tiled_unet.segment(image, sized_model, diameter=28.0, device="cpu", precision="float32")
    tiled = tiled_unet.segment(image, sized_model, diameter=28.0, device="cpu", precision="float32",
                               tile_shape=(16, 16))
    assert whole.shape == image.shape
    np.testing.assert_array_equal(tiled, whole)
    on_disk = tiled_unet.segment(image, sized_model, diameter=28.0, device="cpu", precision="float32",
                                 out=tmp_path / "labels.zarr", block_shape=(20, 24))
    np.testing.assert_array_equal(on_disk[...], whole)
    assert on_disk.attrs["diameter"] == pytest.approx(28.0)
    probs = tiled_unet.predict(image, sized_model, diameter=28.0, device="cpu", precision="float32")
    assert probs.shape == (sized_model.config.num_classes,) + image.shape


def test_voxel_size_and_diameter_in_micrometres(sized_model):
    net3d = tiled_unet.load_model("placeholder-3d")
    net3d.model_config = dataclasses.replace(net3d.model_config, diameter=12.0)
    image = np.zeros((5, 64, 64), np.float32)
    plan = scale_plan(image, net3d, voxel_size=(1.0, 0.2, 0.2), diameter=4.8)  # cells 24 pixels wide
    assert plan.factors == pytest.approx((2.5, 0.5, 0.5))
    assert scale_plan(image[0], sized_model, diameter="off").factors is None
    plain = tiled_unet.load_model("placeholder-2d")
    with pytest.raises(ValueError, match="stores no cell diameter"):
        scale_plan(image[0], plain, diameter=10.0)
    with pytest.raises(ValueError, match="voxel_size must have 3 values"):
        scale_plan(image, net3d, voxel_size=(1.0, 0.0, 0.2))


def test_estimated_diameter_follows_the_image_scale():
    net = tiled_unet.load_model("nuclei-2d")
    assert net.model_config.diameter > 0 and len(net.model_config.diameter_range) == 2
    image, labels = sample("nuclei-2d")
    truth = float(np.median(cell_diameters(labels)))
    native = scale_plan(image, net, device="cpu").diameter
    larger = scale_plan(ndi.zoom(image.astype(np.float32), 2.0, order=1), net, device="cpu").diameter
    assert native == pytest.approx(truth, rel=0.2)
    assert larger / native == pytest.approx(2.0, rel=0.15)


def _disks(diameter: float, count: int = 9) -> np.ndarray:
    """A label image of ``count`` disks of ``diameter`` pixels in a row."""
    radius = max(diameter / 2, 1.0)
    size = int(2 * radius + 4)
    labels = np.zeros((size, size * count), np.int32)
    for i in range(count):
        labels[disk(labels.shape, (size / 2, size * i + size / 2), radius)] = i + 1
    return labels


@pytest.mark.parametrize("true_diameter, texture, expected", [
    (64.0, 8.0, 64.0),  # large textured cells: the model finds 8-px texture until the image is shrunk
    (20.0, None, 20.0),  # plain cells: the first size holds at half scale
])
def test_estimate_shrinks_the_image_until_the_cell_size_holds(true_diameter, texture, expected):
    from tiled_unet.engine.cellsize import estimate_from_samples

    def read(factors):
        return [np.float32(factors[0])]

    def cells_of(region):  # what a model trained on ~12-px cells finds at scale k
        apparent = true_diameter * float(region)
        found = texture if texture and apparent > 30 else apparent
        return _disks(found), None

    estimate = estimate_from_samples(read, cells_of, 12.0, (1.0, 1.0), (7.0, 25.0))
    assert estimate == pytest.approx(expected, rel=0.15)


def test_estimate_is_none_without_cells():
    from tiled_unet.engine.cellsize import estimate_from_samples

    empty = np.zeros((32, 32), np.int32)
    assert estimate_from_samples(lambda f: [0], lambda r: (empty, None), 12.0, (1.0, 1.0)) is None
