"""The Segment widget in a real viewer: labels like the core's, cancel, zarr in and out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

import tiled_unet
from tiled_unet._napari._segment_widget import ZARR, SegmentWidget
from tiled_unet.pipeline import LabelProgress


def _widget(viewer, layer, model="nuclei-2d"):
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model.value = model
    widget._image.value = layer
    widget._device.value = "cpu"
    return widget


def test_segment_in_memory_matches_core(viewer, crop2d, wait_for_worker):
    image, truth = crop2d
    layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5), translate=(10, 20))
    widget = _widget(viewer, layer)
    assert "tile" in widget._estimate.value and "Estimate" in widget._estimate.value
    widget.run()
    wait_for_worker(widget)
    labels = viewer.layers["cells labels"]
    expected = tiled_unet.segment(image, "nuclei-2d", device="cpu")
    np.testing.assert_array_equal(labels.data, expected)
    n_true = len(np.unique(truth)) - 1
    assert abs(int(labels.data.max()) - n_true) <= max(3, n_true // 4)
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(labels.translate) == (10, 20)
    assert any(isinstance(e, LabelProgress) for e in widget.events)
    assert widget._status.value.startswith("done")


def test_cancel_stops_within_a_tile_and_adds_no_layer(viewer, crop2d, wait_for_worker, qtbot):
    image = np.tile(crop2d[0], (2, 2))
    layer = viewer.add_image(image, name="big")
    widget = _widget(viewer, layer)
    widget._tile.value = 16  # many small tiles
    widget.run()
    qtbot.waitUntil(lambda: len(widget.events) >= 1, timeout=30_000)
    from napari.utils.progress import progress  # the activity dock shows these

    assert any(bar.desc.startswith("Segmenting big: tile") for bar in progress._all_instances)
    at_cancel = len(widget.events)
    widget.cancel()
    wait_for_worker(widget)
    total = widget.events[0].total
    assert total > 100 and len(widget.events) <= at_cancel + 2  # stopped at the next tile or so
    assert [ly.name for ly in viewer.layers] == ["big"]
    assert widget._status.value == "cancelled"


def test_zarr_image_to_zarr_labels_stays_lazy(viewer, crop2d, tmp_path, wait_for_worker):
    image = crop2d[0]
    src = zarr.open_array(str(tmp_path / "cells.zarr"), mode="w", shape=image.shape, chunks=(64, 64),
                          dtype=image.dtype)
    src[...] = image
    lazy = zarr.open_array(str(tmp_path / "cells.zarr"), mode="r")
    layer = viewer.add_image(lazy, name="cells", contrast_limits=(0, 4000))
    widget = _widget(viewer, layer)
    assert widget._output.value == ZARR  # proposed for lazy data
    assert widget._out_path.value == tmp_path / "cells_labels.zarr"
    widget.run()
    wait_for_worker(widget)
    labels = viewer.layers["cells labels"]
    assert isinstance(labels.data, zarr.Array) and isinstance(layer.data, zarr.Array)
    expected = tiled_unet.segment(image, "nuclei-2d", device="cpu")
    np.testing.assert_array_equal(labels.data[...], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.zarr", "cells_labels.zarr"]


def test_errors_are_shown_not_raised(viewer, crop2d, wait_for_worker):
    layer = viewer.add_image(np.stack([crop2d[0]] * 2), name="two")
    widget = _widget(viewer, layer)
    assert widget._axes.value == "TYX"
    widget._axes.value = "YX"
    widget.run()
    assert "axes 'YX' must name each of the 3 axes" in widget._status.value
    assert widget.worker is None



def test_seed_low_threshold_reaches_the_core_and_is_checked(viewer, crop2d, wait_for_worker):
    image, _ = crop2d
    layer = viewer.add_image(image, name="cells")
    widget = _widget(viewer, layer)
    shipped = tiled_unet.load_model("nuclei-2d").model_config.instances
    assert widget._seed_low.value == shipped.seed_low_threshold
    widget._seed_low.value = widget._seed.value  # not below the seed threshold: refused
    widget.run()
    assert "seed_low_threshold must be 0 (off) or between 0 and seed_threshold" in widget._status.value
    assert widget.worker is None
    widget._seed.value, widget._seed_low.value = 0.8, 0.3
    widget.run()
    wait_for_worker(widget)
    instances = dataclasses.replace(shipped, seed_threshold=0.8, seed_low_threshold=0.3)
    expected = tiled_unet.segment(image, "nuclei-2d", device="cpu", instances=instances)
    np.testing.assert_array_equal(viewer.layers["cells labels"].data, expected)


def test_every_frame_of_a_time_series(viewer, crop2d, wait_for_worker):
    stack = np.stack([crop2d[0], crop2d[0][::-1]])
    layer = viewer.add_image(stack, name="movie", scale=(5.0, 0.5, 0.5))
    widget = _widget(viewer, layer)
    assert widget._axes.value == "TYX"
    widget.run()
    wait_for_worker(widget)
    labels = viewer.layers["movie labels"]
    expected = tiled_unet.segment(stack, "nuclei-2d", axes="TYX", device="cpu")
    np.testing.assert_array_equal(labels.data, expected)
    assert labels.data.shape == stack.shape and tuple(labels.scale) == (5.0, 0.5, 0.5)


def test_one_channel_of_a_lazy_multichannel_image(viewer, crop2d, tmp_path, wait_for_worker):
    image = crop2d[0]
    src = zarr.open_array(str(tmp_path / "two.zarr"), mode="w", shape=(2,) + image.shape, chunks=(1, 64, 64),
                          dtype=image.dtype)
    src[1] = image
    layer = viewer.add_image(src, name="two", contrast_limits=(0, 4000))
    widget = _widget(viewer, layer)
    widget._output.value = "in memory"
    widget._axes.value, widget._channel.value = "CYX", 1
    widget.run()
    wait_for_worker(widget)
    expected = tiled_unet.segment(image, "nuclei-2d", device="cpu")
    np.testing.assert_array_equal(viewer.layers["two labels"].data, expected)
    assert isinstance(layer.data, zarr.Array)
    widget._channel.value = 2
    widget.run()
    assert "channel 2 does not exist" in widget._status.value


def test_layer_scale_feeds_the_models_voxel_size(viewer, crop2d, tmp_path, wait_for_worker):
    import dataclasses

    from tiled_unet._napari._models import REGISTRY

    net = tiled_unet.load_model("nuclei-2d")
    net.model_config = dataclasses.replace(net.model_config, voxel_size=(1.0, 1.0))
    path = tiled_unet.save_model(net, tmp_path / "at_1um.safetensors")
    image = crop2d[0]
    layer = viewer.add_image(image, name="fine", scale=(0.5, 0.5))
    widget = _widget(viewer, layer)
    widget._model_file.value = path  # choosing a file adds it to the list and selects it
    assert widget._model.value == str(path.resolve()) and str(path.resolve()) in REGISTRY.files
    widget.run()
    wait_for_worker(widget)
    expected = tiled_unet.segment(image, net, voxel_size=(0.5, 0.5), device="cpu")
    unscaled = tiled_unet.segment(image, net, device="cpu")
    assert not np.array_equal(expected, unscaled)
    np.testing.assert_array_equal(viewer.layers["fine labels"].data, expected)


def test_one_channel_of_an_rgb_image(viewer, crop2d, wait_for_worker):
    image = crop2d[0]
    rgb = np.zeros(image.shape + (3,), image.dtype)
    rgb[..., 1] = image
    layer = viewer.add_image(rgb, name="rgb", rgb=True, contrast_limits=(0, 4000))
    widget = _widget(viewer, layer)
    assert widget._axes.value == "YXC"
    widget._channel.value = 1
    widget.run()
    wait_for_worker(widget)
    expected = tiled_unet.segment(image, "nuclei-2d", device="cpu")
    labels = viewer.layers["rgb labels"]
    np.testing.assert_array_equal(labels.data, expected)
    assert labels.data.shape == image.shape


def test_3d_sample_with_a_3d_model(viewer, wait_for_worker):
    viewer.open_sample("napari-tiled-unet", "nuclei-3d")
    layer = viewer.layers["nuclei 3D"]
    layer.scale = (2.0, 0.5, 0.5)
    model = "nuclei-3d"
    widget = _widget(viewer, layer, model=model)
    assert widget._axes.value == "ZYX"
    widget.run()
    wait_for_worker(widget, timeout=120_000)
    net = tiled_unet.load_model(model)
    knows_size = bool(net.model_config.voxel_size) or net.model_config.diameter > 0
    voxel = (2.0, 0.5, 0.5) if knows_size else None  # the layer scale, for a model that can use it
    expected = tiled_unet.segment(layer.data, net, voxel_size=voxel, device="cpu")
    assert expected.max() > 0
    labels = viewer.layers["nuclei 3D labels"]
    np.testing.assert_array_equal(labels.data, expected)
    assert tuple(labels.scale) == (2.0, 0.5, 0.5) and labels.data.ndim == 3


@pytest.mark.parametrize("target, overwrite, message", [
    ("cells.zarr", True, "lies inside the input"),
    ("cells.zarr/labels.zarr", False, "lies inside the input"),
    ("kept.zarr", False, "already exists"),
])
def test_zarr_output_never_replaces_the_input_or_an_existing_store(viewer, crop2d, tmp_path, wait_for_worker,
                                                                   target, overwrite, message):
    image = crop2d[0]
    for name in ("cells.zarr", "kept.zarr"):
        array = zarr.open_array(str(tmp_path / name), mode="w", shape=image.shape, chunks=(64, 64),
                                dtype=image.dtype)
        array[...] = image
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    layer = viewer.add_image(zarr.open_array(str(tmp_path / "cells.zarr"), mode="r"), name="cells")
    widget = _widget(viewer, layer)
    widget._output.value = ZARR
    widget._out_path.value = tmp_path / target
    widget._overwrite.value = overwrite
    widget.run()
    if widget.worker is not None:
        wait_for_worker(widget)
    assert message in widget._status.value
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    assert all(p.read_bytes() == data for p, data in before.items())
    assert "cells labels" not in [lay.name for lay in viewer.layers]
