"""Every manifest contribution opens; reader and writers round-trip; the core imports without Qt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet._napari._reader import get_reader, read_zarr
from tiled_unet._napari._writer import write_labels_tiff, write_labels_zarr

PLUGIN = "napari-tiled-unet"
WIDGETS = ("Segment cells (U-Net)", "Train U-Net")


def _manifest():
    import npe2

    return npe2.PluginManifest.from_distribution(PLUGIN)


def test_manifest_validates_with_imports():
    result = subprocess.run([str(Path(sys.executable).parent / "npe2"), "validate", "--imports", PLUGIN],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def test_every_command_resolves_and_menus_point_at_widgets():
    mf = _manifest()
    commands = {c.id: c for c in mf.contributions.commands}
    for command in commands.values():
        assert command.id.startswith(f"{PLUGIN}.") and command.python_name.startswith("tiled_unet._napari.")
        assert callable(_resolve(command.python_name))
    assert {w.display_name for w in mf.contributions.widgets} == set(WIDGETS)
    menu = [item.command for item in mf.contributions.menus["napari/layers/segment"]]
    assert menu == [w.command for w in mf.contributions.widgets]
    for contribution in (*mf.contributions.readers, *mf.contributions.writers, *mf.contributions.sample_data,
                         *mf.contributions.widgets):
        assert contribution.command in commands


def _resolve(python_name):
    import importlib

    module, _, attr = python_name.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", WIDGETS)
def test_every_widget_opens_in_the_viewer(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    # napari hands plugins a proxy of the viewer
    assert getattr(widget._viewer, "__wrapped__", widget._viewer) is viewer and dock.widget() is not None


def test_widgets_are_in_the_layers_segment_menu(viewer):
    from app_model.types import MenuItem

    from napari._app_model import get_app_model

    items = get_app_model().menus.get_menu("napari/layers/segment")
    titles = [i.command.title for i in items if isinstance(i, MenuItem)]
    assert any("Segment cells (U-Net)" in t for t in titles) and any("Train U-Net" in t for t in titles)


@pytest.mark.parametrize("key, ndim", [("nuclei-2d", 2), ("nuclei-3d", 3)])
def test_sample_data_opens_image_and_ground_truth(viewer, key, ndim):
    viewer.open_sample(PLUGIN, key)
    image, truth = viewer.layers
    assert image.data.ndim == ndim and truth.data.max() > 10 and truth.data.shape == image.data.shape


def _ome_zarr(path: Path, image: np.ndarray) -> None:
    root = zarr.open_group(str(path), mode="w")
    levels = [image, image[::2, ::2]]
    for i, level in enumerate(levels):
        root.create_array(str(i), shape=level.shape, chunks=(64, 64), dtype=level.dtype)[...] = level
    root.attrs["multiscales"] = [{"version": "0.4", "name": "cells", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [0.5 * 2**i, 0.5 * 2**i]}]} for i in range(2)]}]


def test_reader_opens_ome_zarr_pyramid_lazily(viewer, crop2d, tmp_path):
    path = tmp_path / "cells.ome.zarr"
    _ome_zarr(path, crop2d[0])
    assert get_reader(str(path)) is read_zarr and get_reader(str(tmp_path / "nothing.tif")) is None
    layers = viewer.open(str(path), plugin=PLUGIN)
    layer = layers[0]
    assert layer.multiscale and all(isinstance(d, zarr.Array) for d in layer.data)
    assert tuple(layer.scale) == (0.5, 0.5) and layer.name == "cells"
    low, high = layer.contrast_limits
    assert low < high <= crop2d[0].max()


def test_writers_round_trip(viewer, crop2d, tmp_path):
    truth = crop2d[1]
    layer = viewer.add_labels(truth, name="truth", scale=(2.0, 0.5))
    tif = tmp_path / "labels.tif"
    written = write_labels_tiff(str(tif), layer.data, {"axis_labels": ("y", "x")})
    assert written == [str(tif)]
    np.testing.assert_array_equal(tifffile.imread(tif), truth)
    out = tmp_path / "labels.zarr"
    write_labels_zarr(str(out), layer.data, {"scale": [2.0, 0.5], "axis_labels": ("y", "x")})
    data, meta, kind = read_zarr(str(out))[0]
    assert kind == "labels" and meta["scale"] == (2.0, 0.5) and isinstance(data, zarr.Array)
    np.testing.assert_array_equal(data[...], truth)
    with pytest.raises(FileExistsError, match="choose a new name"):
        write_labels_zarr(str(out), layer.data, {})
    with pytest.raises(ValueError, match="where this layer's data is read from"):
        write_labels_tiff(str(out), data, {})
    # through napari's own save, by file extension
    saved = layer.save(str(tmp_path / "via_napari.zarr"), plugin=PLUGIN)
    np.testing.assert_array_equal(zarr.open_array(saved[0], mode="r")[...], truth)


def test_core_imports_without_napari_or_qt():
    code = ("import importlib, pkgutil, sys, tiled_unet; "
            "core = [m.name for m in pkgutil.walk_packages(tiled_unet.__path__, 'tiled_unet.') "
            "if not m.name.startswith('tiled_unet._napari')]; assert len(core) > 30, core; "
            "[importlib.import_module(m) for m in core]; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'magicgui', 'qtpy', 'PyQt6', "
            "'PyQt5', 'PySide6')]; print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
