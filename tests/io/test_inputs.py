"""Inputs from disk and memory (zarr v2/v3, zip, OME-Zarr, dask, TIFF), axes, and zarr outputs."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet.io import arrays as io
from tiled_unet.engine.plan import output_chunks

TILE = (16, 24)


@pytest.fixture
def expected(run, net2d, image2d):
    return run(image2d, net2d, tile_shape=TILE)


def write_zarr(path, data, zarr_format, chunks=(16, 16)):
    array = zarr.open_array(str(path), mode="w", zarr_format=zarr_format, shape=data.shape,
                            chunks=chunks, dtype=data.dtype)
    array[:] = data
    return array


def write_ome(path, data, version):
    """An OME-Zarr image with two levels: "0" (full size) and "1" (half size)."""
    multiscales = [{
        "version": version, "name": "image",
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [2.0**level, 2.0**level]}]} for level in (0, 1)],
    }]
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    if version == "0.4":
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": version, "multiscales": multiscales}
    group.create_array("0", data=data, chunks=(16, 16))
    group.create_array("1", data=(data[::2, ::2] // 2).astype(data.dtype), chunks=(16, 16))
    return group


def test_numpy_result_is_a_probability_map(expected, image2d):
    assert expected.shape == (2,) + image2d.shape
    assert expected.dtype == np.float32
    np.testing.assert_allclose(expected.sum(axis=0), 1.0, atol=1e-6)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("as_path", [True, False])
def test_zarr_directory(tmp_path, zarr_format, as_path, run, net2d, image2d, expected):
    path = tmp_path / f"image_v{zarr_format}.zarr"
    array = write_zarr(path, image2d, zarr_format)
    assert array.metadata.zarr_format == zarr_format
    source = path if as_path else zarr.open_array(str(path), mode="r")
    np.testing.assert_array_equal(run(source, net2d, tile_shape=TILE), expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_zip_store(tmp_path, zarr_format, run, net2d, image2d, expected):
    path = tmp_path / "image.zip"
    store = zarr.storage.ZipStore(str(path), mode="w")
    array = zarr.create_array(store, shape=image2d.shape, chunks=(16, 16), dtype=image2d.dtype,
                              zarr_format=zarr_format)
    array[:] = image2d
    store.close()
    np.testing.assert_array_equal(run(path, net2d, tile_shape=TILE), expected)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_uses_level_0(tmp_path, version, run, net2d, image2d, expected):
    path = tmp_path / "image.ome.zarr"
    write_ome(path, image2d, version)
    assert io.open_image(path).shape == image2d.shape
    np.testing.assert_array_equal(run(path, net2d, tile_shape=TILE), expected)
    np.testing.assert_array_equal(run(str(path), net2d, tile_shape=TILE), expected)


def test_zarr_group_without_multiscales_is_refused(tmp_path, run, net2d, image2d):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("raw", data=image2d)
    with pytest.raises(ValueError, match=r"without OME-Zarr 'multiscales'.*raw"):
        run(tmp_path / "plain.zarr", net2d)
    np.testing.assert_array_equal(run(tmp_path / "plain.zarr" / "raw", net2d, tile_shape=TILE),
                                  run(image2d, net2d, tile_shape=TILE))


def test_dask_array(run, net2d, image2d, expected):
    lazy = da.from_array(image2d, chunks=(10, 17))
    np.testing.assert_array_equal(run(lazy, net2d, tile_shape=TILE), expected)


def test_list_input(run, net2d, image2d, expected):
    np.testing.assert_array_equal(run(image2d.tolist(), net2d, tile_shape=TILE), expected)


def test_tiff_uncompressed_is_memory_mapped(tmp_path, run, net2d, image2d, expected):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, image2d)
    assert isinstance(io.open_image(path), np.memmap)
    np.testing.assert_array_equal(run(path, net2d, tile_shape=TILE), expected)


def test_tiff_compressed_is_read_through_zarr(tmp_path, run, net2d, image2d, expected):
    path = tmp_path / "image.tiff"
    tifffile.imwrite(path, image2d, compression="zlib", tile=(16, 16))
    opened = io.open_image(path)
    assert isinstance(opened, zarr.Array)
    np.testing.assert_array_equal(run(path, net2d, tile_shape=TILE), expected)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_3d_tiff(tmp_path, compression, run, net3d, image3d):
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, image3d, compression=compression)
    assert io.open_image(path).shape == image3d.shape
    np.testing.assert_array_equal(run(path, net3d, tile_shape=(4, 8, 8)),
                                  run(image3d, net3d, tile_shape=(4, 8, 8)))


def test_3d_zarr_input(tmp_path, run, net3d, image3d):
    path = tmp_path / "volume.zarr"
    write_zarr(path, image3d, 3, chunks=(4, 8, 8))
    np.testing.assert_array_equal(run(path, net3d, tile_shape=(4, 8, 8)),
                                  run(image3d, net3d, tile_shape=(4, 8, 8)))


def test_extra_axes_are_processed_frame_by_frame(tmp_path, run, net2d, rng):
    """A T x Z x Y x X stack with a 2D model: every (t, z) plane is predicted on its own."""
    stack = (rng.random((2, 3, 30, 37)) * np.array([1, 10, 100])[None, :, None, None] * 500).astype(np.uint16)
    events = []
    result = run(stack, net2d, tile_shape=(16, 16), progress=events.append)
    assert result.shape == (2, 3, 2, 30, 37)
    for t in range(2):
        for z in range(3):
            np.testing.assert_array_equal(result[t, z], run(stack[t, z], net2d, tile_shape=(16, 16)))
    assert {(e.frame, e.frames) for e in events} == {(f, 6) for f in range(6)}
    assert events[-1].fraction == pytest.approx(1.0)
    path = tmp_path / "stack.zarr"
    write_zarr(path, stack, 3, chunks=(1, 1, 16, 16))
    np.testing.assert_array_equal(run(path, net2d, tile_shape=(16, 16), axes="TZYX"), result)


def test_extra_axis_after_spatial_axes(run, net2d, rng):
    stack = (rng.random((30, 37, 3)) * 1000).astype(np.float32)
    result = run(stack, net2d, tile_shape=(16, 16), axes="YXT")
    assert result.shape == (3, 2, 30, 37)
    for t in range(3):
        np.testing.assert_array_equal(result[t], run(stack[..., t], net2d, tile_shape=(16, 16)))


def test_3d_model_with_time_axis(run, net3d, rng):
    movie = (rng.random((2, 6, 13, 11)) * 1000).astype(np.float32)
    result = run(movie, net3d, tile_shape=(4, 8, 8))
    assert result.shape == (2, 2, 6, 13, 11)
    np.testing.assert_array_equal(result[1], run(movie[1], net3d, tile_shape=(4, 8, 8)))


@pytest.fixture(scope="module")
def net2c(make_net):
    return make_net(seed=5, in_channels=2, num_classes=3)


def test_multichannel_cyx_and_yxc(run, net2c, reference, rng):
    cyx = np.stack([rng.random((33, 41)) * 100, rng.random((33, 41)) * 7000]).astype(np.float32)
    yxc = np.moveaxis(cyx, 0, -1).copy()
    result = run(cyx, net2c, tile_shape=TILE)
    assert result.shape == (3, 33, 41)
    assert np.abs(result - reference(cyx, net2c)).max() < 1e-5  # normalised per channel
    np.testing.assert_array_equal(run(yxc, net2c, tile_shape=TILE), result)
    np.testing.assert_array_equal(run(cyx, net2c, tile_shape=TILE, axes="CYX"), result)
    np.testing.assert_array_equal(run(yxc, net2c, tile_shape=TILE, axes="yxc"), result)


def test_explicit_axes_resolve_ambiguous_shapes(run, net2c, rng):
    """Shape (2, 30, 2): channels first by default; axes='YXC' reads the last axis as channels."""
    image = (rng.random((2, 30, 2)) * 1000).astype(np.float32)
    default = run(image, net2c, tile_shape=TILE)
    as_yxc = run(image, net2c, tile_shape=TILE, axes="YXC")
    assert default.shape == (3, 30, 2) and as_yxc.shape == (3, 2, 30)
    np.testing.assert_array_equal(as_yxc, run(np.moveaxis(image, -1, 0), net2c, tile_shape=TILE))
    np.testing.assert_array_equal(run(image, net2c, tile_shape=TILE, axes="CYX"), default)


def test_multichannel_time_series(run, net2c, rng):
    movie = (rng.random((3, 2, 20, 25)) * 1000).astype(np.uint16)
    result = run(movie, net2c, tile_shape=TILE, axes="TCYX")
    assert result.shape == (3, 3, 20, 25)
    np.testing.assert_array_equal(result[2], run(movie[2], net2c, tile_shape=TILE))
    np.testing.assert_array_equal(run(np.moveaxis(movie, 1, -1), net2c, tile_shape=TILE, axes="TYXC"), result)


@pytest.mark.parametrize("tile", [(16, 24), (8, 8), (64, 64)])
def test_zarr_output_path(tmp_path, run, net2d, image2d, tile):
    out = tmp_path / "probs.zarr"
    expected = run(image2d, net2d, tile_shape=tile)
    result = run(image2d, net2d, tile_shape=tile, out=out)
    assert isinstance(result, zarr.Array)
    reopened = zarr.open_array(str(out), mode="r")
    assert reopened.attrs["complete"] is True
    assert reopened.attrs["axes"] == "CYX"
    assert reopened.shape == expected.shape and reopened.dtype == np.float32
    np.testing.assert_array_equal(reopened[:], expected)
    step = tuple(min(-(-t // 4) * 4, -(-n // 4) * 4) for t, n in zip(tile, image2d.shape))
    assert reopened.chunks[0] == 2
    for chunk, s, n in zip(reopened.chunks[1:], step, image2d.shape):
        assert s % chunk == 0 or chunk == n  # every tile writes whole chunks
    assert io.open_image(out).shape == expected.shape


def test_zarr_output_of_a_time_series(tmp_path, run, net2d, rng):
    stack = (rng.random((3, 20, 30)) * 1000).astype(np.float32)
    result = run(stack, net2d, tile_shape=(8, 16), out=tmp_path / "probs.zarr", output_dtype="float16")
    assert result.chunks == (1, 2, 8, 16)
    assert result.dtype == np.float16 and result.attrs["axes"] == "TCYX"
    np.testing.assert_allclose(result[:], run(stack, net2d, tile_shape=(8, 16)), atol=1e-3)


def test_output_chunks_stay_small_and_aligned():
    from tiled_unet.io.layout import Layout

    layout = Layout("ZYX", (512, 2048, 2048), 3)
    chunks = output_chunks(layout, 2, (256, 256, 256))
    assert np.prod(chunks) * 4 <= 32 * 2**20
    assert all(256 % c == 0 for c in chunks[1:])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_fill_an_existing_zarr_array(tmp_path, zarr_format, run, net2d, image2d, expected):
    target = zarr.open_array(str(tmp_path / "target.zarr"), mode="w", zarr_format=zarr_format,
                             shape=expected.shape, chunks=(1, 10, 10), dtype="float32")
    result = run(image2d, net2d, tile_shape=TILE, out=target)
    assert result is target
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "target.zarr"), mode="r")[:], expected)


def test_fill_an_existing_numpy_array(run, net2d, image2d, expected):
    target = np.full(expected.shape, np.nan, np.float64)
    assert run(image2d, net2d, tile_shape=TILE, out=target) is target
    np.testing.assert_array_equal(target, expected)


def test_read_from_zarr_write_to_zarr(tmp_path, run, net3d, image3d):
    write_zarr(tmp_path / "in.zarr", image3d, 2, chunks=(3, 8, 8))
    result = run(tmp_path / "in.zarr", net3d, tile_shape=(4, 8, 8), out=tmp_path / "out.zarr")
    np.testing.assert_array_equal(result[:], run(image3d, net3d, tile_shape=(4, 8, 8)))
    assert zarr.open_array(str(tmp_path / "out.zarr")).attrs["complete"] is True
