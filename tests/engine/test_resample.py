"""Resampling to the model's voxel size: the lazy view and predict's round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

import tiled_unet
from tiled_unet.engine.resample import ResampledArray, scale_factors


def test_view_matches_whole_read_and_linear_interpolation():
    rng = np.random.default_rng(0)
    source = rng.random((7, 9, 11)).astype(np.float32)
    view = ResampledArray(source, (14, 9, 5))
    whole = view[:]
    assert whole.shape == (14, 9, 5)
    np.testing.assert_array_equal(view[3:9, 2:5, 1:4], whole[3:9, 2:5, 1:4])
    np.testing.assert_array_equal(view[2, :, 3], whole[2, :, 3])
    # independent reference: sample positions (j + 0.5) * n / m - 0.5, clamped, order-1 spline
    coords = [np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1) for n, m in zip(source.shape, whole.shape)]
    grid = np.meshgrid(*coords, indexing="ij")
    reference = ndi.map_coordinates(source, grid, order=1, mode="nearest")
    np.testing.assert_allclose(whole, reference, atol=1e-5)
    np.testing.assert_array_equal(ResampledArray(source, source.shape)[:], source)


def test_scale_factors():
    assert scale_factors((1.0, 0.5, 0.5), (1.0, 0.5, 0.5)) is None
    assert scale_factors((2.0, 0.5, 0.5), (1.0, 0.5, 0.5)) == (2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="values"):
        scale_factors((1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        scale_factors((0.0, 1.0), (1.0, 1.0))


@pytest.fixture
def fine_model():
    net = tiled_unet.load_model("placeholder-2d")
    net.model_config = dataclasses.replace(net.model_config, voxel_size=(0.5, 0.5))
    return net


def test_predict_resamples_to_the_model_grid_and_back(fine_model, tmp_path):
    image = np.random.default_rng(1).random((40, 50)).astype(np.float32)
    probs = tiled_unet.predict(image, fine_model, device="cpu", voxel_size=(1.0, 1.0))
    assert probs.shape == (2, 40, 50)
    # the same as predicting on the upsampled image and downsampling by hand
    up = ResampledArray(image, (80, 100))[:]
    fine = tiled_unet.predict(up, fine_model, device="cpu")
    np.testing.assert_allclose(probs, ResampledArray(fine, (2, 40, 50))[:], atol=1e-6)
    stored = tiled_unet.predict(image, fine_model, device="cpu", voxel_size=(1.0, 1.0), out=tmp_path / "p.zarr")
    np.testing.assert_allclose(stored[:], probs, atol=1e-6)
    assert stored.attrs["resampled_by"] == [2.0, 2.0] and stored.attrs["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]     # scratch removed
    with pytest.raises(FileExistsError):
        tiled_unet.predict(image, fine_model, device="cpu", voxel_size=(1.0, 1.0), out=tmp_path / "p.zarr")


def test_same_voxel_size_or_unknown_model_size_does_not_resample(fine_model):
    image = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    direct = tiled_unet.predict(image, fine_model, device="cpu")
    np.testing.assert_array_equal(tiled_unet.predict(image, fine_model, device="cpu", voxel_size=(0.5, 0.5)), direct)
    plain = tiled_unet.load_model("placeholder-2d")
    np.testing.assert_array_equal(tiled_unet.predict(image, plain, device="cpu", voxel_size=(3.0, 3.0)),
                                  tiled_unet.predict(image, plain, device="cpu"))
    with pytest.raises(ValueError, match="voxel_size must have 2 values"):
        tiled_unet.predict(image, fine_model, device="cpu", voxel_size=(1.0, 1.0, 1.0))
