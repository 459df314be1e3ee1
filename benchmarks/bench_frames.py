"""Multi-frame zarr segmentation: peak memory is bounded by the tile and block, not by the frame count.

Writes a (T, Y, X) zarr stack for each frame count, runs ``tiled_unet.segment`` zarr -> zarr on it in
a fresh Python process and prints time and peak resident memory per run.

    python benchmarks/bench_frames.py                    # 1 and 8 frames of 2048 x 2048
    python benchmarks/bench_frames.py --frames 1 2 --size 512
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import peak_rss_mib


def child(spec: dict) -> None:
    import numpy as np
    import zarr

    import tiled_unet

    path = Path(spec["workdir"]) / f"frames{spec['frames']}.zarr"
    shape = (spec["frames"], spec["size"], spec["size"])
    stack = zarr.open_array(str(path), mode="w", shape=shape, chunks=(1, 512, 512), dtype="uint16")
    rng = np.random.default_rng(0)
    for t in range(shape[0]):
        stack[t] = rng.integers(0, 1000, shape[1:], dtype=np.uint16)
    base = peak_rss_mib()
    start = time.perf_counter()
    tiled_unet.segment(str(path), spec["model"], out=str(path.with_name(path.stem + "_labels.zarr")), axes="TYX",
                       tile_shape=(512, 512), block_shape=(512, 512), device="cpu", diameter="off")
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
                      "before_mib": base}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=2048, help="Y and X size of every frame")
    parser.add_argument("--model", default="placeholder-2d")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-frames-"))
    try:
        print(f"| frames of {args.size}x{args.size} | seconds | peak RSS (MiB) |\n|---:|---:|---:|")
        for frames in args.frames:
            spec = {"workdir": str(workdir), "frames": frames, "size": args.size, "model": args.model}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            result = json.loads(out)
            print(f"| {frames} | {result['seconds']:.1f} | {result['peak_rss_mib']:.0f} |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
