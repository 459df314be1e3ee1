"""Instance labels from probabilities: targets, seeds, growth, clean-up, hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from tiled_unet.config import InstanceConfig
from tiled_unet.instances.memory import adjacent_pairs, class_roles, consecutive, grow, instances_from_probabilities
from helpers import two_level_probabilities
from tiled_unet.training.targets import (BOUNDARY, IGNORE, INTERIOR, TWO_CLASS_NAMES, cell_boundaries, cell_contacts,
                                gap_targets, instance_targets, targets_for)


def one_hot(targets: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.stack([(targets == k).astype(np.float32) for k in range(classes)])


def two_touching_squares() -> np.ndarray:
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2
    return labels


def test_targets_boundary_band_between_touching_cells():
    targets = instance_targets(two_touching_squares(), boundary_width=1)
    # the two cells meet between columns 9 and 10: both columns are boundary, interiors apart
    assert (targets[3:9, 9] == BOUNDARY).all() and (targets[3:9, 10] == BOUNDARY).all()
    assert (targets[3:9, 3:9] == INTERIOR).all() and (targets[3:9, 11:17] == INTERIOR).all()
    assert (targets[0] == 0).all()
    wide = instance_targets(two_touching_squares(), boundary_width=2)
    assert (wide[4:8, 8:12] == BOUNDARY).all() and (wide[4:8, 4:8] == INTERIOR).all()


def test_targets_image_edge_is_not_a_boundary_and_ignore_mask():
    labels = np.ones((6, 6), np.int32)
    assert not cell_boundaries(labels, 1).any()
    ignore = np.zeros((6, 6), bool)
    ignore[0] = True
    targets = instance_targets(labels, 1, ignore)
    assert (targets[0] == IGNORE).all() and (targets[1:] == INTERIOR).all()


def test_targets_reject_bad_labels():
    with pytest.raises(ValueError, match="integer label image"):
        instance_targets(np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="negative"):
        instance_targets(-np.ones((4, 4), np.int32))
    with pytest.raises(ValueError, match="width"):
        instance_targets(np.ones((4, 4), np.int32), boundary_width=0)


def test_gap_targets_part_touching_cells_with_background_only_where_they_touch():
    labels = two_touching_squares()
    targets = gap_targets(labels, gap_width=1)
    assert (targets[2:10, 9] == 0).all() and (targets[2:10, 10] == 0).all()  # the gap
    assert (targets[2:10, 2:9] == 1).all() and (targets[2:10, 11:18] == 1).all()  # outer rims stay cells
    assert (targets[:2] == 0).all() and not cell_contacts(labels == 1, 1).any()  # one cell: no contact
    corner = np.zeros(labels.shape, bool)
    corner[0, 0] = True
    wide = gap_targets(labels, 2, ignore=corner)
    assert (wide[3:10, 8:12] == 0).all() and (wide[3:10, 3:8] == 1).all() and wide[0, 0] == IGNORE
    # a cell surrounded by another one (IDs in either order) is parted from it all around
    ring = np.ones((9, 9), np.int32)
    ring[3:6, 3:6] = 2
    for labels in (ring, 3 - ring):
        assert cell_contacts(labels, 1).sum() == 8 + 12  # face neighbours: inner ring of 8, outer 4 x 3
    assert np.array_equal(targets_for(TWO_CLASS_NAMES, two_touching_squares(), 1), targets)
    with pytest.raises(ValueError, match="classes"):
        targets_for(("background", "foreground", "edge"), labels, 1)
    with pytest.raises(ValueError, match="width"):
        gap_targets(labels, 0)


def test_two_class_perfect_probabilities_give_back_the_cells_but_the_gap():
    labels = two_touching_squares()
    probs = one_hot(gap_targets(labels, 1), 2)
    result = instances_from_probabilities(probs, InstanceConfig(min_size=1, min_seed_size=1), TWO_CLASS_NAMES)
    np.testing.assert_array_equal(result, np.where(gap_targets(labels, 1) == 1, labels, 0))


@pytest.mark.parametrize("width", [1, 2])
def test_perfect_probabilities_give_back_the_cells(width):
    labels = two_touching_squares()
    probs = one_hot(instance_targets(labels, width))
    result = instances_from_probabilities(probs, InstanceConfig(min_size=1, min_seed_size=1))
    np.testing.assert_array_equal(result, labels)


def test_3d_touching_cells_separated():
    labels = np.zeros((8, 12, 20), np.int32)
    labels[1:7, 2:10, 2:10] = 1
    labels[1:7, 2:10, 10:18] = 2
    labels[1:7, 2:10, 18:20] = 0
    result = instances_from_probabilities(one_hot(instance_targets(labels, 1)),
                                          InstanceConfig(min_size=1, min_seed_size=1))
    np.testing.assert_array_equal(result, labels)


def test_growth_is_limited_and_ordered():
    seeds = np.zeros((1, 9), np.int64)
    seeds[0, 0], seeds[0, 8] = 1, 2
    region = np.ones((1, 9), bool)
    # both fronts meet in the middle: pixel 4 is reached by both at step 4; -axis neighbour wins
    np.testing.assert_array_equal(grow(seeds, region, 10)[0], [1, 1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(grow(seeds, region, 2)[0], [1, 1, 1, 0, 0, 0, 2, 2, 2])
    blocked = region.copy()
    blocked[0, 2] = False
    np.testing.assert_array_equal(grow(seeds, blocked, 10)[0], [1, 1, 0, 2, 2, 2, 2, 2, 2])


def _grow_by_pixel(labels, region, steps):
    """The growth rule written pixel by pixel: each step, a free pixel takes the label its first
    labelled neighbour (-axis0, +axis0, -axis1, ...) had before the step."""
    labels = labels.copy()
    for _ in range(steps):
        before = labels.copy()
        for p in zip(*np.nonzero(region & (before == 0))):
            for axis in range(labels.ndim):
                for shift in (1, -1):
                    q = list(p)
                    q[axis] -= shift
                    if 0 <= q[axis] < labels.shape[axis] and before[tuple(q)] > 0:
                        labels[p] = before[tuple(q)]
                        break
                else:
                    continue
                break
    return labels


@pytest.mark.parametrize("seed", range(40))
def test_grow_pairs_and_ids_equal_their_pixel_by_pixel_definitions(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 9, rng.integers(1, 4)))
    big = int(rng.integers(1, 2**40)) if seed % 3 == 0 else 1  # blockwise IDs can be large
    labels = (rng.integers(0, 5, shape) * (rng.random(shape) < 0.3)).astype(np.int64) * big
    region = rng.random(shape) < 0.7
    np.testing.assert_array_equal(grow(labels, region, 3), _grow_by_pixel(labels, region, 3))
    other = rng.integers(0, 4, shape).astype(np.int64) * big
    want = set()
    for p in zip(*np.nonzero(labels)):
        for axis in range(labels.ndim):
            for shift in (1, -1):
                q = list(p)
                q[axis] += shift
                if 0 <= q[axis] < labels.shape[axis] and other[tuple(q)] > 0:
                    want.add((int(labels[p]), int(other[tuple(q)])))
    assert [tuple(pair) for pair in adjacent_pairs(labels, other).tolist()] == sorted(want)
    order = list(dict.fromkeys(int(v) for v in labels.ravel() if v > 0))  # first appearance
    expected = np.array([order.index(int(v)) + 1 if v else 0 for v in labels.ravel()]).reshape(shape)
    np.testing.assert_array_equal(consecutive(labels), expected)


def test_small_objects_unseeded_regions_and_holes():
    targets = np.zeros((20, 20), np.uint8)
    targets[2:12, 2:12] = BOUNDARY
    targets[4:10, 4:10] = INTERIOR
    targets[6:8, 6:8] = 0                      # a hole inside the cell
    targets[15:18, 15:18] = BOUNDARY           # foreground without a seed, 9 pixels
    targets[0, 19] = INTERIOR                  # a one-pixel seed
    probs = one_hot(targets)
    result = instances_from_probabilities(probs, InstanceConfig(min_size=5, min_seed_size=2))
    assert result.max() == 2
    assert (result[2:12, 2:12] == result[5, 5]).all()            # hole filled
    assert (result[15:18, 15:18] == 2).all() and result[0, 19] == 0
    dropped = instances_from_probabilities(probs, InstanceConfig(min_size=5, min_seed_size=2,
                                                                 keep_unseeded=False, fill_holes=False))
    assert dropped.max() == 1 and dropped[6, 6] == 0 and (dropped[15:18, 15:18] == 0).all()
    tiny = instances_from_probabilities(probs, InstanceConfig(min_size=10, min_seed_size=2))
    assert tiny.max() == 1


def test_hole_touching_the_image_edge_is_not_filled():
    targets = np.zeros((10, 10), np.uint8)
    targets[:, 2:8] = INTERIOR
    targets[0:4, 4:6] = 0                       # a notch open to the top edge
    result = instances_from_probabilities(one_hot(targets), InstanceConfig(min_size=1, min_seed_size=1))
    assert result[1, 4] == 0 and result[5, 4] == 1


def test_ids_are_consecutive_in_raster_order():
    targets = np.zeros((10, 10), np.uint8)
    targets[6:9, 1:4] = INTERIOR
    targets[1:4, 6:9] = INTERIOR
    result = instances_from_probabilities(one_hot(targets), InstanceConfig(min_size=1, min_seed_size=1))
    assert result[2, 7] == 1 and result[7, 2] == 2 and result.dtype == np.uint32


def test_two_class_and_single_output_models():
    assert class_roles(("background", "foreground"), 2) == (0, 1)
    assert class_roles((), 1) == (None, 0)
    assert class_roles(("background", "interior", "boundary"), 3) == (0, 1)
    fg = np.zeros((8, 8), np.float32)
    fg[1:4, 1:4] = fg[5:7, 5:7] = 0.9
    two = instances_from_probabilities(np.stack([1 - fg, fg]), InstanceConfig(min_size=1, min_seed_size=1),
                                       ("background", "foreground"))
    one = instances_from_probabilities(fg[None], InstanceConfig(min_size=1, min_seed_size=1), ())
    np.testing.assert_array_equal(two, one)
    assert two.max() == 2


def test_instance_config_validation():
    with pytest.raises(ValueError, match="seed_threshold"):
        InstanceConfig(seed_threshold=1.5)
    with pytest.raises(ValueError, match="min_size"):
        InstanceConfig(min_size=-1)
    with pytest.raises(ValueError, match="unknown keys"):
        InstanceConfig.from_dict({"min_sise": 3})
    assert InstanceConfig.from_dict(InstanceConfig(min_size=7).to_dict()) == InstanceConfig(min_size=7)



def test_two_level_seeds_keep_a_textured_cell_whole_and_part_touching_cells():
    probs = two_level_probabilities()
    one = InstanceConfig(foreground_threshold=0.5, seed_threshold=0.8, min_seed_size=1, min_size=20, max_growth=40)
    two = InstanceConfig(foreground_threshold=0.5, seed_threshold=0.8, seed_low_threshold=0.4, min_seed_size=1,
                         min_size=20, max_growth=40)
    single = instances_from_probabilities(probs, one)
    double = instances_from_probabilities(probs, two)
    assert len(np.unique(single[5:35, 5:35])) == 2          # one threshold: the textured cell splits in two
    assert len(np.unique(double[5:35, 5:35])) == 1          # two levels: it stays one cell
    assert (double[5:35, 5:35] > 0).all()
    assert len(np.unique(double[5:35, 45:75])) == 2         # the touching cells are parted
    assert double[20, 50] != double[20, 70]


def test_seed_low_threshold_validation():
    with pytest.raises(ValueError, match="seed_low_threshold must be 0 .off. or between 0 and seed_threshold"):
        InstanceConfig(seed_threshold=0.6, seed_low_threshold=0.7)
    with pytest.raises(ValueError, match="seed_low_threshold"):
        InstanceConfig(seed_low_threshold=-0.1)
    config = InstanceConfig(seed_threshold=0.7, seed_low_threshold=0.4)
    assert InstanceConfig.from_dict(config.to_dict()) == config
