"""Tiled prediction equals one pass of the network over the whole mirror-padded image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import build_net, percentile_normalize, predict_cpu, reference_probabilities

TOL = 1e-5

NETS = {
    ("valid", 2, 1): build_net(seed=11, depth=1, base_channels=4),
    ("valid", 2, 2): build_net(seed=12, depth=2, base_channels=3),
    ("valid", 2, 3): build_net(seed=13, depth=3, base_channels=2),
    ("same", 2, 1): build_net(seed=14, depth=1, base_channels=4, padding="same"),
    ("same", 2, 2): build_net(seed=15, depth=2, base_channels=3, padding="same"),
    ("same", 2, 3): build_net(seed=16, depth=3, base_channels=2, padding="same"),
    ("valid", 3, 1): build_net(seed=17, ndim=3, depth=1, base_channels=2),
    ("valid", 3, 2): build_net(seed=18, ndim=3, depth=2, base_channels=2),
    ("same", 3, 1): build_net(seed=19, ndim=3, depth=1, base_channels=2, padding="same"),
    ("same", 3, 2): build_net(seed=20, ndim=3, depth=2, base_channels=2, padding="same"),
}
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def thin_or_odd(upper: int) -> st.SearchStrategy[int]:
    """Sizes 1..5 (thinner than any tile), odd sizes and general sizes up to ``upper``."""
    return st.integers(1, 5) | st.integers(1, upper // 2).map(lambda k: 2 * k - 1) | st.integers(1, upper)


@st.composite
def cases(draw, ndim: int, padding: str):
    depth = draw(st.sampled_from([1, 2, 3] if ndim == 2 else [1, 2]))
    upper = 70 if ndim == 2 else 18
    shape = tuple(draw(thin_or_odd(upper)) for _ in range(ndim))
    tile = tuple(draw(st.integers(1, 40 if ndim == 2 else 12)) for _ in range(ndim))
    # keep the tile count (and the run time of one example) bounded
    tile = tuple(max(t, -(-n // (6 if ndim == 2 else 3))) for t, n in zip(tile, shape))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    seed = draw(st.integers(0, 2**32 - 1))
    image = np.random.default_rng(seed).random(shape) * (200 if dtype == np.uint8 else 5000)
    return NETS[(padding, ndim, depth)], image.astype(dtype), tile


def assert_exact(net, image, tile_shape, **options):
    got = predict_cpu(image, net, tile_shape=tile_shape, **options)
    want = reference_probabilities(image, net)
    assert got.shape == want.shape == (net.config.num_classes,) + image.shape
    diff = float(np.abs(got - want).max())
    assert diff < TOL, f"tiled result differs from the whole image by {diff:g} (tile {tile_shape})"
    return got


@SETTINGS
@given(cases(2, "valid"))
def test_valid_2d_tiles_equal_whole_image(case):
    assert_exact(*case)


@SETTINGS
@given(cases(3, "valid"))
def test_valid_3d_tiles_equal_whole_image(case):
    assert_exact(*case)


@SETTINGS
@given(cases(2, "same"))
def test_same_2d_exact_halo_tiles_equal_whole_image(case):
    assert_exact(*case)


@settings(SETTINGS, max_examples=30)
@given(cases(3, "same"))
def test_same_3d_exact_halo_tiles_equal_whole_image(case):
    assert_exact(*case)


@pytest.mark.parametrize("key", sorted(NETS))
def test_reference_is_not_trivial(key):
    """The networks' outputs vary across the image, so equality above is a real constraint."""
    net = NETS[key]
    shape = (40, 44) if key[1] == 2 else (12, 14, 16)
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    probs = reference_probabilities(image, net)
    assert probs.std(axis=tuple(range(1, probs.ndim))).min() > 1e-3
    shifted = reference_probabilities(np.roll(image, 1, axis=-1), net)
    assert np.abs(np.roll(probs, 1, axis=-1) - shifted)[..., 2:-2].max() > 1e-3


@pytest.mark.parametrize("tile_shape", [(8, 8), (16, 28), (48, 64)])
def test_tiles_equal_a_plain_forward_pass(tile_shape):
    """Independent of the engine's helpers: np.pad by the halo (20 for depth 2), one forward, softmax.

    48 + 2 * 20 and 64 + 2 * 20 are valid sizes whose outputs are exactly 48 and 64.
    """
    net = NETS[("valid", 2, 2)]
    image = (np.random.default_rng(7).random((48, 64)) * 3000).astype(np.uint16)
    padded = np.pad(percentile_normalize(image[None])[0], 20, mode="reflect")
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(padded)[None, None]), dim=1)[0].numpy()
    assert want.shape == (2, 48, 64)
    got = predict_cpu(image, net, tile_shape=tile_shape)
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("tile_shape", [(4, 4), (8, 12), (20, 36), (64, 64), (200, 8)])
def test_tile_shape_does_not_change_the_result(tile_shape, image2d):
    net = NETS[("valid", 2, 2)]
    assert_exact(net, image2d, tile_shape)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_engine_options_keep_exactness(channels_last, batch_size, prefetch, image2d):
    for key in [("valid", 2, 2), ("same", 2, 2)]:
        assert_exact(NETS[key], image2d, (12, 16), channels_last=channels_last, batch_size=batch_size,
                     prefetch=prefetch)


@pytest.mark.parametrize("channels_last", [True, False])
def test_engine_options_keep_exactness_3d(channels_last, image3d):
    assert_exact(NETS[("valid", 3, 2)], image3d, (4, 8, 8), channels_last=channels_last, batch_size=3,
                 prefetch=0)


def test_exact_halo_is_the_default_for_same_padding(image2d):
    net = NETS[("same", 2, 2)]
    explicit = assert_exact(net, image2d, (12, 16), halo=net.geometry.exact_halo)
    np.testing.assert_array_equal(explicit, predict_cpu(image2d, net, tile_shape=(12, 16)))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("less", ["zero", "half", "one less"])
def test_smaller_halo_is_not_exact(depth, less, image2d):
    """With less context than the exact halo, tile borders show: the difference is real but finite.

    ``exact_halo - 1`` already differs, so the exact halo is the smallest exact one.
    """
    net = NETS[("same", 2, depth)]
    exact = net.geometry.exact_halo
    halo = {"zero": 0, "half": exact // 2, "one less": exact - 1}[less]
    got = predict_cpu(image2d, net, tile_shape=(12, 16), halo=halo)
    want = reference_probabilities(image2d, net)
    assert np.isfinite(got).all() and ((got >= 0) & (got <= 1)).all()
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(got - want).max() > TOL


def test_one_tile_covering_everything_is_exact(image3d):
    net = NETS[("same", 3, 1)]
    assert_exact(net, image3d, image3d.shape)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(2, "valid"), (2, "same"), (3, "valid"), (3, "same")]), st.data())
def test_exactness_many_examples(kind, data):
    """A longer run of the same property over all networks."""
    assert_exact(*data.draw(cases(*kind)))
