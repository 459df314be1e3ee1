"""Blockwise instance labelling equals the in-memory labelling, IDs included, for any blocks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from helpers import two_level_probabilities
from tiled_unet.instances import memory as instances
from tiled_unet.instances._blocks import Grid
from tiled_unet.instances.blockwise import labels_blockwise
from tiled_unet.config import InstanceConfig
from tiled_unet.training.targets import instance_targets


# --- data --------------------------------------------------------------------------------

def probabilities_from_labels(labels: np.ndarray, seed: int = 0, blur: float = 0.6,
                              noise: float = 0.15) -> np.ndarray:
    """(background, interior, boundary) probabilities: one-hot targets, blurred, noisy, renormalised."""
    targets = instance_targets(labels, boundary_width=1)
    probs = np.stack([targets == c for c in range(3)]).astype(np.float32)
    if blur:
        probs = ndi.gaussian_filter(probs, (0,) + (blur,) * labels.ndim)
    probs += np.random.default_rng(seed).random(probs.shape, dtype=np.float32) * noise
    return probs / probs.sum(axis=0, keepdims=True)


def random_cells(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """Boxes of random size anywhere (later ones on top), so cells touch and cross every border,
    plus hollow boxes (cells with holes)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        centre = [rng.integers(0, n) for n in shape]
        half = [rng.integers(2, 6) for _ in shape]
        box = tuple(slice(max(c - h, 0), c + h) for c, h in zip(centre, half))
        labels[box] = k
        if k % 5 == 0:  # a hole in some of them
            inner = tuple(slice(max(c - h + 3, 0), max(c + h - 3, 0)) for c, h in zip(centre, half))
            labels[inner] = 0
    return labels


def store(tmp_path: Path, probs: np.ndarray, name: str = "probs.zarr", chunks: int = 8) -> zarr.Array:
    array = zarr.open_array(str(tmp_path / name), mode="w", shape=probs.shape, dtype=probs.dtype,
                            chunks=(probs.shape[0],) + (chunks,) * (probs.ndim - 1))
    array[...] = probs
    return array


def blockwise(probs: zarr.Array, tmp_path: Path, **options) -> np.ndarray:
    out = labels_blockwise(probs, tmp_path / "labels.zarr", overwrite=True, **options)
    assert isinstance(out, zarr.Array)
    return out[...]


