"""Training from a handful of images, and what the U-Net border weight (w0) does to touching cells.

Three questions, each answered by training small 2D U-Nets (depth 3, 16 base channels) from
scratch on 4 synthetic images of 256x256 (3 for training, 1 for validation) and segmenting
8 held-out images of the same kind:

* ``few``: one experiment (one microscope, one stain, one sample: the narrow ranges of
  ``ONE_EXPERIMENT``), as a user who annotates four of their own images has. Prints AP@0.5 and
  the CPU time of training.
* ``border``: a clumpy configuration (``CLUMPY``: many touching nuclei), trained with the
  paper's border term (w0 = 10) at sigma = 5 px and at sigma = 2 px, and without it (w0 = 0);
  same seed and everything else equal. Prints AP@0.5, merges and splits for each, with the instance
  parameters tuned for each model and at fixed seed thresholds.
* ``paper``: the same with the paper's two-class targets (``new_model(targets="gaps")``: touching
  nuclei parted by background gaps, no boundary class), w0 = 10 against w0 = 0.

    python benchmarks/bench_train.py                 # all three, 80 epochs x 20 steps
    python benchmarks/bench_train.py few --epochs 40
    python benchmarks/bench_train.py few --precision float32 bfloat16   # bf16 autocast on the CPU, side by side
    python benchmarks/bench_train.py few --augment-on cpu device        # patches made by torch (augment_on)
    python benchmarks/bench_train.py --quick         # smoke test (2 epochs of 2 steps)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from tiled_unet import predict
from tiled_unet.instances.memory import instances_from_probabilities
from tiled_unet.metrics import match
from tiled_unet.synthetic import NucleiConfig, render_nuclei
from tiled_unet.training.loop import TrainConfig, new_model, train

#: one experiment: the ranges a single microscope, stain and sample give, with typical noise
ONE_EXPERIMENT = NucleiConfig(density=(0.15, 0.3), radius=(8.0, 11.0), radius_spread=(0.1, 0.2),
                              cluster_fraction=(0.15, 0.3), texture=(0.1, 0.2), psf_sigma=(1.0, 1.3),
                              haze=(0.05, 0.1), background=(0.03, 0.06), illumination=(0.1, 0.3),
                              photons=(400.0, 1000.0), read_noise=(2.0, 3.0), gain=(1.0, 2.0),
                              dim_fraction=(0.0, 0.05), saturation_chance=0.0)
#: many touching nuclei: where the border term should matter
CLUMPY = NucleiConfig(density=(0.25, 0.4), radius=(8.0, 12.0), cluster_fraction=(0.4, 0.6),
                      photons=(300.0, 2000.0))
#: the instance parameters tuned on one validation image pick different merge/split trade-offs per
#: model; these fixed seed thresholds (foreground 0.5) compare the models at equal settings too
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def data(config: NucleiConfig, count: int, first_seed: int):
    pairs = [render_nuclei((256, 256), config, rng=first_seed + i) for i in range(count)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run(images, labels, tests, args, w0: float = 10.0, sigma: float = 5.0, targets: str = "boundary",
        precision: str = "float32", augment_on: str = "cpu") -> dict:
    torch.manual_seed(args.seed)
    init = new_model(2, depth=3, base_channels=16, targets=targets)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4, patch_shape=(96, 96),
                         w0=w0, sigma=sigma, validation_fraction=0.25, patience=args.epochs, seed=args.seed,
                         device="cpu", precision=precision, augment_on=augment_on)
    start_cpu, start = time.process_time(), time.perf_counter()
    net = train(images, labels, init=init, config=config)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    probs = [predict(image, net, device="cpu") for image in tests[0]]
    row = {"w0": w0, "sigma": sigma, "precision": precision, "augment_on": augment_on, "cpu_s": cpu, "wall_s": wall,
           "seed_threshold": {}}
    row.update(score(probs, tests[1], net.model_config.instances, net.model_config.class_names))
    for threshold in SEED_THRESHOLDS:
        config = dataclasses.replace(net.model_config.instances, seed_threshold=threshold, foreground_threshold=0.5)
        row["seed_threshold"][threshold] = score(probs, tests[1], config, net.model_config.class_names)
    return row


def score(probs, truths, config, class_names) -> dict:
    stats = [match(instances_from_probabilities(p, config, class_names), truth, 0.5) for p, truth in zip(probs, truths)]
    return {"ap50": float(np.mean([s.ap for s in stats])), "cells": sum(s.n_true for s in stats),
            "merges": sum(s.merges for s in stats), "splits": sum(s.splits for s in stats)}


def table(rows: list[dict]) -> None:
    print("| w0 | sigma px | precision | patches on | test AP@0.5 | cells | merges | splits | train CPU s | "
          "train wall s |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['w0']:g} | {r['sigma']:g} | {r['precision']} | {r['augment_on']} | {r['ap50']:.3f} | "
              f"{r['cells']} | {r['merges']} | {r['splits']} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("few", "border", "paper", "all"), default="all")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 epochs of 2 steps")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=("float32", "bfloat16"),
                        help="training precision(s) of the 'few' part, one run each (default float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the training (default 0)")
    parser.add_argument("--augment-on", nargs="+", default=["cpu"], choices=("cpu", "device"),
                        help="where the 'few' part makes its patches, one run each (default cpu)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.steps = 2, 2
    print(f"4 images of 256x256 (3 for training, 1 for validation), {args.epochs} epochs x {args.steps} steps x "
          f"batch 4, patch 96x96; 8 held-out test images; torch threads {torch.get_num_threads()}", flush=True)
    if args.part in ("few", "all"):
        tests = data(ONE_EXPERIMENT, 8, 200)
        print(f"\nfew: one experiment (ONE_EXPERIMENT), {sum(int(t.max()) for t in tests[1])} test cells")
        images, labels = data(ONE_EXPERIMENT, 4, 100)
        table([run(images, labels, tests, args, precision=precision, augment_on=place)
               for place in args.augment_on for precision in args.precision])
    for part, targets, runs in (("border", "boundary", ((10.0, 5.0), (10.0, 2.0), (0.0, 5.0))),
                                ("paper", "gaps", ((10.0, 5.0), (0.0, 5.0)))):
        if args.part not in (part, "all"):
            continue
        tests = data(CLUMPY, 8, 200)
        print(f"\n{part}: many touching nuclei (CLUMPY), {sum(int(t.max()) for t in tests[1])} test cells, "
              f"targets {targets!r}")
        images, labels = data(CLUMPY, 4, 100)
        rows = [run(images, labels, tests, args, w0, sigma, targets) for w0, sigma in runs]
        table(rows)
        print("\nmerges / splits (AP@0.5) at fixed seed thresholds, foreground threshold 0.5:\n")
        print("| w0 | sigma px | " + " | ".join(f"seed {t:g}" for t in SEED_THRESHOLDS) + " |")
        print("|---:|---:|" + "---:|" * len(SEED_THRESHOLDS))
        for r in rows:
            cells = [f"{v['merges']} / {v['splits']} ({v['ap50']:.3f})" for v in r["seed_threshold"].values()]
            print(f"| {r['w0']:g} | {r['sigma']:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
