"""Label TIFFs are the same everywhere (ImageJ, uint16 below 65,536 cells, the voxel size), and
zarr labels record the voxel size they were made at."""

from __future__ import annotations

import numpy as np
import tifffile
import zarr

import tiled_unet
from tiled_unet.cli.main import main
from tiled_unet.io.arrays import scale_attrs
from tiled_unet.synthetic import sample


def test_sample_label_tiff_is_an_imagej_uint16_tiff(tmp_path):
    out = tmp_path / "sample_labels.tif"
    assert main(["segment", "--sample", "nuclei-2d", "-o", str(out), "--device", "cpu"]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "YX" and tif.series[0].dtype == np.uint16
        assert int(tif.asarray().max()) > 10


def test_segment_to_zarr_records_the_voxel_size(tmp_path):
    image = sample("nuclei-2d")[0][:96, :96]
    labels = tiled_unet.segment(image, "nuclei-2d", out=tmp_path / "labels.zarr", voxel_size=(0.5, 0.5),
                                device="cpu")
    attrs = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r").attrs
    assert attrs["axes"] == "YX" and attrs["scale"] == [0.5, 0.5] and attrs["unit"] == "micrometer"
    assert labels.shape == image.shape


def test_scale_attrs_cover_every_axis_and_leave_unknown_sizes_out():
    assert scale_attrs("TZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5}) == {"scale": [1.0, 2.0, 0.5, 0.5],
                                                                  "unit": "micrometer"}
    assert scale_attrs("YX", {}) == {} and scale_attrs("YX", None) == {}