def assert_same(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == expected.dtype == np.uint32
    np.testing.assert_array_equal(result, expected)


@pytest.fixture(scope="module")
def probs2d() -> np.ndarray:
    return probabilities_from_labels(random_cells((30, 34), 24, seed=1), seed=1)


@pytest.fixture(scope="module")
def probs3d() -> np.ndarray:
    return probabilities_from_labels(random_cells((10, 16, 13), 12, seed=2), seed=2)


CONFIGS = {
    "default": InstanceConfig(),
    "no-unseeded": InstanceConfig(keep_unseeded=False, min_size=5),
    "no-filters-no-holes": InstanceConfig(min_seed_size=0, min_size=0, fill_holes=False),
    "big-filters": InstanceConfig(min_seed_size=12, min_size=40, max_growth=2),
    "no-growth": InstanceConfig(max_growth=0, min_size=1),
    "growth-past-blocks": InstanceConfig(max_growth=9, seed_threshold=0.8),
    "two-level-seeds": InstanceConfig(seed_threshold=0.75, seed_low_threshold=0.45, min_seed_size=2, min_size=6),
}


# --- blockwise == in memory --------------------------------------------------------------

@pytest.mark.parametrize("block", [(7, 7), (40, 9), (5, 3), (64, 64)])
def test_two_level_seeds_equal_in_memory_where_they_part_and_join(tmp_path, block):
    probs = two_level_probabilities()
    config = InstanceConfig(foreground_threshold=0.5, seed_threshold=0.8, seed_low_threshold=0.4,
                            min_seed_size=1, min_size=20, max_growth=40)
    expected = instances.instances_from_probabilities(probs, config)
    single = instances.instances_from_probabilities(probs, dataclasses.replace(config, seed_low_threshold=0.0))
    assert expected.max() == 3 and single.max() == 4  # the rule joins the textured cell, parts the touching ones
    assert_same(blockwise(store(tmp_path, probs), tmp_path, config=config, block_shape=block), expected)


@pytest.mark.parametrize("block", [(7, 7), (1, 34), (30, 1), (5, 3), (13, 11), (64, 64)])
def test_2d_equals_in_memory_for_block_shapes(tmp_path, probs2d, block):
    expected = instances.instances_from_probabilities(probs2d)
    assert_same(blockwise(store(tmp_path, probs2d), tmp_path, block_shape=block), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_2d_equals_in_memory_for_configs(tmp_path, probs2d, name):
    config = CONFIGS[name]
    expected = instances.instances_from_probabilities(probs2d, config)
    assert_same(blockwise(store(tmp_path, probs2d), tmp_path, config=config, block_shape=(6, 9)), expected)


@pytest.mark.parametrize("block", [(4, 5, 6), (1, 16, 13), (3, 1, 7), (10, 16, 13)])
def test_3d_equals_in_memory_for_block_shapes(tmp_path, probs3d, block):
    expected = instances.instances_from_probabilities(probs3d)
    assert_same(blockwise(store(tmp_path, probs3d), tmp_path, block_shape=block), expected)


@pytest.mark.parametrize("name", ["no-unseeded", "no-filters-no-holes", "growth-past-blocks"])
def test_3d_equals_in_memory_for_configs(tmp_path, probs3d, name):
    config = CONFIGS[name]
    expected = instances.instances_from_probabilities(probs3d, config)
    assert_same(blockwise(store(tmp_path, probs3d), tmp_path, config=config, block_shape=(5, 7, 6)), expected)


# blocks of at least 3 voxels per axis keep this fast (thin blocks: the parametrized tests)
@settings(max_examples=6, deadline=None)
@given(block=st.tuples(st.integers(3, 12), st.integers(3, 14), st.integers(3, 15)),
       config=st.sampled_from(list(CONFIGS.values())))
def test_3d_equals_in_memory_property(tmp_path_factory, probs3d, block, config):
    tmp_path = tmp_path_factory.mktemp("prop")
    expected = instances.instances_from_probabilities(probs3d, config)
    assert_same(blockwise(store(tmp_path, probs3d), tmp_path, config=config, block_shape=block), expected)


def test_two_class_and_path_input(tmp_path, probs2d):
    two = np.stack([probs2d[0], probs2d[1] + probs2d[2]])
    names = ("background", "foreground")
    expected = instances.instances_from_probabilities(two, None, names)
    store(tmp_path, two)
    result = labels_blockwise(str(tmp_path / "probs.zarr"), str(tmp_path / "out.zarr"), class_names=names,
                              block_shape=(8, 8))
    assert_same(result[...], expected)
    assert result.chunks == (8, 8) and result.attrs["complete"] is True


def test_fills_a_given_zarr_array_with_default_blocks(tmp_path, probs2d):
    expected = instances.instances_from_probabilities(probs2d)
    out = zarr.open_array(str(tmp_path / "given.zarr"), mode="w", shape=probs2d.shape[1:], chunks=(5, 9),
                          dtype="uint32")
    result = labels_blockwise(store(tmp_path, probs2d), out, scheduler="sync")
    assert result is out
    assert_same(out[...], expected)


# --- borders, holes ----------------------------------------------------------------------

def one_hot(targets: np.ndarray, seed: int = 0) -> np.ndarray:
    return probabilities_from_labels(targets, seed=seed, blur=0, noise=0.1)


def test_cell_across_border_keeps_one_id_and_touching_cells_keep_two(tmp_path):
    labels = np.zeros((24, 24), np.int32)
    labels[2:10, 4:20] = 1       # crosses the border at x = 12
    labels[13:22, 5:12] = 2      # touches cell 3 exactly at the border x = 12
    labels[13:22, 12:19] = 3
    probs = one_hot(labels)
    result = blockwise(store(tmp_path, probs), tmp_path, block_shape=(12, 12))
    assert_same(result, instances.instances_from_probabilities(probs))
    assert len(np.unique(result[2:10, 4:20])) == 1 and result[5, 5] > 0
    assert result[15, 11] > 0 and result[15, 12] > 0 and result[15, 11] != result[15, 12]
    assert result.max() == 3


def test_hole_over_several_blocks_is_filled_but_not_background_on_the_volume_face(tmp_path):
    labels = np.zeros((40, 44), np.int32)
    labels[3:30, 3:30] = 1
    labels[9:24, 9:24] = 0       # a hole spread over 3 x 3 blocks of 8 x 8
    labels[0:20, 32:44] = 2
    labels[0:14, 36:40] = 0      # a notch in cell 2, open to the top face of the volume
    probs = one_hot(labels)
    expected = instances.instances_from_probabilities(probs)
    result = blockwise(store(tmp_path, probs), tmp_path, block_shape=(8, 8))
    assert_same(result, expected)
    ring = result[3:30, 3:30]
    assert ring.min() > 0 and len(np.unique(ring)) == 1       # hole filled with the ring's ID
    assert np.all(result[0:10, 37:39] == 0)                  # notch left as background
    unfilled = blockwise(store(tmp_path, probs), tmp_path, block_shape=(8, 8),
                         config=InstanceConfig(fill_holes=False))
    assert np.all(unfilled[11:22, 11:22] == 0)


def test_3d_hole_inside_a_hollow_cube_over_blocks(tmp_path):
    labels = np.zeros((16, 18, 18), np.int32)
    labels[1:15, 2:16, 2:16] = 1
    labels[5:11, 6:12, 6:12] = 0
    probs = one_hot(labels)
    result = blockwise(store(tmp_path, probs), tmp_path, block_shape=(4, 5, 6))
    assert_same(result, instances.instances_from_probabilities(probs))
    assert np.all(result[1:15, 2:16, 2:16] == 1)


# --- growth is local with radius max_growth ----------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(0, 5), ndim=st.sampled_from([2, 3]),
       block=st.integers(1, 7))
def test_growth_on_a_block_with_halo_equals_growth_on_the_whole(seed, steps, ndim, block):
    rng = np.random.default_rng(seed)
    shape = (16, 17) if ndim == 2 else (9, 10, 11)
    region = rng.random(shape) < 0.7
    seeds = np.where(region & (rng.random(shape) < 0.05), rng.integers(1, 9, shape), 0).astype(np.int32)
    whole = instances.grow(seeds, region, steps)
    grid = Grid(shape, (block,) * ndim)
    for index in grid.indices():
        window = grid.window(index, steps)
        core = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(grid.slices(index), window))
        np.testing.assert_array_equal(instances.grow(seeds[window], region[window], steps)[core],
                                      whole[grid.slices(index)])


