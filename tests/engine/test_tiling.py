"""Tile plans: write regions partition the image, alignment, mirroring, splitting, imports."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiled_unet
from hypothesis import given, settings
from hypothesis import strategies as st

from tiled_unet.engine.tiling import (
    UNetGeometry,
    compute_fraction,
    mirror_index,
    mirror_pad_whole,
    plan_tiles,
    round_tile_shape,
    split_tile,
    tile_grid_shape,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "tiled_unet"


@st.composite
def plans(draw, ndim=None):
    """A geometry, an image shape (sizes 1..5 included) and a tile shape."""
    ndim = draw(st.sampled_from([2, 3])) if ndim is None else ndim
    geometry = UNetGeometry(ndim, draw(st.integers(0, 3)), draw(st.sampled_from(["valid", "same"])),
                            draw(st.none() | st.integers(0, 12)))
    sizes = st.integers(1, 5) | st.integers(1, 80 if ndim == 2 else 30)
    shape = tuple(draw(sizes) for _ in range(ndim))
    tile = tuple(draw(st.integers(1, 48)) for _ in range(ndim))
    return geometry, shape, tile


def coverage(tiles, shape):
    count = np.zeros(shape, np.int32)
    for tile in tiles:
        count[tile.write_slices] += 1
    return count


@settings(max_examples=300, deadline=None)
@given(plans())
def test_write_regions_partition_the_image(plan):
    geometry, shape, tile_shape = plan
    tiles = plan_tiles(shape, geometry, tile_shape)
    assert (coverage(tiles, shape) == 1).all()
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert len(tiles) == np.prod(tile_grid_shape(tiles))


@settings(max_examples=300, deadline=None)
@given(plans())
def test_tiles_are_aligned_and_share_one_input_shape(plan):
    geometry, shape, tile_shape = plan
    tiles = plan_tiles(shape, geometry, tile_shape)
    inputs = {t.input_shape for t in tiles}
    assert len(inputs) == 1
    (input_shape,) = inputs
    if geometry.padding == "valid":
        outputs = geometry.output_shape(input_shape)
    else:
        assert all(n % geometry.period == 0 for n in input_shape)
        outputs = tuple(n - 2 * geometry.halo for n in input_shape)
    for tile in tiles:
        assert tile.halo == geometry.halo
        for span, out in zip(tile.spans, outputs):
            assert span.compute_start % geometry.period == 0
            assert span.compute_start <= span.write_start < span.write_stop <= span.compute_start + out
            crop = span.crop()
            assert 0 <= crop.start < crop.stop <= out


@settings(max_examples=200, deadline=None)
@given(plans())
def test_tile_step_is_rounded_to_the_period(plan):
    geometry, shape, tile_shape = plan
    tiles = plan_tiles(shape, geometry, tile_shape)
    step = round_tile_shape(tuple(min(t, n) for t, n in zip(tile_shape, shape)), geometry)
    for tile in tiles:
        for span, s, n in zip(tile.spans, step, shape):
            assert span.write_start % s == 0
            assert span.write_stop - span.write_start == min(s, n - span.write_start)


@settings(max_examples=200, deadline=None)
@given(plans())
def test_read_plan_stays_inside_the_image(plan):
    geometry, shape, tile_shape = plan
    for tile in plan_tiles(shape, geometry, tile_shape):
        slices, takes = tile.read_plan(shape)
        for sl, take, size, n, span in zip(slices, takes, tile.input_shape, shape, tile.spans):
            assert 0 <= sl.start < sl.stop <= n
            start = span.compute_start - tile.halo
            expected = mirror_index(np.arange(start, start + size), n)
            got = np.arange(sl.start, sl.stop) if take is None else sl.start + take
            np.testing.assert_array_equal(got, expected)


@given(n=st.integers(1, 12), pad=st.integers(0, 60))
def test_mirror_index_matches_numpy_reflect(n, pad):
    values = np.arange(n) * 10 + 7
    expected = np.pad(values, (pad, pad), mode="reflect")
    got = values[mirror_index(np.arange(-pad, n + pad), n)]
    np.testing.assert_array_equal(got, expected)


def test_mirror_index_examples():
    np.testing.assert_array_equal(mirror_index(np.arange(-3, 7), 4), [3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
    np.testing.assert_array_equal(mirror_index(np.arange(-5, 5), 1), np.zeros(10))
    np.testing.assert_array_equal(mirror_index(np.arange(-4, 6), 2), [0, 1, 0, 1, 0, 1, 0, 1, 0, 1])


@settings(max_examples=100, deadline=None)
@given(plans())
def test_mirror_pad_whole_is_one_valid_input(plan):
    geometry, shape, _ = plan
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    padded, crop = mirror_pad_whole(image, geometry)
    if geometry.padding == "valid":
        out = geometry.output_shape(padded.shape)
        assert all(o >= n for o, n in zip(out, shape))
    else:
        assert all(p % geometry.period == 0 for p in padded.shape)
    h = geometry.halo
    np.testing.assert_array_equal(padded[tuple(slice(h, h + n) for n in shape)], image)
    assert crop == tuple(slice(0, n) for n in shape)


@settings(max_examples=300, deadline=None)
@given(plans())
def test_split_tile_partitions_the_parent(plan):
    geometry, shape, tile_shape = plan
    for tile in plan_tiles(shape, geometry, tile_shape)[:4]:
        pieces = split_tile(tile, geometry)
        parent = np.zeros(shape, np.int32)
        parent[tile.write_slices] = 1
        assert (coverage(pieces, shape) == parent).all()
        lengths = [s.write_stop - s.write_start for s in tile.spans]
        if max(lengths) > geometry.period:
            assert len(pieces) > 1
            smaller = [a <= b for a, b in zip(pieces[0].input_shape, tile.input_shape)]
            assert all(smaller) and pieces[0].input_shape != tile.input_shape
        else:
            assert pieces == [tile]
        assert len({p.input_shape for p in pieces}) == 1
        out = (geometry.output_shape(pieces[0].input_shape) if geometry.padding == "valid"
               else tuple(n - 2 * geometry.halo for n in pieces[0].input_shape))
        for piece in pieces:
            for span, o in zip(piece.spans, out):
                assert span.compute_start % geometry.period == 0
                assert span.compute_start <= span.write_start < span.write_stop <= span.compute_start + o


def test_split_tile_halves_a_large_tile():
    geometry = UNetGeometry(2, 2, "valid")
    (tile,) = plan_tiles((64, 64), geometry, (64, 64))
    pieces = split_tile(tile, geometry)
    assert [p.write_slices for p in pieces] == [
        (slice(0, 32), slice(0, 32)), (slice(0, 32), slice(32, 64)),
        (slice(32, 64), slice(0, 32)), (slice(32, 64), slice(32, 64))]
    assert pieces[0].input_shape == (72, 72) and tile.input_shape == (104, 104)


def test_plan_examples():
    geometry = UNetGeometry(2, 2, "valid")
    tiles = plan_tiles((100, 10), geometry, (30, 30))
    assert tile_grid_shape(tiles) == (4, 1)
    assert [t.write_slices[0] for t in tiles] == [slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 100)]
    assert tiles[-1].spans[0].compute_start == 68  # moved back so it computes inside the image
    assert 0 < compute_fraction(tiles, (100, 10)) < 1


def test_plan_rejects_bad_shapes():
    geometry = UNetGeometry(2, 2, "valid")
    with pytest.raises(ValueError, match="2-D image and tile shapes"):
        plan_tiles((10, 10), geometry, (8, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        plan_tiles((0, 10), geometry, (8, 8))


def test_tiling_module_imports_no_torch():
    """tiling.py is pure geometry: loaded on its own it pulls in numpy but never torch."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('standalone_tiling', {str(SRC / 'engine' / 'tiling.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "module.plan_tiles((50, 40), module.UNetGeometry(2, 3), (16, 16))\n"
        "assert 'numpy' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'tiling.py imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiling_module_imports_only_numpy_and_stdlib():
    tree = ast.parse((SRC / "engine" / "tiling.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "tiling.py must not import from the package"
            roots.add(node.module.split(".")[0])
    assert roots - {"numpy", "__future__"} <= set(sys.stdlib_module_names)


SOURCE = Path(__file__).resolve().parents[2] / "src" / "tiled_unet"
CORE_MODULES = ["tiled_unet"] + sorted(m.name for m in pkgutil.walk_packages(tiled_unet.__path__, "tiled_unet.")
                                       if not m.name.startswith("tiled_unet._napari"))


def test_core_imports_no_gui():
    """The engine works without napari or Qt: none of them is imported with the core modules."""
    code = (
        "import importlib, sys\n"
        "GUI = {'napari', 'magicgui', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy'}\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    gui = sorted(m for m in sys.modules if m.split('.')[0] in GUI)\n"
        "    assert not gui, (name, gui)\n"
        "import tiled_unet\n"
        "import tiled_unet.synthetic\n"
        "tiled_unet.predict(tiled_unet.synthetic.nuclei((20, 20), count=2)[0], 'placeholder-2d', device='cpu')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in GUI]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
