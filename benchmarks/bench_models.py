"""Inference time of models side by side on one synthetic image (best of several runs).

    python benchmarks/bench_models.py nuclei-3d OTHER.safetensors [--shape 64 256 256] [--device cpu]

Each model (a built-in name or a model file) predicts class probabilities for the same image
rendered by ``tiled_unet.synthetic.render_nuclei``; the runs alternate between the models so that
they share the machine's conditions. Prints seconds and voxels per second for each.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tiled_unet import load_model, predict
from tiled_unet.synthetic import render_nuclei


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="built-in model names or .safetensors files")
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 256, 256], help="image shape (2D or 3D)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    image, _ = render_nuclei(tuple(args.shape), rng=42)
    nets = {name: load_model(name) for name in args.models}
    best = dict.fromkeys(nets, float("inf"))
    for _ in range(args.repeats):
        for name, net in nets.items():
            start = time.perf_counter()
            predict(image, net, device=args.device)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"image {tuple(args.shape)} ({image.size:,} voxels), device {args.device}, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f} s, {image.size / seconds / 1e6:.2f} M voxels/s, "
              f"{seconds / best[args.models[0]]:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
