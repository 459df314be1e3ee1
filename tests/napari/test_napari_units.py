"""Physical units end to end: a 0.5 um image keeps 0.5 um in every output, and napari lines them up.

Real files on disk: an ImageJ TIFF and an OME-Zarr image at 0.5 um, segmented by the command
line to a label TIFF, a zarr array and labels inside the OME-Zarr image, and by the Segment
widget to zarr; each reopened with the plugin's reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet.cli.main import main
from tiled_unet.io.tiff import read_tiff_meta

PLUGIN = "napari-tiled-unet"
UM = 0.5


@pytest.fixture
def tiff_at_half_um(tmp_path, crop2d):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, crop2d[0], imagej=True, resolution=(1 / UM, 1 / UM), metadata={"axes": "YX", "unit": "um"})
    return path


def _ome_zarr_at_half_um(path, image):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", shape=image.shape, chunks=(64, 64), dtype=image.dtype)[...] = image
    root.attrs["multiscales"] = [{"version": "0.4", "name": "cells", "axes": [
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [UM, UM]}]}]}]
    return path


def test_voxel_size_reaches_every_output_and_napari_lines_them_up(viewer, tiff_at_half_um, crop2d, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(tiff_at_half_um), "-o", str(out / "cells_labels.tif"), "--device", "cpu"]) == 0
    assert main(["segment", str(tiff_at_half_um), "-o", str(out / "cells_labels.zarr"), "--device", "cpu"]) == 0
    ome = _ome_zarr_at_half_um(tmp_path / "cells.ome.zarr", crop2d[0])
    assert main(["segment", str(ome), "--into-ome-labels", "--device", "cpu"]) == 0

    label_tiff = read_tiff_meta(out / "cells_labels.tif")
    assert label_tiff.kind == "imagej" and label_tiff.voxel_size == {"Y": UM, "X": UM}
    assert tifffile.imread(out / "cells_labels.tif").dtype == np.uint16
    label_zarr = zarr.open_array(str(out / "cells_labels.zarr"), mode="r")
    assert label_zarr.attrs["scale"] == [UM, UM] and label_zarr.attrs["unit"] == "micrometer"
    ome_labels = zarr.open_group(str(ome / "labels" / "tiled-unet"), mode="r")
    transform = ome_labels.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert transform == {"type": "scale", "scale": [UM, UM]}

    layers = []
    for path in (tiff_at_half_um, out / "cells_labels.tif", out / "cells_labels.zarr", ome):
        layers += viewer.open(str(path), plugin=PLUGIN)
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["Image", "Labels", "Labels", "Image", "Labels"]
    assert all(tuple(layer.scale) == (UM, UM) for layer in layers)
    extents = {tuple(map(tuple, layer.extent.world)) for layer in layers}
    assert len(extents) == 1  # they line up
    assert int(layers[1].data[...].max()) > 0
    np.testing.assert_array_equal(np.asarray(layers[1].data), layers[2].data[...])


def test_segment_widget_keeps_the_tiff_scale_in_layer_and_zarr(viewer, tiff_at_half_um, tmp_path, qtbot,
                                                               wait_for_worker):
    from tiled_unet._napari._segment_widget import ZARR

    image = viewer.open(str(tiff_at_half_um), plugin=PLUGIN)[0]
    assert tuple(image.scale) == (UM, UM) and tuple(image.axis_labels) == ("y", "x")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells (U-Net)")
    widget._output.value = ZARR
    widget._out_path.value = tmp_path / "from_widget.zarr"
    widget._run.clicked.emit()
    wait_for_worker(widget, timeout=120_000)
    assert widget._status.value.startswith("done"), widget._status.value
    labels = viewer.layers["cells labels"]
    assert tuple(labels.scale) == (UM, UM)
    assert zarr.open_array(str(tmp_path / "from_widget.zarr"), mode="r").attrs["scale"] == [UM, UM]
    # saved through napari's writer: the TIFF keeps the scale too
    saved = labels.save(str(tmp_path / "saved_labels.tif"), plugin=PLUGIN)
    assert read_tiff_meta(saved[0]).voxel_size == {"Y": UM, "X": UM}
    assert tuple(viewer.open(saved[0], plugin=PLUGIN)[0].scale) == (UM, UM)
