"""Instance segmentation metrics: object matching by IoU, precision, recall, AP, merges, splits.

Label images hold integers: 0 is background, every other value one object (IDs need not
be consecutive); 2D, 3D or any other number of axes. Inputs may be numpy, zarr or dask
arrays or paths (TIFF file, zarr directory or ``.zip``). They are read in slabs along
axis 0, so volumes larger than memory can be evaluated.

Accepted dtypes: integers, bool (labels 0/1) and floats whose values are all whole
numbers (a label image saved as float32); negative values, NaN and fractional values
raise ``ValueError``.

Matching is one-to-one. A predicted and a true object are a candidate pair when their
IoU is **>=** the threshold; the matching takes as many candidate pairs as possible and,
among such matchings, the one with the largest total IoU. For thresholds above 0.5 an
object has at most one candidate, so this is simply every candidate pair.

``ap = tp / (tp + fp + fn)`` is the "average precision" of the cell-segmentation literature
(2018 Data Science Bowl, StarDist, Cellpose). A ratio whose denominator is zero is 0,
except when both images are empty: then precision, recall, f1 and ap are all 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .io.arrays import open_image

DEFAULT_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
DEFAULT_SLAB_VOXELS = 16 * 2**20
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class MatchStats:
    """Object-level scores of a predicted label image against the true one at one IoU threshold."""

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float
    mean_matched_iou: float
    merges: int
    splits: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Overlaps:
    """Pixel counts of every overlapping (predicted object, true object) pair, and object sizes.

    ``pred_ids``/``gt_ids`` are sorted object IDs (background excluded) with their sizes in
    ``pred_sizes``/``gt_sizes``; pair ``i`` is objects ``pair_pred[i]`` and ``pair_gt[i]``
    sharing ``pair_counts[i]`` pixels, sorted by (pred ID, true ID).
    """

    pred_ids: np.ndarray
    pred_sizes: np.ndarray
    gt_ids: np.ndarray
    gt_sizes: np.ndarray
    pair_pred: np.ndarray
    pair_gt: np.ndarray
    pair_counts: np.ndarray

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def n_true(self) -> int:
        return int(self.gt_ids.size)

    def pair_pred_sizes(self) -> np.ndarray:
        return self.pred_sizes[np.searchsorted(self.pred_ids, self.pair_pred)]

    def pair_gt_sizes(self) -> np.ndarray:
        return self.gt_sizes[np.searchsorted(self.gt_ids, self.pair_gt)]

    def iou(self) -> np.ndarray:
        """IoU of every pair: overlap / (pred size + true size - overlap)."""
        union = self.pair_pred_sizes() + self.pair_gt_sizes() - self.pair_counts
        return self.pair_counts / np.maximum(union, 1)


# ---------------------------------------------------------------- reading label images

def open_labels(labels: Any, name: str = "labels") -> Any:
    """A label image as an array-like with lazy slicing; ``name`` is used in error messages."""
    if isinstance(labels, (str, os.PathLike)):
        if not os.path.exists(labels):
            raise FileNotFoundError(f"{name}: no such file or directory: {os.fspath(labels)}")
        try:
            array = open_image(labels)
        except (ValueError, OSError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read {name} {os.fspath(labels)}: {err}") from None
    elif isinstance(labels, (list, tuple)):
        array = np.asarray(labels)
    elif hasattr(labels, "shape") and hasattr(labels, "dtype") and hasattr(labels, "__getitem__"):
        array = labels
    else:
        raise TypeError(f"{name}: expected a label image as a numpy, zarr or dask array or a path, "
                        f"got {type(labels).__name__}")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected integer labels (0 = background), got dtype {dtype}")
    if len(array.shape) == 0:
        raise ValueError(f"{name}: expected a label image with at least one axis, got a scalar")
    return array


def _as_int64(slab: np.ndarray, name: str) -> np.ndarray:
    """A slab of labels as int64, refusing negative, fractional or too large values."""
    kind = slab.dtype.kind
    if slab.size == 0 or kind == "b":
        return slab.astype(np.int64)
    if kind == "f":
        if not np.all(np.isfinite(slab)):
            raise ValueError(f"{name}: labels must be whole numbers, found NaN or infinity "
                             f"(dtype {slab.dtype})")
        fractional = slab[slab != np.floor(slab)]
        if fractional.size:
            raise ValueError(f"{name}: labels must be whole numbers, found {fractional[0]!r} "
                             f"(dtype {slab.dtype})")
    if kind in "if" and slab.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0 (0 = background), found {slab.min()!r}")
    if (slab.max() >= 2.0**63) if kind == "f" else (kind == "u" and slab.max() > _INT64_MAX):
        raise ValueError(f"{name}: labels must be < 2**63, found {slab.max()!r}")
    return slab.astype(np.int64, copy=False)


def _slab_rows(shape: tuple[int, ...], chunks: Any, slab_voxels: int) -> int:
    """Planes per slab: about ``slab_voxels`` voxels, a multiple of the axis-0 chunk if one fits."""
    plane = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    rows = max(1, slab_voxels // max(1, plane))
    if chunks is not None:
        first = chunks[0]
        first = max(first, default=0) if isinstance(first, tuple) else int(first)  # dask: tuples
        if 0 < first <= rows:
            rows -= rows % first
    return rows


# ---------------------------------------------------------------- the contingency table

def _reduce_pairs(pred: np.ndarray, gt: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sum the counts of equal (pred, gt) pairs; the result is sorted by (pred, gt)."""
    if pred.size == 0:
        return pred, gt, counts
    order = np.lexsort((gt, pred))
    pred, gt, counts = pred[order], gt[order], counts[order]
    starts = np.flatnonzero(np.r_[True, (pred[1:] != pred[:-1]) | (gt[1:] != gt[:-1])])
    return pred[starts], gt[starts], np.add.reduceat(counts, starts)


