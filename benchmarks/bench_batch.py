"""Throughput of batch segmentation of many small TIFFs: one run (model loaded once) vs one command per file.

Prints files/s and the per-file overhead (time per file minus the pure predict time of the
same image with the model already loaded), and the time of ``tiled-unet segment FILE`` run
once per file in a fresh process (a few runs, to show what loading once saves).

    python benchmarks/bench_batch.py [--files 50] [--size 256] [--cli-runs 3] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

import tiled_unet
from tiled_unet.batch.files import segment_files
from tiled_unet.synthetic import sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="nuclei-2d" if "nuclei-2d" in tiled_unet.builtin_models()
                        else "placeholder-2d")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    images = work / "images"
    images.mkdir()
    base = sample("nuclei-2d")[0]
    reps = -(-args.size // base.shape[0])
    base = np.tile(base, (reps, reps))[:args.size, :args.size]
    arrays = []
    for i in range(args.files):
        array = np.rot90(np.roll(base, 17 * i, axis=i % 2), i % 4).copy()
        arrays.append(array)
        tifffile.imwrite(images / f"img{i:03d}.tif", array)
    options = {"device": args.device}

    net = tiled_unet.load_model(args.model)
    tiled_unet.predict(arrays[0], net, **options)  # warm-up (kernels, allocations)
    start = time.perf_counter()
    for array in arrays:
        tiled_unet.predict(array, net, **options)
    pure = time.perf_counter() - start

    start = time.perf_counter()
    results = segment_files([images], work / "labels", args.model, **options)
    batch = time.perf_counter() - start
    assert all(r.status == "done" for r in results), [r.message for r in results if not r.ok]

    cli = []
    env = {**os.environ}
    for i in range(min(args.cli_runs, args.files)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tiled_unet.cli.main", "segment", str(images / f"img{i:03d}.tif"),
                        "-o", str(work / f"cli{i}.tif"), "--model", args.model, "--device", args.device],
                       check=True, capture_output=True, env=env)
        cli.append(time.perf_counter() - start)
    n = args.files
    print(f"{n} TIFFs of {args.size}x{args.size}, model {args.model}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"pure predict (model loaded, in memory): {pure / n * 1000:8.1f} ms/file")
    print(f"batch run (one process):               {batch / n * 1000:8.1f} ms/file  "
          f"{n / batch:6.2f} files/s  overhead {(batch - pure) / n * 1000:7.1f} ms/file "
          f"(read, labels, write)")
    mean_cli = sum(cli) / len(cli)
    print(f"one command per file ({len(cli)} runs):   {mean_cli * 1000:8.1f} ms/file  "
          f"{1 / mean_cli:6.2f} files/s  overhead {(mean_cli - pure / n) * 1000:7.1f} ms/file")
    print(f"batch is {mean_cli / (batch / n):.1f}x faster per file than one command per file")


if __name__ == "__main__":
    main()
