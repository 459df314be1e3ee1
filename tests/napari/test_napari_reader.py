"""The plugin's reader: TIFF axes and voxel size as the layer scale, and no "Choose reader"
question for zarr folders and TIFF files once the plugin has been used."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet._napari import READER_PATTERNS, prefer_plugin_reader
from tiled_unet._napari._reader import get_reader, read_tiff

PLUGIN = "napari-tiled-unet"


@pytest.fixture
def fresh_session(monkeypatch):
    """napari settings with no reader chosen (kept in memory, never saved) and the plugin not yet
    activated: a first session."""
    import napari.settings
    import npe2

    monkeypatch.setattr(napari.settings, "_SETTINGS", napari.settings.NapariSettings(config_path=None))
    npe2.PluginManager.instance().deactivate(PLUGIN)
    assert napari.settings.get_settings().plugins.extension2reader == {}
    return napari.settings.get_settings().plugins


def test_zarr_and_tiff_open_without_choosing_a_reader(viewer, fresh_session, crop2d, tmp_path):
    zarr_path = tmp_path / "cells.zarr"
    array = zarr.open_array(str(zarr_path), mode="w", shape=crop2d[0].shape, chunks=(64, 64), dtype="uint16")
    array[...] = crop2d[0]
    array.attrs.update({"axes": "YX", "scale": [0.5, 0.5]})
    tiff_path = tmp_path / "cells.tif"
    tifffile.imwrite(tiff_path, crop2d[0], imagej=True, resolution=(2.0, 2.0), metadata={"axes": "YX", "unit": "um"})
    viewer.open_sample(PLUGIN, "nuclei-2d")  # using the plugin once activates it
    assert set(READER_PATTERNS) <= set(fresh_session.extension2reader)
    for path in (zarr_path, tiff_path):
        layer = viewer.open(str(path), plugin=None)[0]  # as File > Open and drag-and-drop do
        assert layer.source.reader_plugin == PLUGIN and tuple(layer.scale) == (0.5, 0.5)


def test_a_reader_the_user_chose_is_kept(fresh_session):
    fresh_session.extension2reader = {"*.tif": "napari"}
    added = prefer_plugin_reader()
    assert "*.tif" not in added and fresh_session.extension2reader["*.tif"] == "napari"
    assert fresh_session.extension2reader["*.tiff"] == PLUGIN
    assert prefer_plugin_reader() == {}


def test_tiff_reader_keeps_imagej_and_ome_axes_and_voxel_size(tmp_path):
    stack = np.arange(4 * 2 * 16 * 16, dtype=np.uint16).reshape(4, 2, 16, 16)
    imagej = tmp_path / "stack.tif"
    tifffile.imwrite(imagej, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"})
    ome = tmp_path / "stack.ome.tif"
    tifffile.imwrite(ome, stack[:, 0], ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 1.5,
                                                           "PhysicalSizeY": 0.25, "PhysicalSizeX": 0.25})
    data, meta, kind = read_tiff(str(imagej))[0]
    assert kind == "image" and data.shape == stack.shape
    assert meta["axis_labels"] == ("z", "c", "y", "x") and meta["scale"] == (2.0, 1.0, 0.25, 0.25)
    data, meta, kind = read_tiff(str(ome))[0]
    assert meta["name"] == "stack" and meta["axis_labels"] == ("z", "y", "x") and meta["scale"] == (1.5, 0.25, 0.25)
    np.testing.assert_array_equal(np.asarray(data), stack[:, 0])
    low, high = meta["contrast_limits"]
    assert low < high


def test_tiff_reader_rgb_plain_and_label_files(tmp_path):
    rgb = tmp_path / "photo.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.ones((5, 8, 8), np.float32), metadata=None)  # says nothing of its axes
    labels = tmp_path / "cells_labels.tif"
    tifffile.imwrite(labels, np.eye(8, dtype=np.uint16), imagej=True, metadata={"axes": "YX"})
    _, meta, kind = read_tiff(str(rgb))[0]
    assert kind == "image" and meta["rgb"] and meta["axis_labels"] == ("y", "x")
    _, meta, kind = read_tiff(str(plain))[0]
    assert kind == "image" and "scale" not in meta and "axis_labels" not in meta
    _, meta, kind = read_tiff(str(labels))[0]
    assert kind == "labels" and meta["scale"] == (1.0, 1.0)
    assert get_reader(str(labels)) is read_tiff and get_reader(str(tmp_path / "missing.tif")) is None
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_tiff(str(broken))
