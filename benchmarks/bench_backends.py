"""End to end: segment with the built-in models on the PyTorch and OpenVINO backends.

Per model (``nuclei-2d`` on a 2048 x 2048 synthetic image, ``nuclei-3d`` on 64 x 256 x 256),
each row in a fresh process, as a user runs it (defaults: precision "auto", automatic
cell size, CPU):

  raw torch     the PyTorch forward alone on one tile of the engine's input shape,
                warm, bf16 autocast + channels-last + BatchNorm folded, as the engine runs
                it: the forward limit
  raw openvino  the same tile on the compiled OpenVINO network, warm
  memory        ``tiled_unet.segment(numpy array)``, backend torch / openvino
  zarr          ``tiled_unet.segment(zarr path, out=zarr path)``, backend torch / openvino

With ``--unfolded`` each torch row is also run with the engine's BatchNorm folding turned off
(the engine before it folded them), in the same run: the rows ``... torch-unfolded``.
With ``--small-pages`` each torch row is also run with ``THP_MEM_ALLOC_ENABLE=0`` (PyTorch's
CPU buffers on 4 KiB pages, the engine before it turned huge pages on): ``... torch-4k``.
With ``--glibc-hugetlb`` each OpenVINO row is also run with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (OpenVINO's buffers on huge pages; a variable the
user sets before Python starts): ``... openvino-hugetlb``.

End-to-end rows run ``--runs`` times, the backends interleaved; the median is reported.

"limit" is tiles x the raw torch forward of a tile: the time PyTorch alone needs for the
job's forward passes. Labels of the two backends are compared cell by cell
(:func:`compare_cells`): a cell differs unless the other backend has one of IoU >= 0.9.

    python benchmarks/bench_speed.py --builtin          # both models
    python benchmarks/bench_backends.py --models nuclei-2d --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import peak_rss_mib, run_script  # noqa: E402

IMAGES = {"nuclei-2d": {"shape": (2048, 2048), "count": 3600, "radius": (7, 13), "seed": 5},
          "nuclei-3d": {"shape": (64, 256, 256), "count": 160, "radius": (7, 12), "seed": 5}}
QUICK = {"nuclei-2d": {"shape": (512, 512), "count": 220, "radius": (7, 13), "seed": 5},
         "nuclei-3d": {"shape": (32, 128, 128), "count": 30, "radius": (7, 12), "seed": 5}}
ROWS = ("raw torch", "raw openvino", "memory torch", "memory openvino", "zarr torch", "zarr openvino")
UNFOLDED = ("raw torch-unfolded", "memory torch-unfolded", "zarr torch-unfolded")
SMALL_PAGES = ("raw torch-4k", "memory torch-4k", "zarr torch-4k")
GLIBC_HUGETLB = ("raw openvino-hugetlb", "memory openvino-hugetlb", "zarr openvino-hugetlb")
#: environment of the variant rows (the suffix of their backend)
VARIANT_ENV = {"4k": {"THP_MEM_ALLOC_ENABLE": "0"}, "hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}


def make_image(spec: dict, workdir: Path) -> tuple[Path, Path]:
    """The synthetic image as .npy and as a zarr array (reused when present)."""
    import numpy as np
    import zarr
    from tiled_unet.synthetic import nuclei

    stem = workdir / f"backends_{'x'.join(map(str, spec['shape']))}_{spec['count']}_{spec['seed']}"
    npy, store = stem.with_suffix(".npy"), stem.with_suffix(".zarr")
    if not npy.exists() or not store.exists():
        image = nuclei(tuple(spec["shape"]), count=spec["count"], radius=tuple(spec["radius"]), seed=spec["seed"])[0]
        np.save(npy, image)
        chunks = tuple(min(256, n) for n in image.shape)
        zarr.open_array(str(store), mode="w", shape=image.shape, chunks=chunks, dtype=image.dtype)[...] = image
    return npy, store


def raw_forward(spec: dict, backend: str) -> dict:
    """One tile of the engine's input shape, warm: median of ``repeats`` calls."""
    import numpy as np
    import torch
    import tiled_unet
    from tiled_unet.engine.backends import OpenVINONetwork
    from tiled_unet.engine.devices import resolve_precision
    from tiled_unet.engine.plan import make_tile_plan
    from tiled_unet.engine.predict import scale_plan
    from tiled_unet.engine.resample import resampled_size
    from tiled_unet.io.layout import parse_layout
    from tiled_unet.config import InferenceConfig

    image = np.load(spec["npy"])
    net = tiled_unet.load_model(spec["model"]).eval()
    factors = scale_plan(image, net, device="cpu").factors
    shape = image.shape if factors is None else tuple(resampled_size(n, f) for n, f in zip(image.shape, factors))
    plan = make_tile_plan(parse_layout(shape, image.dtype, net.config, None), net, InferenceConfig(device="cpu"),
                          torch.device("cpu"))
    input_shape = (1, 1, *plan.tiles[0].input_shape)
    amp = resolve_precision("auto", torch.device("cpu"))
    x = torch.randn(input_shape)
    if backend == "torch":
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        net = net.fused_for_inference().to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)

        def call():
            with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                net(x).float()
    else:
        ov_net = OpenVINONetwork(net, amp)
        batch = x.numpy()
        ov_net(batch)  # compile

        def call():
            ov_net(batch)

    def timed() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    first = timed()
    times = sorted(timed() for _ in range(spec["repeats"]))
    return {"seconds": times[len(times) // 2], "first_call": first, "tiles": len(plan.tiles),
            "input_shape": list(input_shape[2:]), "scale": None if factors is None else list(factors)}


def segment_row(spec: dict, where: str, backend: str) -> dict:
    import numpy as np
    import tiled_unet
    import zarr

    net = tiled_unet.load_model(spec["model"])
    notes, tiles = [], []

    def progress(event):
        if getattr(event, "note", ""):
            notes.append(event.note)
        if hasattr(event, "frames") and hasattr(event, "total"):
            tiles.append(event.total)

    options = {"device": "cpu", "backend": backend, "progress": progress}
    start = time.perf_counter()
    if where == "memory":
        labels = tiled_unet.segment(np.load(spec["npy"]), net, **options)
    else:
        tiled_unet.segment(spec["zarr"], net, out=spec["out"], overwrite=True, **options)
        labels = None
    seconds = time.perf_counter() - start
    if labels is None:
        labels = zarr.open_array(spec["out"], mode="r")[...]
    np.save(spec["labels"], labels)
    return {"seconds": seconds, "cells": int(len(np.unique(labels)) - (labels == 0).any()), "notes": notes,
            "tiles": max(tiles) if tiles else None}


def child(spec: dict) -> dict:
    kind, backend = spec["row"].split()
    if backend == "torch-unfolded":  # the engine as it was before it folded BatchNorm into convolutions
        import copy

        from tiled_unet.model import UNet

        UNet.fused_for_inference = lambda self: copy.deepcopy(self).eval()
        backend = "torch"
    backend = backend.split("-")[0]  # torch-4k, openvino-hugetlb: their environment is set by the parent
    result = raw_forward(spec, backend) if kind == "raw" else segment_row(spec, kind, backend)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def compare_cells(a, b) -> dict:
    """Cell-by-cell agreement of two label images: ``differing`` counts cells of either image
    without a partner of IoU >= 0.9 in the other (bf16 rounding moves boundary pixels, so
    this tolerates a pixel shift but no split, merge, loss or shrinking); ``identical``
    counts pairs of exactly the same pixels."""
    import numpy as np

    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    size_a, size_b, base = np.bincount(a), np.bincount(b), int(b.max()) + 1
    pairs, counts = np.unique(a * base + b, return_counts=True)
    la, lb = pairs // base, pairs % base
    keep = (la > 0) & (lb > 0)
    la, lb, counts = la[keep], lb[keep], counts[keep]
    iou = counts / (size_a[la] + size_b[lb] - counts)
    matched = int((iou >= 0.9).sum())  # IoU > 0.5 pairs are one-to-one
    cells_a, cells_b = int((size_a[1:] > 0).sum()), int((size_b[1:] > 0).sum())
    return {"cells": cells_a, "differing": cells_a - matched + cells_b - matched,
            "identical": int((iou == 1).sum()), "min_iou": float(iou[iou > 0.5].min(initial=1.0)),
            "pixels": float((a != b).mean())}


def run_model(name: str, args: argparse.Namespace) -> tuple[dict, bool]:
    import numpy as np

    image = (QUICK if args.quick else IMAGES)[name]
    npy, store = make_image(image, args.workdir)
    print(f"{name}: synthetic {image['shape']} image, {image['count']} nuclei, radius {image['radius']}", flush=True)
    results: dict[str, dict] = {}
    rows = (ROWS + (UNFOLDED if args.unfolded else ()) + (SMALL_PAGES if args.small_pages else ())
            + (GLIBC_HUGETLB if args.glibc_hugetlb else ()))
    for run in range(args.runs):  # the backends interleaved, so slow phases of the machine hit both
        for row in rows if run == 0 else [r for r in rows if not r.startswith("raw")]:
            tag = row.replace(" ", "_")
            spec = {"row": row, "model": name, "npy": str(npy), "zarr": str(store), "repeats": args.repeats,
                    "out": str(args.workdir / f"backends_{name}_{tag}.zarr"),
                    "labels": str(args.workdir / f"backends_{name}_{tag}_labels.npy")}
            variant = row.split()[1].partition("-")[2]
            res = run_script(__file__, "--row", spec, env=VARIANT_ENV.get(variant))
            res["labels_path"] = spec["labels"]
            print(f"  {row}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_mib']:.0f} MiB"
                  + (f" ({'; '.join(res['notes'])})" if res.get("notes") else ""), flush=True)
            kept = results.setdefault(row, {**res, "runs": []})
            kept["runs"].append(res["seconds"])
            kept["seconds"] = sorted(kept["runs"])[len(kept["runs"]) // 2]
            kept["peak_rss_mib"] = max(kept["peak_rss_mib"], res["peak_rss_mib"])
    raw = results["raw torch"]
    limit = raw["tiles"] * raw["seconds"]
    print(f"\n{name}: {raw['tiles']} tile(s) of input {tuple(raw['input_shape'])}, scale {raw['scale']}; "
          f"raw forward per tile: torch {raw['seconds']:.2f} s (first {raw['first_call']:.2f}), "
          f"openvino {results['raw openvino']['seconds']:.2f} s (first {results['raw openvino']['first_call']:.2f})")
    print(f"| row | time s (median of {args.runs}) | limit / time | cells | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for row in [r for r in rows if not r.startswith("raw")]:
        res = results[row]
        print(f"| {name} {row} | {res['seconds']:.2f} | {limit / res['seconds']:.2f} | {res['cells']} | "
              f"{res['peak_rss_mib']:.0f} |")
    if args.unfolded:
        raw_unfolded = results["raw torch-unfolded"]["seconds"]
        print(f"{name}: BatchNorm folding, torch: raw forward {raw_unfolded / raw['seconds']:.2f}x ("
              f"{raw_unfolded:.2f} s unfolded), in memory "
              f"{results['memory torch-unfolded']['seconds'] / results['memory torch']['seconds']:.2f}x, zarr "
              f"{results['zarr torch-unfolded']['seconds'] / results['zarr torch']['seconds']:.2f}x faster")
    for variant, base in (("torch-4k", "torch"), ("openvino-hugetlb", "openvino")):
        if f"memory {variant}" in results:
            ratios = {where: results[f"{where} {variant}"]["seconds"] / results[f"{where} {base}"]["seconds"]
                      for where in ("raw", "memory", "zarr")}
            print(f"{name}: {variant} takes " + ", ".join(f"{r:.2f}x ({where})" for where, r in ratios.items())
                  + f" the time of {base}")
    target = {"nuclei-2d": 1.8, "nuclei-3d": 1.3}[name]
    ok = True
    for where in ("memory", "zarr"):
        torch_row, ov_row = results[f"{where} torch"], results[f"{where} openvino"]
        speedup = torch_row["seconds"] / ov_row["seconds"]
        same = compare_cells(np.load(torch_row["labels_path"]), np.load(ov_row["labels_path"]))
        share = same["differing"] / max(same["cells"], 1)
        passed = speedup >= target and share <= 0.01
        ok &= passed
        print(f"{name} {where}: openvino speed-up {speedup:.2f}x (target >= {target}); cells differing "
              f"{same['differing']} of {same['cells']} ({100 * share:.2f} %, target <= 1 %; "
              f"{same['identical']} pixel-identical, lowest IoU of a matched cell {same['min_iou']:.3f}, "
              f"{100 * same['pixels']:.3f} % of pixels differ): {'PASS' if passed else 'FAIL'}")
    print()
    return results, ok


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(IMAGES), choices=list(IMAGES),
                        help="built-in models to run (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="timed raw forward calls (default: 3)")
    parser.add_argument("--runs", type=int, default=3, help="end-to-end runs per row, median reported (default: 3)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_data",
                        help="where the images and outputs go (default: benchmarks/_data)")
    parser.add_argument("--quick", action="store_true", help="small images: a smoke test, not the targets")
    parser.add_argument("--unfolded", action="store_true",
                        help="also run the torch rows without BatchNorm folding (the engine before it)")
    parser.add_argument("--small-pages", action="store_true",
                        help="also run the torch rows with THP_MEM_ALLOC_ENABLE=0 (4 KiB pages)")
    parser.add_argument("--glibc-hugetlb", action="store_true",
                        help="also run the OpenVINO rows with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.row:
        print("RESULT " + json.dumps(child(json.loads(args.row))), flush=True)
        return 0
    from tiled_unet.engine.backends import openvino_installed

    if not openvino_installed():
        raise SystemExit("OpenVINO is not installed: pip install 'napari-tiled-unet[openvino]'")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {os.cpu_count()} CPUs")
    args.workdir.mkdir(parents=True, exist_ok=True)
    ok = all([run_model(name, args)[1] for name in args.models])
    if args.quick:
        print("(--quick: a smoke test; the images are too small for the targets to mean anything)")
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
