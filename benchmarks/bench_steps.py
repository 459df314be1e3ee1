"""Training steps per second on the CPU: float32 against channels-last memory and bf16 autocast.

    python benchmarks/bench_steps.py [--steps 4] [--batch 8]

One forward + backward + Adam step of the built-in recipes' networks (2D: depth 3, 24 base
channels, 188x188 input; 3D: depth 2, 32 base channels, 64x88x88 input) on random data, timed
for each way side by side in one run (the first step of each way is a warm-up and not counted).
Training uses channels-last on the CPU; ``--precision bfloat16`` adds bf16 autocast.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tiled_unet.training.datasets import patch_shapes
from tiled_unet.engine.devices import cpu_supports_bf16
from tiled_unet.training.loss import weighted_cross_entropy
from tiled_unet.training.loop import new_model

CASES = {"2D": dict(ndim=2, depth=3, base=24, patch=(96, 96)),
         "3D": dict(ndim=3, depth=2, base=32, patch=(24, 48, 48))}
WAYS = (("float32", False, False), ("float32, channels-last", True, False), ("bf16, channels-last", True, True))


def steps_per_second(net, x, targets, weights, channels_last: bool, bf16: bool, steps: int) -> float:
    layout = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    net = net.to(memory_format=layout if channels_last else torch.contiguous_format)
    x = x.contiguous(memory_format=layout if channels_last else torch.contiguous_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = weighted_cross_entropy(logits.float(), targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return steps / sum(times[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 kernels: "
          f"{cpu_supports_bf16()}, batch {args.batch}, {args.steps} timed steps per way")
    print(f"{'case':5} {'way':24} {'patches/s':>10} {'x float32':>10}")
    for case, spec in CASES.items():
        torch.manual_seed(0)
        net = new_model(spec["ndim"], depth=spec["depth"], base_channels=spec["base"])
        inputs, outputs = patch_shapes(net.geometry, spec["patch"])
        x = torch.randn(args.batch, 1, *inputs)
        targets = torch.randint(0, 3, (args.batch, *outputs))
        weights = torch.ones(args.batch, *outputs)
        base = None
        for way, channels_last, bf16 in WAYS:
            rate = args.batch * steps_per_second(net, x, targets, weights, channels_last, bf16, args.steps)
            base = base or rate
            print(f"{case:5} {way:24} {rate:10.2f} {rate / base:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
