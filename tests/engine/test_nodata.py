"""Empty margins (a constant fill far below the data) are read as background."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import tiled_unet
from tiled_unet.config import NormalizationConfig
from tiled_unet.engine.nodata import FilledArray, find_fill, without_fill
from tiled_unet.io.layout import parse_layout
from tiled_unet.metrics import evaluate
from tiled_unet.synthetic import nuclei

CONFIG = NormalizationConfig()
MARGIN = 48


def camera_image(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic nuclei (uint16) over a camera's dark level of about 240."""
    image, labels = nuclei((256, 256), count=40, radius=(8, 12), seed=seed)[:2]
    assert image.min() > 200
    return image, labels


def with_margin(image: np.ndarray, fill: int = 0) -> np.ndarray:
    out = np.full((image.shape[0] + 2 * MARGIN, image.shape[1] + 2 * MARGIN), fill, image.dtype)
    out[MARGIN:-MARGIN, MARGIN:-MARGIN] = image
    return out


def test_a_zero_margin_around_an_offset_image_is_found():
    image, _ = camera_image()
    fill, background = find_fill(with_margin(image), CONFIG)
    assert fill == 0
    assert np.percentile(image, 1) <= background <= np.percentile(image, 50) + 5  # the dark level, not a nucleus


@pytest.mark.parametrize("case", ["no margin", "clipped background", "too few", "constant"])
def test_no_fill_without_an_empty_margin(case, rng):
    image, _ = camera_image()
    if case == "clipped background":  # dark background clipped at 0: values next to 0 follow
        image = np.clip(image.astype(np.int32) - 290, 0, None).astype(np.uint16)
    elif case == "too few":  # a margin of well under 1 % of the pixels
        image = image.copy()
        image[0, :100] = 0
    elif case == "constant":
        image = np.full_like(image, 7)
    assert find_fill(image, CONFIG) is None


def test_the_view_reads_fill_as_background_and_keeps_the_rest():
    image, _ = camera_image()
    padded = with_margin(image)
    view = without_fill(padded, parse_layout(padded.shape, padded.dtype, tiled_unet.load_model("nuclei-2d").config,
                                             None), CONFIG)
    assert isinstance(view, FilledArray) and view.dtype == padded.dtype and view.shape == padded.shape
    read = np.asarray(view)
    np.testing.assert_array_equal(read[MARGIN:-MARGIN, MARGIN:-MARGIN], image)
    assert np.unique(read[:MARGIN]).size == 1 and read[0, 0] == round(view.background)


def test_a_margin_leaves_the_cells_as_without_it():
    image, truth = camera_image()
    net = tiled_unet.load_model("nuclei-2d")
    padded = tiled_unet.segment(with_margin(image), net, device="cpu", precision="float32")
    margin = np.ones(padded.shape, bool)
    margin[MARGIN:-MARGIN, MARGIN:-MARGIN] = False
    assert (padded[margin] > 0).mean() < 0.02  # cells at the data's edge may reach a pixel or two in
    # as the margin was read before (the low percentile at 0): AP@0.5 0.58
    assert evaluate(padded[MARGIN:-MARGIN, MARGIN:-MARGIN], truth, (0.5,))[0].ap >= 0.9


def test_tiles_equal_whole_image_with_a_margin(tmp_path):
    image, _ = camera_image()
    store = zarr.open_array(str(tmp_path / "padded.zarr"), mode="w", shape=(352, 352), chunks=(64, 64),
                            dtype=np.uint16)
    store[...] = with_margin(image)
    net = tiled_unet.load_model("nuclei-2d")
    options = {"device": "cpu", "precision": "float32", "diameter": "off"}
    tiled = tiled_unet.predict(str(tmp_path / "padded.zarr"), net, tile_shape=(96, 96), **options)
    whole = tiled_unet.predict(store[...], net, tile_shape=(352, 352), **options)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
