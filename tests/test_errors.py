"""Bad inputs and options fail early with messages that say what was expected."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import zarr

from tiled_unet import InferenceConfig, NormalizationConfig, UNet
from tiled_unet.config import ModelConfig, UNetConfig


def test_1d_image_for_2d_model(run, net2d):
    with pytest.raises(ValueError, match=r"2-D and needs an image with at least 2 dimensions.*got 1"):
        run(np.zeros(50, np.float32), net2d)


def test_2d_image_for_3d_model(run, net3d):
    with pytest.raises(ValueError, match=r"3-D and needs an image with at least 3 dimensions.*\(ZYX\).*got 2"):
        run(np.zeros((20, 20), np.float32), net3d)


def test_channel_count_not_matching(run, make_net, net2d):
    net2c = make_net(in_channels=2)
    with pytest.raises(ValueError, match=r"expects 2 channels.*shape \(3, 20, 20\).*axes="):
        run(np.zeros((3, 20, 20), np.float32), net2c)
    with pytest.raises(ValueError, match=r"expects 2 input channel\(s\).*with 3"):
        run(np.zeros((3, 20, 20), np.float32), net2c, axes="CYX")
    with pytest.raises(ValueError, match=r"expects 1 input channel\(s\).*with 3"):
        run(np.zeros((3, 20, 20), np.float32), net2d, axes="CYX")


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (2, 0, 10)])
def test_empty_image(run, net2d, shape):
    with pytest.raises(ValueError, match="empty"):
        run(np.zeros(shape, np.float32), net2d)


@pytest.mark.parametrize("image", [
    np.full((8, 8), "a"),
    np.full((8, 8), None, dtype=object),
    np.ones((8, 8), np.complex64),
    np.zeros((8, 8), "datetime64[s]"),
], ids=["str", "object", "complex", "datetime"])
def test_non_numeric_dtype(run, net2d, image):
    with pytest.raises(ValueError, match=f"numeric image.*got dtype {re.escape(str(image.dtype))}"):
        run(image, net2d)


def test_bool_and_integer_images_are_accepted(run, net2d):
    image = np.zeros((12, 12), bool)
    image[3:8, 4:9] = True
    assert run(image, net2d).shape == (2, 12, 12)
    assert run(image.astype(np.int64), net2d).shape == (2, 12, 12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_refused(run, net2d, bad):
    image = np.ones((30, 30), np.float32)
    image[17, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite.*nan_to_num"):
        run(image, net2d)


def test_nan_refused_from_zarr(tmp_path, run, net2d):
    image = np.ones((30, 30), np.float32)
    image[29, 29] = np.nan
    array = zarr.open_array(str(tmp_path / "nan.zarr"), mode="w", shape=image.shape, chunks=(8, 8),
                            dtype="float32")
    array[:] = image
    with pytest.raises(ValueError, match="NaN or infinite.*nan_to_num"):
        run(tmp_path / "nan.zarr", net2d)
    array[29, 29] = 0.0
    assert np.isfinite(run(tmp_path / "nan.zarr", net2d)).all()


def test_nan_refused_while_reading_tiles(run):
    """With fixed normalisation no statistics are sampled: the tile reader must still refuse NaN."""
    net = UNet(ModelConfig(unet=UNetConfig(depth=2, base_channels=2),
                           normalization=NormalizationConfig(mode="fixed", offset=1.0, scale=2.0)))
    image = np.ones((40, 40), np.float32)
    assert np.isfinite(run(image, net, tile_shape=(8, 8))).all()
    image[35, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite.*region"):
        run(image, net, tile_shape=(8, 8))


def test_out_path_equal_to_input_path(tmp_path, run, net2d, image2d):
    path = tmp_path / "image.zarr"
    zarr.open_array(str(path), mode="w", shape=image2d.shape, dtype=image2d.dtype)[:] = image2d
    for source in (path, str(path), zarr.open_array(str(path), mode="r")):
        with pytest.raises(ValueError, match="inputs are never overwritten"):
            run(source, net2d, out=path, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], image2d)


def test_out_path_containing_the_input(tmp_path, run, net2d, image2d):
    """Replacing a group that holds the input would delete the input: refused."""
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("raw", data=image2d)
    for source in (tmp_path / "data.zarr" / "raw", group["raw"]):
        with pytest.raises(ValueError, match="inputs are never overwritten"):
            run(source, net2d, out=tmp_path / "data.zarr", overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "data.zarr" / "raw"), mode="r")[:], image2d)
    probs = run(group["raw"], net2d, out=tmp_path / "data.zarr" / "probs")  # a sibling is fine
    assert probs.shape == (2,) + image2d.shape


def test_out_array_that_is_the_input(run, make_net):
    """Two channels in, two classes out: the input has the output's shape but is not overwritten."""
    image = np.ones((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="out is the input array"):
        run(image, make_net(in_channels=2), out=image)
    assert (image == 1).all()


def test_out_array_with_wrong_shape_or_dtype(run, net2d, image2d):
    with pytest.raises(ValueError, match=r"out has shape \(2, 10, 10\), expected \(2, 45, 61\)"):
        run(image2d, net2d, out=np.zeros((2, 10, 10), np.float32))
    with pytest.raises(ValueError, match="float dtype"):
        run(image2d, net2d, out=np.zeros((2, 45, 61), np.uint8))
    with pytest.raises(TypeError, match="out must be None, a zarr path, an array or a Sink"):
        run(image2d, net2d, out=42)


def test_existing_output_needs_overwrite(tmp_path, run, net2d, image2d):
    out = tmp_path / "probs.zarr"
    first = run(image2d, net2d, out=out)[:]
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        run(image2d * 0, net2d, out=out)
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], first)
    flipped = np.ascontiguousarray(image2d[::-1])
    second = run(flipped, net2d, out=out, overwrite=True)
    assert second.attrs["complete"] is True
    np.testing.assert_array_equal(second[:], run(flipped, net2d))
    assert not np.array_equal(second[:], first)