def _count_pairs(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (pred, gt) pairs of two flat int64 arrays with their pixel counts."""
    if pred.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    gt_span = int(gt.max()) + 1
    bins = (int(pred.max()) + 1) * gt_span
    if bins <= max(pred.size, 2**16):
        counts = np.bincount(pred * gt_span + gt, minlength=bins)
        keys = np.flatnonzero(counts)
        return keys // gt_span, keys % gt_span, counts[keys].astype(np.int64)
    if bins <= _INT64_MAX:
        keys, counts = np.unique(pred * gt_span + gt, return_counts=True)
        return keys // gt_span, keys % gt_span, counts.astype(np.int64)
    # IDs too large for a combined int64 key: combine their ranks instead
    pred_ids, pred_rank = np.unique(pred, return_inverse=True)
    gt_ids, gt_rank = np.unique(gt, return_inverse=True)
    keys, counts = np.unique(pred_rank.ravel() * gt_ids.size + gt_rank.ravel(), return_counts=True)
    return pred_ids[keys // gt_ids.size], gt_ids[keys % gt_ids.size], counts.astype(np.int64)


def overlap_table(pred: Any, gt: Any, slab_voxels: int = DEFAULT_SLAB_VOXELS) -> Overlaps:
    """The overlap (contingency) table of two label images of the same shape.

    Both are read in slabs of about ``slab_voxels`` voxels along axis 0; only the table
    of distinct label pairs is kept between slabs.
    """
    if isinstance(slab_voxels, bool) or not isinstance(slab_voxels, (int, np.integer)) or slab_voxels < 1:
        raise ValueError(f"slab_voxels must be a positive integer, got {slab_voxels!r}")
    pred, gt = open_labels(pred, "pred"), open_labels(gt, "gt")
    shape = tuple(int(s) for s in pred.shape)
    if shape != tuple(int(s) for s in gt.shape):
        raise ValueError(f"pred and gt must have the same shape, got pred {shape} and gt {tuple(gt.shape)}")
    rows = _slab_rows(shape, getattr(pred, "chunks", None) or getattr(gt, "chunks", None), int(slab_voxels))
    # pairs found in each slab; summed whenever they outgrow the summed table (amortised cost)
    pending, summed_size, pending_size = [(np.zeros(0, np.int64),) * 3], 0, 0
    for start in range(0, shape[0], rows):
        p = _as_int64(np.asarray(pred[start:start + rows]), "pred").ravel()
        g = _as_int64(np.asarray(gt[start:start + rows]), "gt").ravel()
        pending.append(_count_pairs(p, g))
        pending_size += pending[-1][0].size
        if pending_size > summed_size:
            pending = [_reduce_pairs(*(np.concatenate(column) for column in zip(*pending)))]
            summed_size, pending_size = pending[0][0].size, 0
    pair_pred, pair_gt, counts = _reduce_pairs(*(np.concatenate(column) for column in zip(*pending)))
    pred_ids, pred_sizes = _reduce_pairs(pair_pred, np.zeros_like(pair_pred), counts)[::2]
    gt_ids, gt_sizes = _reduce_pairs(pair_gt, np.zeros_like(pair_gt), counts)[::2]
    foreground = (pair_pred > 0) & (pair_gt > 0)
    return Overlaps(pred_ids=pred_ids[pred_ids > 0], pred_sizes=pred_sizes[pred_ids > 0],
                    gt_ids=gt_ids[gt_ids > 0], gt_sizes=gt_sizes[gt_ids > 0],
                    pair_pred=pair_pred[foreground], pair_gt=pair_gt[foreground],
                    pair_counts=counts[foreground])


# ---------------------------------------------------------------- matching and scores

def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise TypeError(f"an IoU threshold must be a number in (0, 1], got {type(threshold).__name__}")
    if not 0 < threshold <= 1:
        raise ValueError(f"an IoU threshold must be in (0, 1], got {threshold!r}")
    return float(threshold)


def _check_thresholds(thresholds: Any) -> list[float]:
    if isinstance(thresholds, np.ndarray):
        thresholds = thresholds.ravel().tolist()
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
        raise TypeError(f"thresholds must be a sequence of numbers in (0, 1], "
                        f"got {type(thresholds).__name__}")
    checked = [_check_threshold(t) for t in thresholds]
    if not checked:
        raise ValueError("thresholds must hold at least one IoU threshold, got an empty sequence")
    return checked


def _matched_ious(pair_pred: np.ndarray, pair_gt: np.ndarray, ious: np.ndarray) -> np.ndarray:
    """IoUs of a maximum one-to-one matching of candidate pairs (most matches, then largest IoU sum)."""
    if ious.size == 0:
        return ious
    pred_rank = np.unique(pair_pred, return_inverse=True)[1].ravel()
    gt_rank = np.unique(pair_gt, return_inverse=True)[1].ravel()
    n_pred, n_gt = int(pred_rank.max()) + 1, int(gt_rank.max()) + 1
    if n_pred == ious.size and n_gt == ious.size:  # every object has one candidate at most
        return ious
    graph = coo_matrix((np.ones(ious.size), (pred_rank, n_pred + gt_rank)), shape=(n_pred + n_gt,) * 2)
    component = connected_components(graph, directed=False)[1][pred_rank]
    matched = []
    for c in np.unique(component):
        members = np.flatnonzero(component == c)
        if members.size == 1:
            matched.append(ious[members])
            continue
        rows = np.unique(pred_rank[members], return_inverse=True)
        cols = np.unique(gt_rank[members], return_inverse=True)
        # weight K + IoU with K above any matching size: more matches always win, then more IoU
        bonus = min(rows[0].size, cols[0].size) + 1.0
        weights = np.zeros((rows[0].size, cols[0].size))
        weights[rows[1].ravel(), cols[1].ravel()] = bonus + ious[members]
        r, c_ = linear_sum_assignment(weights, maximize=True)
        chosen = weights[r, c_]
        matched.append(chosen[chosen > 0] - bonus)
    return np.concatenate(matched)


def _merges_and_splits(overlaps: Overlaps) -> tuple[int, int]:
    """True objects lost to merging, and predicted objects beyond one per true object.

    A true object is inside a predicted one when more than half of its pixels are; merges
    sums ``k - 1`` over predicted objects holding ``k >= 1`` true ones. Splits: the same with
    the roles swapped.
    """
    counts = overlaps.pair_counts
    inside_pred = 2 * counts > overlaps.pair_gt_sizes()
    merges = int(inside_pred.sum()) - np.unique(overlaps.pair_pred[inside_pred]).size
    inside_gt = 2 * counts > overlaps.pair_pred_sizes()
    splits = int(inside_gt.sum()) - np.unique(overlaps.pair_gt[inside_gt]).size
    return merges, splits


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def scores(overlaps: Overlaps, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[MatchStats]:
    """One :class:`MatchStats` per threshold from an already computed overlap table."""
    thresholds = _check_thresholds(thresholds)
    ious = overlaps.iou()
    merges, splits = _merges_and_splits(overlaps)
    n_true, n_pred = overlaps.n_true, overlaps.n_pred
    results = []
    for threshold in thresholds:
        candidate = ious >= threshold
        matched = _matched_ious(overlaps.pair_pred[candidate], overlaps.pair_gt[candidate], ious[candidate])
        tp = int(matched.size)
        fp, fn = n_pred - tp, n_true - tp
        if n_true == 0 and n_pred == 0:
            precision = recall = f1 = ap = 1.0
        else:
            precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
            f1, ap = _ratio(2 * tp, 2 * tp + fp + fn), _ratio(tp, tp + fp + fn)
        results.append(MatchStats(threshold=threshold, n_true=n_true, n_pred=n_pred, tp=tp, fp=fp, fn=fn,
                                  precision=precision, recall=recall, f1=f1, ap=ap,
                                  mean_matched_iou=float(matched.mean()) if tp else 0.0,
                                  merges=merges, splits=splits))
    return results


def match(pred: Any, gt: Any, threshold: float = 0.5, slab_voxels: int = DEFAULT_SLAB_VOXELS) -> MatchStats:
    """Match predicted to true objects at one IoU threshold (pairs with IoU >= threshold)."""
    threshold = _check_threshold(threshold)
    return scores(overlap_table(pred, gt, slab_voxels), [threshold])[0]


def evaluate(pred: Any, gt: Any, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
             slab_voxels: int = DEFAULT_SLAB_VOXELS) -> list[MatchStats]:
    """:func:`match` at every threshold, reading the images once."""
    checked = _check_thresholds(thresholds)
    return scores(overlap_table(pred, gt, slab_voxels), checked)


# ---------------------------------------------------------------- reports

def summary(stats: Sequence[MatchStats]) -> dict[str, Any]:
    """Threshold-independent counts and the mean AP over the thresholds of ``stats``."""
    if not stats:
        raise ValueError("expected scores for at least one threshold, got none")
    first = stats[0]
    return {"n_true": first.n_true, "n_pred": first.n_pred, "merges": first.merges,
            "splits": first.splits, "thresholds": [s.threshold for s in stats],
            "mean_ap": float(np.mean([s.ap for s in stats]))}


def format_table(stats: Sequence[MatchStats]) -> str:
    """A plain-text table, one row per threshold, and a line with the mean AP."""
    info = summary(stats)
    lines = [f"true objects: {info['n_true']}   predicted objects: {info['n_pred']}   "
             f"merges: {info['merges']}   splits: {info['splits']}",
             f"{'IoU >=':>6} {'TP':>7} {'FP':>7} {'FN':>7} {'precision':>9} {'recall':>7} "
             f"{'F1':>6} {'AP':>6} {'mean IoU':>8}"]
    for s in stats:
        lines.append(f"{s.threshold:>6.2f} {s.tp:>7d} {s.fp:>7d} {s.fn:>7d} {s.precision:>9.3f} "
                     f"{s.recall:>7.3f} {s.f1:>6.3f} {s.ap:>6.3f} {s.mean_matched_iou:>8.3f}")
    thresholds = info["thresholds"]
    span = f"{thresholds[0]:.2f}" if len(thresholds) == 1 else f"{min(thresholds):.2f}-{max(thresholds):.2f}"
    lines.append(f"mean AP over {len(thresholds)} threshold(s) {span}: {info['mean_ap']:.3f}")
    return "\n".join(lines)