def test_growth_needs_the_full_halo():
    """With one pixel less of halo a seed ``steps`` away is missed (the radius is tight)."""
    steps = 4
    seeds = np.zeros((1, 12), np.int32)
    seeds[0, 5 + steps] = 7  # reaches pixel 5, the last of the first block
    region = np.ones_like(seeds, bool)
    whole = instances.grow(seeds, region, steps)
    grid = Grid((1, 12), (1, 6))
    for halo, same in ((steps, True), (steps - 1, False)):
        window = grid.window((0, 0), halo)
        grown = instances.grow(seeds[window], region[window], steps)[:, :6]
        assert np.array_equal(grown, whole[:, :6]) is same


# --- files, progress, errors -------------------------------------------------------------

def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def test_existing_output_needs_overwrite_and_input_is_untouched(tmp_path, probs2d):
    probs = store(tmp_path, probs2d)
    before = tree_digest(tmp_path / "probs.zarr")
    out = tmp_path / "labels.zarr"
    labels_blockwise(probs, out, block_shape=(16, 16))
    first = zarr.open_array(str(out))[...]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        labels_blockwise(probs, out, block_shape=(16, 16))
    np.testing.assert_array_equal(zarr.open_array(str(out))[...], first)
    labels_blockwise(probs, out, block_shape=(10, 10), overwrite=True)
    assert zarr.open_array(str(out)).chunks == (10, 10)
    assert tree_digest(tmp_path / "probs.zarr") == before
    assert sorted(os.listdir(tmp_path)) == ["labels.zarr", "probs.zarr"]  # temporary directory removed


def test_output_inside_or_around_the_input_is_refused(tmp_path, probs2d):
    probs = store(tmp_path, probs2d)
    for out in (tmp_path / "probs.zarr", tmp_path / "probs.zarr" / "labels", tmp_path):
        with pytest.raises(ValueError, match="input"):
            labels_blockwise(probs, out, overwrite=True)
    with pytest.raises(ValueError, match="input"):
        labels_blockwise(probs, probs)


