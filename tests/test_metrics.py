"""Instance metrics: hand-computed examples, streaming over zarr, the evaluate command, properties."""

from __future__ import annotations

import json
from collections import Counter

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from tiled_unet.cli.main import main
from tiled_unet.metrics import (DEFAULT_THRESHOLDS, MatchStats, evaluate, format_table, match,
                                overlap_table)


def labels(shape, *boxes):
    """A label image with ``(id, slices)`` boxes painted in order."""
    image = np.zeros(shape, np.int32)
    for label, where in boxes:
        image[where] = label
    return image


def counts(stats: MatchStats) -> tuple[int, int, int]:
    return stats.tp, stats.fp, stats.fn


def reference_table(pred: np.ndarray, gt: np.ndarray) -> dict[tuple[int, int], int]:
    """Overlaps of foreground pairs, counted pixel by pixel."""
    pairs = Counter(zip(pred.ravel().tolist(), gt.ravel().tolist()))
    return {pair: n for pair, n in pairs.items() if pair[0] and pair[1]}


def table_as_dict(table) -> dict[tuple[int, int], int]:
    return {(int(p), int(g)): int(n) for p, g, n in zip(table.pair_pred, table.pair_gt, table.pair_counts)}


def assert_same_stats(a: list[MatchStats], b: list[MatchStats]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.to_dict() == pytest.approx(y.to_dict(), abs=1e-12)


# ---------------------------------------------------------------- hand-computed examples

def test_perfect_match_with_other_ids():
    gt = labels((8, 10), (1, np.s_[0:3, 0:4]), (2, np.s_[4:8, 5:10]))
    pred = labels((8, 10), (40, np.s_[0:3, 0:4]), (9, np.s_[4:8, 5:10]))
    for stats in evaluate(pred, gt):
        assert (stats.n_true, stats.n_pred) == (2, 2)
        assert counts(stats) == (2, 0, 0)
        assert (stats.precision, stats.recall, stats.f1, stats.ap) == (1.0, 1.0, 1.0, 1.0)
        assert stats.mean_matched_iou == 1.0
        assert (stats.merges, stats.splits) == (0, 0)


def test_shifted_object_iou_0_6():
    # two 4x4 squares, one column apart: overlap 4*3 = 12, union 16 + 16 - 12 = 20, IoU 0.6
    gt = labels((6, 8), (1, np.s_[1:5, 1:5]))
    pred = labels((6, 8), (1, np.s_[1:5, 2:6]))
    table = overlap_table(pred, gt)
    assert table_as_dict(table) == {(1, 1): 12}
    assert table.iou().tolist() == [0.6]
    at_half, at_iou, at_three_quarters = evaluate(pred, gt, thresholds=[0.5, 0.6, 0.75])
    assert counts(at_half) == (1, 0, 0) and at_half.ap == 1.0
    assert at_half.mean_matched_iou == pytest.approx(0.6)
    assert counts(at_iou) == (1, 0, 0)  # IoU >= threshold matches
    assert counts(at_three_quarters) == (0, 1, 1)
    assert (at_three_quarters.precision, at_three_quarters.recall, at_three_quarters.ap) == (0.0, 0.0, 0.0)
    assert at_three_quarters.mean_matched_iou == 0.0
    assert match(pred, gt, 0.75) == at_three_quarters


def test_merge_of_two_true_objects():
    # gt 1 and 2: 3x4 each (12 px); pred 5 covers both (24 px): IoU 12/24 = 0.5 with each.
    # Both pairs are candidates at 0.5, but one-to-one matching keeps only one of them.
    gt = labels((4, 9), (1, np.s_[0:3, 0:4]), (2, np.s_[0:3, 4:8]))
    pred = labels((4, 9), (5, np.s_[0:3, 0:8]))
    at_half, above = evaluate(pred, gt, thresholds=[0.5, 0.55])
    assert counts(at_half) == (1, 0, 1)
    assert (at_half.precision, at_half.recall) == (1.0, 0.5)
    assert at_half.f1 == pytest.approx(2 / 3) and at_half.ap == 0.5
    assert at_half.mean_matched_iou == 0.5
    assert counts(above) == (0, 1, 2)
    # both true objects lie entirely in pred 5: k = 2, merges = 1; pred 5 has half of its
    # pixels in each true object, not more: no split
    assert (at_half.merges, at_half.splits) == (1, 0) == (above.merges, above.splits)


def test_three_true_objects_merged_count_two():
    gt = labels((3, 9), (1, np.s_[:, 0:3]), (2, np.s_[:, 3:6]), (3, np.s_[:, 6:9]))
    pred = labels((3, 9), (1, np.s_[:, 0:9]))
    stats = match(pred, gt)
    # IoU 9/27 = 1/3 with each: no match at 0.5
    assert counts(stats) == (0, 1, 3)
    assert (stats.merges, stats.splits) == (2, 0)


def test_split_of_one_true_object():
    # gt 1: 4x6 = 24 px; pred 5: columns 0-3 (16 px, IoU 16/24 = 2/3), pred 8: columns 4-5
    # (8 px, IoU 8/24 = 1/3)
    gt = labels((5, 7), (1, np.s_[0:4, 0:6]))
    pred = labels((5, 7), (5, np.s_[0:4, 0:4]), (8, np.s_[0:4, 4:6]))
    at_half, at_seven_tenths = evaluate(pred, gt, thresholds=[0.5, 0.7])
    assert counts(at_half) == (1, 1, 0)
    assert (at_half.precision, at_half.recall, at_half.ap) == (0.5, 1.0, 0.5)
    assert at_half.f1 == pytest.approx(2 / 3)  # 2*1 / (2*1 + 1 + 0)
    assert at_half.mean_matched_iou == pytest.approx(2 / 3)
    assert counts(at_seven_tenths) == (0, 2, 1)
    # both predicted objects lie entirely inside gt 1: splits = 1; gt 1 has 16/24 > 1/2 of its
    # pixels in pred 5 only: no merge
    assert (at_half.merges, at_half.splits) == (0, 1)


def test_exactly_half_is_not_inside():
    # gt A (4 px) lies entirely in pred P (8 px); gt B (8 px) has 4 of its 8 px in P, only
    # half: P holds one true object, no merge. Swapping the roles gives no split.
    gt = labels((2, 6), (1, np.s_[:, 0:2]), (2, np.s_[:, 2:6]))
    pred = labels((2, 6), (1, np.s_[:, 0:4]))
    stats = match(pred, gt)
    assert (stats.merges, stats.splits) == (0, 0)
    swapped = match(gt, pred)
    assert (swapped.merges, swapped.splits) == (0, 0)
    # one more pixel of B in P (5 of 8): now both true objects are inside P
    pred[0, 4] = 1
    assert (match(pred, gt).merges, match(gt, pred).splits) == (1, 1)


def test_extra_and_missing_objects():
    gt = labels((6, 12), (1, np.s_[0:3, 0:3]), (2, np.s_[4:6, 8:12]))
    pred = labels((6, 12), (1, np.s_[0:3, 0:3]), (3, np.s_[0:2, 6:9]))
    stats = match(pred, gt)
    assert counts(stats) == (1, 1, 1)
    assert (stats.precision, stats.recall, stats.f1) == (0.5, 0.5, 0.5)
    assert stats.ap == pytest.approx(1 / 3)
    assert (stats.merges, stats.splits) == (0, 0)


def test_non_consecutive_and_huge_ids():
    gt = labels((4, 12), (5, np.s_[:, 0:4]), (1000, np.s_[:, 4:8]), (70000, np.s_[:, 8:12])).astype(np.uint32)
    pred = np.zeros((4, 12), np.int64)
    pred[:, 0:4], pred[:, 4:8], pred[:, 8:11] = 2**62, 3, 2**40  # last one: IoU 9/12 = 0.75
    table = overlap_table(pred, gt)
    assert table_as_dict(table) == {(3, 1000): 16, (2**40, 70000): 12, (2**62, 5): 16}
    assert table.pred_ids.tolist() == [3, 2**40, 2**62] and table.pred_sizes.tolist() == [16, 12, 16]
    assert table.gt_ids.tolist() == [5, 1000, 70000] and table.gt_sizes.tolist() == [16, 16, 16]
    at_half, at_high = evaluate(pred, gt, thresholds=[0.5, 0.8])
    assert counts(at_half) == (3, 0, 0)
    assert at_half.mean_matched_iou == pytest.approx((1 + 1 + 0.75) / 3)
    assert counts(at_high) == (2, 1, 1)


def test_3d_example():
    # gt 1: z 0-1, 3x3 (18 voxels); pred 1 is the same box one plane deeper: overlap 9,
    # union 27, IoU 1/3. gt 2 = pred 2 (16 voxels), IoU 1.
    gt = labels((4, 6, 6), (1, np.s_[0:2, 0:3, 0:3]), (2, np.s_[0:4, 4:6, 4:6]))
    pred = labels((4, 6, 6), (1, np.s_[1:3, 0:3, 0:3]), (2, np.s_[0:4, 4:6, 4:6]))
    low, half = evaluate(pred, gt, thresholds=[0.3, 0.5])
    assert counts(low) == (2, 0, 0)
    assert low.mean_matched_iou == pytest.approx((1 / 3 + 1) / 2)
    assert counts(half) == (1, 1, 1) and half.mean_matched_iou == 1.0
    assert (half.merges, half.splits) == (0, 0)  # 9 of 18 voxels is not more than half


def test_both_empty_is_perfect():
    empty = np.zeros((5, 5), np.uint8)
    for stats in evaluate(empty, empty):
        assert (stats.n_true, stats.n_pred) == (0, 0) and counts(stats) == (0, 0, 0)
        assert (stats.precision, stats.recall, stats.f1, stats.ap) == (1.0, 1.0, 1.0, 1.0)
        assert stats.mean_matched_iou == 0.0


def test_one_side_empty():
    gt = labels((5, 5), (1, np.s_[0:2, 0:2]), (4, np.s_[3:5, 3:5]))
    empty = np.zeros_like(gt)
    missed = match(empty, gt)
    assert counts(missed) == (0, 0, 2)
    assert (missed.precision, missed.recall, missed.f1, missed.ap) == (0.0, 0.0, 0.0, 0.0)
    invented = match(gt, empty)
    assert counts(invented) == (0, 2, 0)
    assert (invented.precision, invented.recall, invented.f1, invented.ap) == (0.0, 0.0, 0.0, 0.0)


def test_matching_maximises_number_of_matches():
    # one row: gt X = cells 0-9, gt Y = cells 20-29; pred A = cells 0-8 and cell 20, pred B = cell 9.
    # IoU(A, X) = 9/(10+10-9) = 9/11, IoU(A, Y) = 1/(10+10-1) = 1/19, IoU(B, X) = 1/10.
    # At 0.05 all three pairs are candidates: A-Y and B-X (2 matches) beat A-X alone, even
    # though A-X has the larger IoU sum.
    gt = np.zeros((1, 30), np.uint8)
    gt[0, 0:10], gt[0, 20:30] = 1, 2
    pred = np.zeros_like(gt)
    pred[0, 0:9], pred[0, 20], pred[0, 9] = 1, 1, 2
    low, half = evaluate(pred, gt, thresholds=[0.05, 0.5])
    assert counts(low) == (2, 0, 0)
    assert low.mean_matched_iou == pytest.approx((1 / 19 + 1 / 10) / 2)
    assert counts(half) == (1, 1, 1)
    assert half.mean_matched_iou == pytest.approx(9 / 11)


def test_bool_and_integral_float_labels():
    gt = labels((6, 8), (1, np.s_[1:5, 1:5]))
    pred = labels((6, 8), (1, np.s_[1:5, 2:6]))
    expected = evaluate(pred, gt)
    assert evaluate(pred.astype(np.float32), gt.astype(np.float64)) == expected
    assert evaluate(pred.astype(bool), gt > 0) == expected
    assert evaluate(pred.tolist(), gt.tolist()) == expected


def test_default_thresholds():
    assert DEFAULT_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    image = labels((4, 4), (1, np.s_[0:2, 0:2]))
    assert [s.threshold for s in evaluate(image, image)] == list(DEFAULT_THRESHOLDS)


def test_format_table():
    gt = labels((6, 8), (1, np.s_[1:5, 1:5]))
    pred = labels((6, 8), (1, np.s_[1:5, 2:6]))
    text = format_table(evaluate(pred, gt, thresholds=[0.5, 0.75]))
    lines = text.splitlines()
    assert lines[0].split() == ["true", "objects:", "1", "predicted", "objects:", "1", "merges:", "0",
                                "splits:", "0"]
    assert lines[2].split() == ["0.50", "1", "0", "0", "1.000", "1.000", "1.000", "1.000", "0.600"]
    assert lines[3].split() == ["0.75", "0", "1", "1", "0.000", "0.000", "0.000", "0.000", "0.000"]
    assert lines[4].endswith("0.50-0.75: 0.500")


# ---------------------------------------------------------------- invalid input

@pytest.mark.parametrize("pred, gt, message", [
    (np.zeros((4, 5), int), np.zeros((5, 4), int), r"\(4, 5\).*\(5, 4\)"),
    (np.full((3, 3), 1.5), np.zeros((3, 3), int), "whole numbers.*1.5"),
    (np.full((3, 3), np.nan), np.zeros((3, 3), int), "NaN"),
    (np.zeros((3, 3), int), np.full((3, 3), -2), "must be >= 0.*-2"),
    (np.zeros((3, 3), complex), np.zeros((3, 3), int), "integer labels.*complex"),
    (np.array(["a", "b"]), np.array([0, 1]), "integer labels"),
    (np.array(3), np.array(3), "scalar"),
    (np.full((2, 2), 2**63, np.uint64), np.zeros((2, 2), int), "2\\*\\*63"),
])
def test_invalid_labels(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        evaluate(pred, gt)


def test_invalid_arguments(tmp_path):
    image = np.zeros((3, 3), int)
    with pytest.raises(TypeError, match="numpy, zarr or dask array or a path, got dict"):
        match({}, image)
    for threshold in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            match(image, image, threshold)
    with pytest.raises(TypeError, match="got str"):
        match(image, image, "0.5")
    with pytest.raises(TypeError, match="sequence"):
        evaluate(image, image, thresholds=0.5)
    with pytest.raises(ValueError, match="empty"):
        evaluate(image, image, thresholds=[])
    with pytest.raises(ValueError, match="slab_voxels"):
        overlap_table(image, image, slab_voxels=0)
    with pytest.raises(FileNotFoundError, match="gt: no such file"):
        overlap_table(image, tmp_path / "missing.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read pred .*junk.tif"):
        overlap_table(junk, image)


# ---------------------------------------------------------------- streaming

@pytest.fixture
def random_labels():
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 6, size=(9, 12, 13)).astype(np.uint16)
    gt = np.repeat(rng.integers(0, 40, size=(9, 12, 1)), 13, axis=2).astype(np.int32) * 3
    return pred, gt


@pytest.mark.parametrize("slab_voxels", [1, 200, 400, 10**6])
def test_zarr_on_disk_streams_to_the_same_table(tmp_path, random_labels, slab_voxels):
    pred, gt = random_labels
    stores = []
    for name, data in (("pred.zarr", pred), ("gt.zarr", gt)):
        array = zarr.open_array(str(tmp_path / name), mode="w", shape=data.shape, chunks=(2, 5, 5),
                                dtype=data.dtype)
        array[:] = data
        stores.append(zarr.open_array(str(tmp_path / name), mode="r"))
    streamed = overlap_table(*stores, slab_voxels=slab_voxels)
    in_memory = overlap_table(pred, gt)
    assert table_as_dict(streamed) == table_as_dict(in_memory) == reference_table(pred, gt)
    for field in ("pred_ids", "pred_sizes", "gt_ids", "gt_sizes"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(in_memory, field))
    assert table_as_dict(overlap_table(tmp_path / "pred.zarr", tmp_path / "gt.zarr", slab_voxels)) \
        == reference_table(pred, gt)
    assert evaluate(*stores, slab_voxels=slab_voxels) == evaluate(pred, gt)


def test_dask_input(random_labels):
    pred, gt = random_labels
    lazy = da.from_array(pred, chunks=(4, 6, 6)), da.from_array(gt, chunks=(3, 12, 13))
    assert table_as_dict(overlap_table(*lazy, slab_voxels=500)) == reference_table(pred, gt)


class RecordingArray:
    """A numpy-backed array that records the shape of every read."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, ...] | None = None):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.chunks = chunks
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        block = self.data[key]
        self.reads.append(block.shape)
        return block


def test_reads_only_slabs(random_labels):
    pred, gt = random_labels
    recorded = RecordingArray(pred), RecordingArray(gt)
    table = overlap_table(*recorded, slab_voxels=2 * 12 * 13)
    assert table_as_dict(table) == reference_table(pred, gt)
    for array in recorded:
        assert array.reads == [(2, 12, 13)] * 4 + [(1, 12, 13)]


def test_slabs_follow_the_chunks_along_axis_0(random_labels):
    pred, gt = random_labels
    # 3 planes fit in a slab, but chunks hold 2 planes: read 2 at a time, never half a chunk
    recorded = RecordingArray(pred, chunks=(2, 5, 5)), RecordingArray(gt)
    assert table_as_dict(overlap_table(*recorded, slab_voxels=3 * 12 * 13)) == reference_table(pred, gt)
    assert recorded[0].reads == recorded[1].reads == [(2, 12, 13)] * 4 + [(1, 12, 13)]


# ---------------------------------------------------------------- the evaluate command

@pytest.fixture
def label_files(tmp_path):
    gt = labels((6, 8), (1, np.s_[1:5, 1:5]))
    pred = labels((6, 8), (7, np.s_[1:5, 2:6]), (9, np.s_[0, 7]))  # IoU 0.6 and one extra object
    tifffile.imwrite(tmp_path / "pred.tif", pred.astype(np.uint16))
    tifffile.imwrite(tmp_path / "gt.tif", gt.astype(np.uint16))
    tifffile.imwrite(tmp_path / "gt_float.tif", gt.astype(np.float32))
    zarr.open_array(str(tmp_path / "gt.zarr"), mode="w", shape=gt.shape, chunks=(2, 4), dtype="u4")[:] = gt
    return tmp_path


def test_cli_table(label_files, capsys):
    rc = main(["evaluate", str(label_files / "pred.tif"), str(label_files / "gt.tif"),
               "--thresholds", "0.5", "0.75"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[0].split()[2] == "1" and lines[0].split()[5] == "2"
    # at 0.5: tp 1, fp 1 (the extra object), fn 0; precision 1/2, recall 1, f1 2/3, ap 1/2
    assert lines[2].split() == ["0.50", "1", "1", "0", "0.500", "1.000", "0.667", "0.500", "0.600"]
    assert lines[3].split() == ["0.75", "0", "2", "1", "0.000", "0.000", "0.000", "0.000", "0.000"]
    assert lines[4].endswith(": 0.250")


@pytest.mark.parametrize("gt_name", ["gt.tif", "gt_float.tif", "gt.zarr"])
def test_cli_json(label_files, capsys, gt_name):
    rc = main(["evaluate", str(label_files / "pred.tif"), str(label_files / gt_name), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert rc == 0
    rows = document["per_threshold"]
    assert [row["threshold"] for row in rows] == list(DEFAULT_THRESHOLDS)
    assert [row["tp"] for row in rows] == [1, 1, 1] + [0] * 7  # IoU 0.6 passes 0.5, 0.55, 0.6
    assert rows[0]["fp"] == 1 and rows[0]["fn"] == 0 and rows[0]["ap"] == 0.5
    assert rows[0]["mean_matched_iou"] == pytest.approx(0.6)
    summary = document["summary"]
    assert (summary["n_true"], summary["n_pred"], summary["merges"], summary["splits"]) == (1, 2, 0, 0)
    assert summary["mean_ap"] == pytest.approx(3 * 0.5 / 10)


def test_cli_errors(label_files, capsys):
    tifffile.imwrite(label_files / "small.tif", np.zeros((3, 3), np.uint8))
    (label_files / "junk.tif").write_bytes(b"junk")
    tifffile.imwrite(label_files / "fraction.tif", np.full((6, 8), 0.5, np.float32))
    pred = str(label_files / "pred.tif")
    cases = [([pred, str(label_files / "small.tif")], "(6, 8) and gt (3, 3)"),
             ([pred, str(label_files / "missing.tif")], "no such file"),
             ([str(label_files / "junk.tif"), pred], "cannot read pred"),
             ([str(label_files / "fraction.tif"), pred], "whole numbers"),
             ([pred, pred, "--thresholds", "1.5"], "(0, 1]")]
    for arguments, message in cases:
        assert main(["evaluate", *arguments]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert message in captured.err and captured.err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", pred, pred, "--thresholds", "half"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------- properties

label_images = st.tuples(st.sampled_from([(7, 9), (3, 4, 5), (1, 6)]), st.integers(1, 6)).flatmap(
    lambda spec: arrays(np.int64, spec[0], elements=st.integers(0, spec[1])))


@settings(max_examples=40, deadline=None)
@given(label_images)
def test_identical_images_match_perfectly(image):
    n_objects = np.unique(image[image > 0]).size
    for stats in evaluate(image, image, thresholds=[0.5, 0.95, 1.0]):
        assert (stats.n_true, stats.n_pred) == (n_objects, n_objects)
        assert counts(stats) == (n_objects, 0, 0)
        assert (stats.precision, stats.recall, stats.f1, stats.ap) == (1.0, 1.0, 1.0, 1.0)
        assert stats.mean_matched_iou == (1.0 if n_objects else 0.0)
        assert (stats.merges, stats.splits) == (0, 0)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_renaming_predicted_objects_changes_nothing(data):
    shape = data.draw(st.sampled_from([(6, 7), (3, 4, 4)]))
    pred = data.draw(arrays(np.int64, shape, elements=st.integers(0, 5)))
    gt = data.draw(arrays(np.int64, shape, elements=st.integers(0, 5)))
    new_ids = data.draw(st.lists(st.integers(1, 2**40), min_size=5, max_size=5, unique=True))
    renamed = np.array([0, *new_ids])[pred]
    thresholds = [0.1, 0.3, 0.5, 0.75]
    assert_same_stats(evaluate(renamed, gt, thresholds), evaluate(pred, gt, thresholds))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_true_positives_are_a_maximum_matching(data):
    shape = data.draw(st.sampled_from([(5, 6), (2, 3, 4)]))
    pred = data.draw(arrays(np.int64, shape, elements=st.integers(0, 6)))
    gt = data.draw(arrays(np.int64, shape, elements=st.integers(0, 6)))
    threshold = data.draw(st.sampled_from([0.05, 0.2, 1 / 3, 0.5, 0.7]))
    pred_sizes, gt_sizes = Counter(pred.ravel().tolist()), Counter(gt.ravel().tolist())
    candidates = [(p, g) for (p, g), n in reference_table(pred, gt).items()
                  if n / (pred_sizes[p] + gt_sizes[g] - n) >= threshold]
    graph = csr_matrix((np.ones(len(candidates)), ([p for p, _ in candidates], [g for _, g in candidates])),
                       shape=(7, 7))
    expected = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    stats = match(pred, gt, threshold)
    assert stats.tp == expected
    assert (stats.n_true, stats.n_pred) == (len(set(gt_sizes) - {0}), len(set(pred_sizes) - {0}))
