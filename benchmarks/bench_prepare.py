"""Time to prepare training data (targets, U-Net weight maps, normalisation) one image after another
and in threads, side by side in one run.

    python benchmarks/bench_prepare.py [--ndim 3] [--images 16] [--threads 2]

:func:`tiled_unet.training.datasets.prepare_all` does this work at the start of every training run in
``--threads`` threads (default in training: the CPUs the process may use, at most 8); the
results are identical, which this script checks too.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tiled_unet import load_model
from tiled_unet.training.datasets import prepare_all, usable_cpus
from tiled_unet.synthetic import render_nuclei

SHAPES = {2: (256, 256), 3: (32, 128, 128)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=usable_cpus())
    args = parser.parse_args(argv)
    model = load_model(f"nuclei-{args.ndim}d").model_config
    pairs = [(image[None], labels) for image, labels in
             (render_nuclei(SHAPES[args.ndim], rng=1000 + i) for i in range(args.images))]
    options = dict(w0=10.0, sigma=5.0, boundary_width=2, ignore_label=None, spacing=None)
    results, seconds = {}, {}
    for threads in (1, args.threads):
        start = time.perf_counter()
        results[threads] = prepare_all(pairs, model, rng=np.random.default_rng(0), threads=threads, **options)
        seconds[threads] = time.perf_counter() - start
    same = all(np.array_equal(a.weights, b.weights) and np.array_equal(a.foreground, b.foreground)
               for a, b in zip(results[1], results[args.threads]))
    print(f"{args.images} images of {SHAPES[args.ndim]}: 1 thread {seconds[1]:.2f} s, {args.threads} threads "
          f"{seconds[args.threads]:.2f} s ({seconds[1] / seconds[args.threads]:.2f}x); identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
