"""BatchNorm folded into the convolutions: the PyTorch forward of one tile, with and without, side by side.

The engine runs :meth:`tiled_unet.model.UNet.fused_for_inference`; this times it against the
model as loaded, in one process, the two interleaved (bf16 autocast and channels-last as the
engine on a CPU with bf16, else float32), on the built-in models' usual tile inputs.

    python benchmarks/bench_fold.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import tiled_unet
from tiled_unet.engine.devices import resolve_precision

TILES = {"nuclei-3d": (1, 1, 104, 232, 232), "nuclei-2d": (1, 1, 1052, 1052)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    amp = resolve_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {amp or torch.float32}")
    for name, shape in TILES.items():
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        net = tiled_unet.load_model(name).eval()
        nets = {"as loaded": copy.deepcopy(net).to(memory_format=fmt),
                "folded": net.fused_for_inference().to(memory_format=fmt)}
        x = torch.randn(shape).contiguous(memory_format=fmt)
        times: dict[str, list[float]] = {k: [] for k in nets}
        outputs = {}
        for repeat in range(args.repeats + 1):  # the first call of each warms up
            for key, model in nets.items():
                with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                    start = time.perf_counter()
                    outputs[key] = model(x).float()
                    seconds = time.perf_counter() - start
                if repeat:
                    times[key].append(seconds)
        median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        with torch.inference_mode():
            reference = nets["as loaded"](x).softmax(1)
        errors = {k: (o.softmax(1) - reference).abs().max().item() for k, o in outputs.items()}
        print(f"{name}, input {shape[2:]}: as loaded {median['as loaded']:.2f} s, folded {median['folded']:.2f} s "
              f"(median of {args.repeats}): {median['as loaded'] / median['folded']:.2f}x; max abs difference of "
              f"probabilities from float32: as loaded {errors['as loaded']:.3f}, folded {errors['folded']:.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
