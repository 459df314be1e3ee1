"""Training from a handful of images, and what the U-Net border weight (w0) does to touching cells.

Trains a small 2D U-Net from scratch on 4 synthetic images of 256x256 (a clumpy nuclei
configuration: many touching nuclei) twice, with the paper's border term (w0 = 10) and without it
(w0 = 0), same seed and everything else equal, then segments 8 held-out images and prints AP@0.5,
merges and splits for each, with the CPU time of training.

    python benchmarks/bench_train.py            # 4 images, 30 epochs x 20 steps
    python benchmarks/bench_train.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from tiled_unet import predict
from tiled_unet.instances import instances_from_probabilities
from tiled_unet.metrics import match
from tiled_unet.synthetic import NucleiConfig, render_nuclei
from tiled_unet.train import TrainConfig, new_model, train

CLUMPY = NucleiConfig(density=(0.25, 0.4), radius=(8.0, 12.0), cluster_fraction=(0.4, 0.6),
                      photons=(300.0, 2000.0))


def data(count: int, first_seed: int):
    pairs = [render_nuclei((256, 256), CLUMPY, rng=first_seed + i) for i in range(count)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run(w0: float, images, labels, tests, args) -> dict:
    torch.manual_seed(0)
    init = new_model(2, depth=3, base_channels=16)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4, patch_shape=(96, 96),
                         w0=w0, validation_fraction=0.25, patience=args.epochs, seed=0, device="cpu")
    start_cpu, start = time.process_time(), time.perf_counter()
    net = train(images, labels, init=init, config=config)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    stats = []
    for image, truth in zip(*tests):
        probs = predict(image, net, device="cpu")
        stats.append(match(instances_from_probabilities(probs, net.model_config.instances,
                                                        net.model_config.class_names), truth, 0.5))
    return {"w0": w0, "ap50": float(np.mean([s.ap for s in stats])), "cells": sum(s.n_true for s in stats),
            "merges": sum(s.merges for s in stats), "splits": sum(s.splits for s in stats),
            "cpu_s": cpu, "wall_s": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 epochs of 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.steps = 2, 2
    images, labels = data(4, 100)
    tests = data(8, 200)
    print(f"training: 4 images of 256x256 (3 for training, 1 for validation), {args.epochs} epochs x "
          f"{args.steps} steps x batch 4; test: 8 held-out images, {sum(int(t.max()) for t in tests[1])} cells; "
          f"torch threads {torch.get_num_threads()}")
    rows = [run(w0, images, labels, tests, args) for w0 in (10.0, 0.0)]
    print()
    print("| w0 | test AP@0.5 | cells | merges | splits | train CPU s | train wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['w0']:g} | {r['ap50']:.3f} | {r['cells']} | {r['merges']} | {r['splits']} | "
              f"{r['cpu_s']:.0f} | {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