def test_temporary_directory_removed_on_error_and_progress_reported(tmp_path, probs2d):
    probs = store(tmp_path, probs2d)
    scratch = tmp_path / "scratch"
    events = []

    def stop_at_growth(done, total, stage):
        events.append((done, total, stage))
        if stage == "growth" and done == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        labels_blockwise(probs, tmp_path / "a.zarr", block_shape=(10, 12), tmpdir=scratch, progress=stop_at_growth)
    assert scratch.is_dir() and os.listdir(scratch) == []
    events.clear()
    labels_blockwise(probs, tmp_path / "b.zarr", block_shape=(10, 12), tmpdir=scratch, progress=events.append
                     if False else lambda *e: events.append(e))
    assert os.listdir(scratch) == []
    stages = list(dict.fromkeys(stage for _, _, stage in events))
    assert stages == ["masks", "seed faces", "growth", "unseeded faces", "holes", "hole faces", "write"]
    for stage in stages:
        done = [d for d, _, s in events if s == stage]
        total = {t for _, t, s in events if s == stage}
        assert done == list(range(len(done))) and total == {done[-1]}
    assert ("write", 9, 9) in [(s, d, t) for d, t, s in events]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"block_shape": (8,)}, ValueError, "2 entries"),
    ({"block_shape": (8, 0)}, ValueError, ">= 1"),
    ({"block_shape": (8, 2.5)}, ValueError, ">= 1"),
    ({"block_shape": (True, 8)}, ValueError, ">= 1"),
    ({"block_shape": "8,8"}, TypeError, "sequence"),
    ({"class_names": ("background", "interior")}, ValueError, "3 classes"),
    ({"class_names": "background"}, TypeError, "strings"),
    ({"config": {"min_size": 3}}, TypeError, "InstanceConfig"),
    ({"scheduler": "gpu"}, ValueError, "scheduler"),
    ({"scheduler": 3}, TypeError, "scheduler"),
    ({"progress": "bar"}, TypeError, "progress"),
    ({"overwrite": "yes"}, TypeError, "overwrite"),
])
def test_invalid_options(tmp_path, probs2d, kwargs, error, match):
    with pytest.raises(error, match=match):
        labels_blockwise(store(tmp_path, probs2d), tmp_path / "labels.zarr", **kwargs)
    assert not (tmp_path / "labels.zarr").exists()


def test_invalid_inputs_and_outputs(tmp_path, probs2d):
    probs = store(tmp_path, probs2d)
    cases = [
        (probs2d[0], tmp_path / "a.zarr", ValueError, "2 or 3 spatial axes"),
        (np.zeros((3, 2, 2, 2, 2), np.float32), tmp_path / "a.zarr", ValueError, "2 or 3 spatial axes"),
        ((probs2d * 100).astype(np.uint8), tmp_path / "a.zarr", TypeError, "float"),
        (np.zeros((3, 0, 4), np.float32), tmp_path / "a.zarr", ValueError, "empty"),
        ([[0.5]], tmp_path / "a.zarr", TypeError, "zarr array"),
        (tmp_path / "missing.zarr", tmp_path / "a.zarr", FileNotFoundError, "missing"),
        (probs, 42, TypeError, "zarr path"),
        (probs, np.zeros((30, 33), np.uint32), ValueError, r"\(30, 34\)"),
        (probs, np.zeros((30, 34), np.float32), ValueError, "integer"),
        (probs, zarr.open_array(str(tmp_path / "ro.zarr"), mode="w", shape=(30, 34), dtype="uint32"), None, None),
        (probs, tmp_path / "x.zip", ValueError, "zip"),
    ]
    zarr.open_array(str(tmp_path / "ro.zarr"), mode="r")
    for source, out, error, match in cases:
        if error is None:
            readonly = zarr.open_array(str(tmp_path / "ro.zarr"), mode="r")
            with pytest.raises(ValueError, match="read-only"):
                labels_blockwise(source, readonly)
            continue
        with pytest.raises(error, match=match):
            labels_blockwise(source, out)
    given = zarr.open_array(str(tmp_path / "given.zarr"), mode="w", shape=(30, 34), chunks=(8, 8), dtype="uint32")
    with pytest.raises(ValueError, match="multiple of the chunks"):
        labels_blockwise(probs, given, block_shape=(12, 8))


# --- heavier -----------------------------------------------------------------------------

@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(block=st.tuples(st.integers(4, 24), st.integers(6, 40), st.integers(6, 40)),
       config=st.sampled_from(list(CONFIGS.values())), seed=st.integers(0, 1000))
def test_larger_3d_property(tmp_path_factory, block, config, seed):
    tmp_path = tmp_path_factory.mktemp("large")
    probs = probabilities_from_labels(random_cells((20, 40, 36), 60, seed=seed), seed=seed)
    expected = instances.instances_from_probabilities(probs, config)
    assert_same(blockwise(store(tmp_path, probs, chunks=16), tmp_path, config=config, block_shape=block), expected)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_schedulers(tmp_path, probs3d, scheduler):
    expected = instances.instances_from_probabilities(probs3d)
    assert_same(blockwise(store(tmp_path, probs3d), tmp_path, block_shape=(5, 8, 7), scheduler=scheduler),
                expected)
