"""Training patches per second: in the loop (workers=0) against worker threads, worker processes and
patches made on the training device (``augment_on="device"``).

    python benchmarks/bench_patches.py [--workers N] [--patches 200] [--device cpu|cuda]

Uses the built-in recipes' networks and patch shapes (2D: 188x188 input, 3D: 64x88x88 input) on
synthetic training images, with the default augmentation (elastic deformation included), and
measures the four ways side by side in one run. The time to start worker processes (they
memory-map the data from files written at the start), or to copy the data to the device, is
reported apart. On CUDA the device rate includes synchronising after every batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from tiled_unet.training.augment import AugmentConfig
from tiled_unet.training.augment_device import DevicePatches
from tiled_unet.training.datasets import PatchStream, patch_shapes, prepare
from tiled_unet.synthetic import render_nuclei
from tiled_unet.training.loop import new_model

CASES = {"2D": dict(ndim=2, shape=(256, 256), depth=3, base=24, patch=(96, 96)),
         "3D": dict(ndim=3, shape=(32, 128, 128), depth=2, base=32, patch=(24, 48, 48))}


def rate(examples, shapes, workers: int, worker_type: str, patches: int) -> tuple[float, float]:
    """(patches per second, start-up seconds) of one way of sampling."""
    start = time.perf_counter()
    stream = PatchStream(examples, *shapes, 0.7, AugmentConfig(), np.random.default_rng(0), workers, worker_type)
    batches = stream.epoch(patches // 4, 4)
    next(batches)  # the first batch includes starting the workers
    started = time.perf_counter()
    for _ in batches:
        pass
    seconds = time.perf_counter() - started
    stream.close()
    return (patches - 4) / seconds, started - start


def device_rate(examples, shapes, device: str, patches: int) -> tuple[float, float]:
    """(patches per second, seconds to copy the data) of patches made on ``device``."""
    start = time.perf_counter()
    stream = DevicePatches(examples, *shapes, 0.7, AugmentConfig(), np.random.default_rng(0), device)
    batches = stream.epoch(patches // 4, 4)
    next(batches)
    _synchronize(device)
    started = time.perf_counter()
    for _ in batches:
        _synchronize(device)
    seconds = time.perf_counter() - started
    stream.close()
    return (patches - 4) / seconds, started - start


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="the training device for augment_on='device' (default cpu)")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores, {args.workers} workers, {args.patches} patches per way, "
          f"{torch.get_num_threads()} torch threads, device {args.device}")
    print(f"{'case':5} {'way':24} {'patches/s':>10} {'x loop':>7} {'start s':>8}")
    for case, spec in CASES.items():
        net = new_model(spec["ndim"], depth=spec["depth"], base_channels=spec["base"])
        data = [render_nuclei(spec["shape"], rng=seed) for seed in range(8)]
        examples = [prepare(image[None].astype(np.float32), labels, net.model_config, w0=10.0, sigma=5.0,
                            boundary_width=2, ignore_label=None, spacing=None, rng=np.random.default_rng(0))
                    for image, labels in data]
        shapes = patch_shapes(net.geometry, spec["patch"])
        base = None
        for workers, kind in ((0, "threads"), (args.workers, "threads"), (args.workers, "processes")):
            per_second, startup = rate(examples, shapes, workers, kind, args.patches)
            base = base or per_second
            way = "in the loop" if workers == 0 else f"{workers} {kind}"
            print(f"{case:5} {way:24} {per_second:10.1f} {per_second / base:7.2f} {startup:8.2f}", flush=True)
        per_second, startup = device_rate(examples, shapes, args.device, args.patches)
        print(f"{case:5} {'on ' + args.device:24} {per_second:10.1f} {per_second / base:7.2f} {startup:8.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