def test_cannot_write_into_zip(tmp_path, run, net2d, image2d):
    with pytest.raises(ValueError, match="zip"):
        run(image2d, net2d, out=tmp_path / "probs.zip")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_unavailable(net2d, image2d, device):
    from tiled_unet import predict

    with pytest.raises(ValueError, match="CUDA is not available"):
        predict(image2d, net2d, device=device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_mps_unavailable(net2d, image2d):
    from tiled_unet import predict

    with pytest.raises(ValueError, match="MPS is not available"):
        predict(image2d, net2d, device="mps")


@pytest.mark.parametrize("device", ["gpu", "tpu", "xla"])
def test_unknown_device(net2d, image2d, device):
    from tiled_unet import predict

    with pytest.raises(ValueError, match="device"):
        predict(image2d, net2d, device=device)


def test_float16_on_cpu(run, net2d, image2d):
    with pytest.raises(ValueError, match="float16.*not supported on CPU.*bfloat16"):
        run(image2d, net2d, precision="float16")


def test_unknown_precision(run, net2d, image2d):
    with pytest.raises(ValueError, match="precision must be one of"):
        run(image2d, net2d, precision="int8")


@pytest.mark.parametrize("tile_shape", [(16,), (16, 16, 16)])
def test_tile_shape_with_wrong_length(run, net2d, image2d, tile_shape):
    with pytest.raises(ValueError, match=r"tile_shape must have 2 sizes \(YX\)"):
        run(image2d, net2d, tile_shape=tile_shape)


@pytest.mark.parametrize("tile_shape", ["big", (0, 16), (-8, 16)])
def test_tile_shape_invalid_values(run, net2d, image2d, tile_shape):
    with pytest.raises(ValueError, match="tile_shape"):
        run(image2d, net2d, tile_shape=tile_shape)


def test_halo_on_valid_model(run, net2d, image2d):
    with pytest.raises(ValueError, match="halo can only be set for same-padding models"):
        run(image2d, net2d, halo=8)


@pytest.mark.parametrize("axes,match", [
    ("YX", r"axes 'YX' name 2 axes but the image has 3"),
    ("TYXZ", r"name 4 axes but the image has 3"),
    ("TTX", "repeat"),
    ("TXY", "must contain Y, X in that order"),
    ("TZX", "must contain Y, X in that order"),
])
def test_bad_axes(run, net2d, axes, match):
    with pytest.raises(ValueError, match=match):
        run(np.zeros((2, 16, 16), np.float32), net2d, axes=axes)


def test_too_many_extra_axes(run, net2d):
    with pytest.raises(ValueError, match="at most 5"):
        run(np.zeros((1,) * 6 + (8, 8), np.float32), net2d)


@pytest.mark.parametrize("option,value", [("batch_size", 0), ("prefetch", -1), ("channels_last", "yes"),
                                          ("output_dtype", "int8"), ("halo", -1)])
def test_invalid_inference_options(option, value):
    with pytest.raises(ValueError, match=option):
        InferenceConfig(**{option: value})


def test_unknown_option_is_a_type_error(run, net2d, image2d):
    with pytest.raises(TypeError, match="tile_size"):
        run(image2d, net2d, tile_size=(16, 16))


def test_bad_image_and_model_types(tmp_path, run, net2d):
    with pytest.raises(TypeError, match="expected an image"):
        run(object(), net2d)
    with pytest.raises(TypeError, match="expected a tiled_unet UNet"):
        run(np.zeros((8, 8)), torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(FileNotFoundError, match="no such file"):
        run(tmp_path / "missing.tif", net2d)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="expected a TIFF file"):
        run(tmp_path / "image.png", net2d)
