"""The pipeline on images with extra axes: zarr to zarr, frame by frame, equals in memory."""

from __future__ import annotations

import numpy as np
import zarr

import tiled_unet
import tiled_unet.synthetic
from tiled_unet.instances.zarr_labels import FrameView


def test_frames_zarr_to_zarr_equal_in_memory(tmp_path):
    frames = np.stack([tiled_unet.synthetic.nuclei((96, 96), count=6, seed=s)[0] for s in range(3)])
    store = tmp_path / "frames.zarr"
    zarr.open_array(str(store), mode="w", shape=frames.shape, chunks=(1, 48, 48), dtype=frames.dtype)[...] = frames
    options = dict(axes="TYX", device="cpu", diameter="off")
    in_memory = tiled_unet.segment(frames, "nuclei-2d", **options)
    on_disk = tiled_unet.segment(str(store), "nuclei-2d", out=str(tmp_path / "labels.zarr"), block_shape=(40, 40),
                                 **options)
    assert on_disk.shape == in_memory.shape == frames.shape and in_memory.max() > 0
    np.testing.assert_array_equal(on_disk[...], in_memory)


def test_frame_view_reads_regions_of_one_frame():
    array = zarr.create_array(store={}, shape=(2, 3, 10, 12), chunks=(1, 3, 5, 6), dtype="float32")
    array[...] = np.arange(array.size, dtype="float32").reshape(array.shape)
    view = FrameView(array, (1,))
    assert view.shape == (3, 10, 12) and view.chunks == (3, 5, 6) and view.ndim == 3
    np.testing.assert_array_equal(view[:, 2:4, 5:], array[1, :, 2:4, 5:])


def test_probabilities_true_keeps_them_beside_the_labels_as_segment_files_names_them(tmp_path):
    import pytest

    image = tiled_unet.synthetic.nuclei((64, 64), count=4, seed=1)[0]
    store = tmp_path / "cells.zarr"
    zarr.open_array(str(store), mode="w", shape=image.shape, chunks=(32, 32), dtype=image.dtype)[...] = image
    options = dict(device="cpu", diameter="off")
    labels = tiled_unet.segment(str(store), "nuclei-2d", out=str(tmp_path / "cells_labels.zarr"),
                                probabilities=True, **options)
    kept = zarr.open_array(str(tmp_path / "cells_probabilities.zarr"), mode="r")
    assert kept.shape == (3, 64, 64) and labels.shape == (64, 64)
    np.testing.assert_allclose(kept[...], tiled_unet.predict(image, "nuclei-2d", **options), atol=1e-5)
    with pytest.raises(FileExistsError, match="cells_labels.zarr"):
        tiled_unet.segment(str(store), "nuclei-2d", out=str(tmp_path / "cells_labels.zarr"), probabilities=True,
                           **options)
    with pytest.raises(TypeError, match="probabilities must be a zarr path, True"):
        tiled_unet.segment(str(store), "nuclei-2d", out=str(tmp_path / "other.zarr"), probabilities=3, **options)
    assert not (tmp_path / "other.zarr").exists()
