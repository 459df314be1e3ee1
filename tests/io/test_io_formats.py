"""The single places of io: length units, OME-Zarr ``multiscales``, and the TIFF writer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet.io.arrays import open_zarr
from tiled_unet.io.omezarr import multiscales_of, read_ome_image
from tiled_unet.io.tiff import read_tiff_meta, write_label_tiff, write_tiff
from tiled_unet.io.units import unit_factor


@pytest.mark.parametrize("unit, factor", [
    ("um", 1.0), ("UM", 1.0), (" micron ", 1.0), ("microns", 1.0), ("micrometer", 1.0), ("Micrometre", 1.0),
    ("\u00b5m", 1.0), ("\u03bcm", 1.0), ("\u039cM", 1.0), ("\\u00B5m", 1.0), ("\\u00b5m", 1.0),
    ("nm", 1e-3), ("nanometer", 1e-3), ("pm", 1e-6), ("mm", 1e3), ("millimeter", 1e3),
    ("cm", 1e4), ("centimeter", 1e4), ("m", 1e6), ("meter", 1e6),
])
def test_every_spelling_of_a_length_unit_in_micrometres(unit, factor):
    assert unit_factor(unit) == factor


@pytest.mark.parametrize("unit", [None, "", "pixel", "inch", "second"])
def test_no_unit_or_not_a_length_has_no_factor(unit):
    assert unit_factor(unit) is None


def ome_group(path, nested: bool, unit: str = "micrometer"):
    multiscale = {"name": "image", "axes": [{"name": "y", "type": "space", "unit": unit},
                                            {"name": "x", "type": "space", "unit": unit}],
                  "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.25]}]}]}
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if nested else 2)
    if nested:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    group.create_array("0", data=np.arange(12, dtype=np.uint8).reshape(3, 4))
    return group


@pytest.mark.parametrize("nested", [False, True])
def test_multiscales_at_the_top_level_and_under_ome(tmp_path, nested):
    group = ome_group(tmp_path / "image.zarr", nested)
    assert multiscales_of(group)["datasets"][0]["path"] == "0"
    assert open_zarr(tmp_path / "image.zarr").shape == (3, 4)
    image = read_ome_image(tmp_path / "image.zarr")
    assert (image.axes, image.version, image.voxel_size) == ("YX", "0.5" if nested else "0.4", {"Y": 0.5, "X": 0.25})


def test_ome_zarr_units_use_the_one_table(tmp_path):
    ome_group(tmp_path / "image.zarr", nested=False, unit="nanometer")
    assert read_ome_image(tmp_path / "image.zarr").voxel_size == pytest.approx({"Y": 5e-4, "X": 2.5e-4})


def test_a_group_without_multiscales(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("raw", data=np.zeros((2, 2)))
    assert multiscales_of(group) is None and read_ome_image(tmp_path / "plain.zarr") is None
    with pytest.raises(ValueError, match=r"plain.zarr is a zarr group without OME-Zarr 'multiscales' metadata; "
                                         r"point to one of its arrays instead \(found: \['raw'\]\)"):
        multiscales_of(group, str(tmp_path / "plain.zarr"))


def test_probabilities_keep_axes_and_pixel_size(tmp_path):
    probs = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    write_tiff(tmp_path / "probs.tif", probs, "CYX", {"Y": 0.3, "X": 0.65})
    meta = read_tiff_meta(tmp_path / "probs.tif")
    assert (meta.kind, meta.axes, meta.dtype) == ("plain", "CYX", "float32")
    assert meta.voxel_size == pytest.approx({"Y": 0.3, "X": 0.65})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "probs.tif"), probs)
    assert [p.name for p in tmp_path.iterdir()] == ["probs.tif"]


def test_a_failed_write_leaves_no_file_and_the_old_one_whole(tmp_path):
    target = tmp_path / "cells_labels.tif"
    with pytest.raises(KeyError):  # tifffile has no TIFF type for Python objects, after opening the file
        write_tiff(target, np.zeros((4, 4), dtype=object), "YX")
    assert list(tmp_path.iterdir()) == []
    labels = np.arange(16, dtype=np.uint16).reshape(4, 4)
    assert write_label_tiff(target, labels, "YX", {"Y": 0.5, "X": 0.5}) == "imagej"
    before = target.read_bytes()
    with pytest.raises(ValueError, match="ImageJ"):  # ImageJ has no float64
        write_tiff(target, np.zeros((4, 4)), "YX", kind="imagej")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cells_labels.tif"]
