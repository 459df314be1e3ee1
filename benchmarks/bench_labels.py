"""Blockwise instance labelling: memory bounded by the block, time next to inference.

Creates synthetic class-probability volumes (3 classes, float32: background, interior,
boundary of jittered, partly touching cells) of increasing depth on disk, slab by slab,
and runs ``tiled_unet.instances.blockwise.labels_blockwise`` zarr -> zarr on each, each run in a
fresh Python process with the default block shape and scheduler. Prints time and peak
resident memory per size, and PASS if the peak RSS of all runs lies within 10 % of each
other (a whole-volume approach grows with the volume).

Then times ``tiled_unet.predict`` zarr -> zarr (built-in ``placeholder-3d`` model, CPU)
on a uint16 volume of the same spatial shape as the largest probability volume and
prints labelling time next to inference time (target: labelling <= 1/4 of inference).

    python benchmarks/bench_labels.py            # 64, 128, 256 planes of 512x512
    python benchmarks/bench_labels.py --quick    # tiny smoke test
    python benchmarks/bench_labels.py --no-inference

Peak RSS is the child's own high-water mark (see ``bench_memory.peak_rss_mib``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import make_volume, peak_rss_mib, run_script  # noqa: E402

TOLERANCE = 0.10
TARGET_RATIO = 0.25
SPACING = 16  # lattice spacing of the synthetic cells (pixels)
QUICK = {"planes": [8, 16, 32], "size": 96, "chunks": (8, 48, 48), "block": (8, 48, 48),
         "tile": (8, 64, 64)}


def make_probabilities(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], seed: int = 0) -> int:
    """Synthetic probabilities ``(3, *shape)`` written slab by slab (never whole in memory).

    One cell per lattice cell of ``SPACING`` pixels (10 % left empty): a ball of random
    radius around a jittered centre, cut at the lattice faces, so that neighbours with
    large radii touch. Boundary: within 2 px of the ball's surface or 1 px of the lattice
    face; the rest of the ball is interior. Probabilities: 0.7 x one-hot + 0.3 x uniform
    noise, renormalised. Reused when ``path`` already holds a volume made with the same
    parameters. Returns the number of non-empty lattice cells.
    """
    import numpy as np
    import zarr

    key = {"shape": list(shape), "chunks": list(chunks), "seed": seed, "spacing": SPACING, "generator": 1}
    lattice = tuple(-(-n // SPACING) for n in shape)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(SPACING / 2 - 2, SPACING / 2 + 2, size=lattice + (len(shape),)).astype(np.float32)
    radii = rng.uniform(4.5, 9.5, size=lattice).astype(np.float32)
    present = rng.random(lattice) >= 0.1
    if path.exists():
        try:
            if dict(zarr.open_array(str(path), mode="r").attrs).get("bench") == key:
                return int(present.sum())
        except Exception:  # noqa: BLE001 - anything unreadable is recreated
            pass
    arr = zarr.open_array(str(path), mode="w", shape=(3,) + tuple(shape), chunks=(3,) + tuple(chunks),
                          dtype="float32")
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(z0 + chunks[0], shape[0])
        coords = np.meshgrid(np.arange(z0, z1), *(np.arange(n) for n in shape[1:]), indexing="ij")
        cell = tuple(c // SPACING for c in coords)
        local = [(c % SPACING).astype(np.float32) for c in coords]
        centre = centres[cell]
        dist = np.sqrt(sum((loc - centre[..., a]) ** 2 for a, loc in enumerate(local)))
        radius = radii[cell]
        inside = present[cell] & (dist <= radius)
        face = np.minimum.reduce([np.minimum(loc, SPACING - 1 - loc) for loc in local])
        boundary = inside & ((radius - dist < 2) | (face < 1))
        classes = np.where(boundary, 2, np.where(inside, 1, 0))
        del coords, cell, local, centre, dist, radius, inside, face, boundary
        probs = rng.random((3,) + classes.shape, dtype=np.float32) * 0.3
        for c in range(3):
            probs[c] += 0.7 * (classes == c)
        probs /= probs.sum(axis=0, keepdims=True)
        arr[:, z0:z1] = probs
    arr.attrs["bench"] = key
    return int(present.sum())


def child(spec: dict) -> dict:
    """Runs in the fresh process: a baseline (imports), one labelling or one prediction."""
    import numpy as np  # noqa: F401 - part of the baseline
    import zarr  # noqa: F401

    import tiled_unet  # noqa: F401
    from tiled_unet.instances.blockwise import labels_blockwise

    result: dict = {}
    if spec["task"] == "labels":
        stages: dict[str, float] = {}
        last = [time.perf_counter()]

        def progress(done: int, total: int, stage: str) -> None:
            now = time.perf_counter()
            if done > 0:
                stages[stage] = stages.get(stage, 0.0) + now - last[0]
            last[0] = now

        start = time.perf_counter()
        block = tuple(spec["block"]) if spec.get("block") else None
        labels = labels_blockwise(spec["probs"], spec["out"], overwrite=True, block_shape=block,
                                  progress=progress)
        result.update(seconds=time.perf_counter() - start, block=list(labels.chunks),
                      objects=int(labels[...].max()) if spec.get("count") else None,
                      stages={k: round(v, 2) for k, v in stages.items()})
    elif spec["task"] == "predict":
        import tiled_unet

        net = tiled_unet.load_model(spec["model"])
        start = time.perf_counter()
        tiled_unet.predict(spec["volume"], net, out=spec["out"], overwrite=True, device="cpu",
                           tile_shape=tuple(spec["tile"]) if spec.get("tile") else "auto")
        result["seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_child(spec: dict) -> dict:
    return run_script(__file__, "--child", spec)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planes", type=int, nargs="+", default=[64, 128, 256],
                        help="depths (Z) of the volumes (default: 64 128 256)")
    parser.add_argument("--size", type=int, default=512, help="Y and X size of every plane (default: 512)")
    parser.add_argument("--chunks", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"),
                        help="spatial zarr chunks of the probability volumes (default: 32 256 256)")
    parser.add_argument("--block", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="block shape for the labelling (default: labels_blockwise's default)")
    parser.add_argument("--tile", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="tile shape for the inference timing (default: auto)")
    parser.add_argument("--model", default="placeholder-3d", help="model for the inference timing")
    parser.add_argument("--no-inference", action="store_true", help="skip the inference timing")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_data",
                        help="where volumes and outputs are written (default: benchmarks/_data)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke test: 8, 16, 32 planes of 96x96, blocks of 8x48x48")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.planes, args.size = QUICK["planes"], QUICK["size"]
        args.chunks, args.block, args.tile = QUICK["chunks"], QUICK["block"], QUICK["tile"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = run_child({"task": "baseline"})
    print(f"probability chunks {tuple(args.chunks)}, block shape {tuple(args.block) if args.block else 'default'}, "
          f"scheduler: threads ({os.cpu_count()} CPUs)")
    rows = []
    for planes in sorted(args.planes):
        shape = (planes, args.size, args.size)
        probs = args.workdir / f"labels_{planes}x{args.size}x{args.size}_probs.zarr"
        t0 = time.perf_counter()
        cells = make_probabilities(probs, shape, tuple(min(c, n) for c, n in zip(args.chunks, shape)))
        made = time.perf_counter() - t0
        res = run_child({"task": "labels", "probs": str(probs), "out": str(args.workdir / f"labels_{planes}.zarr"),
                         "block": args.block, "count": args.quick})
        rows.append((planes, math.prod(shape), res))
        found = f", {res['objects']} objects ({cells} lattice cells)" if res["objects"] is not None else ""
        print(f"  {planes} planes: probabilities ready in {made:.1f} s, blocks {tuple(res['block'])}, "
              f"labelled in {res['seconds']:.1f} s{found}; stages {res['stages']}", flush=True)
    smallest = rows[0][2]["peak_rss_mib"]
    print()
    print("| planes | voxels | probabilities GiB | time s | Mvox/s | peak RSS MiB | RSS / smallest |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for planes, voxels, res in rows:
        print(f"| {planes} | {voxels:,} | {voxels * 12 / 2**30:.2f} | {res['seconds']:.1f} | "
              f"{voxels / res['seconds'] / 1e6:.2f} | {res['peak_rss_mib']:.0f} | "
              f"{res['peak_rss_mib'] / smallest:.3f} |")
    print(f"| baseline (import tiled_unet) | | | | | {base['peak_rss_mib']:.0f} | |")
    peaks = [res["peak_rss_mib"] for _, _, res in rows]
    spread = max(peaks) / min(peaks) - 1
    ok = spread <= TOLERANCE
    print()
    print(f"{'PASS' if ok else 'FAIL'}: peak RSS spread {spread:.1%} across a {rows[-1][1] / rows[0][1]:.0f}x "
          f"range of volume sizes (limit {TOLERANCE:.0%}); the largest probability volume is "
          f"{rows[-1][1] * 12 / 2**20 / max(peaks):.1f}x the peak RSS")
    if args.no_inference:
        return 0 if ok else 1
    planes, voxels, labelled = rows[-1]
    shape = (planes, args.size, args.size)
    volume = args.workdir / f"memory_{planes}x{args.size}x{args.size}.zarr"
    make_volume(volume, shape, tuple(min(c, n) for c, n in zip((16, 256, 256), shape)))
    inferred = run_child({"task": "predict", "model": args.model, "volume": str(volume),
                          "out": str(args.workdir / f"labels_{planes}_inference_probs.zarr"), "tile": args.tile})
    ratio = labelled["seconds"] / inferred["seconds"]
    print()
    print(f"| {shape} | time s | peak RSS MiB |")
    print("|---|---:|---:|")
    print(f"| inference ({args.model}, CPU, zarr -> zarr) | {inferred['seconds']:.1f} | {inferred['peak_rss_mib']:.0f} |")
    print(f"| labelling (blockwise, zarr -> zarr) | {labelled['seconds']:.1f} | {labelled['peak_rss_mib']:.0f} |")
    print()
    print(f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}: labelling / inference = {ratio:.3f} "
          f"(target <= {TARGET_RATIO})")
    return 0 if ok and ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
