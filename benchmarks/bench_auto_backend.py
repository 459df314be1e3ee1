"""Where OpenVINO starts to pay: ``predict`` with ``nuclei-2d`` on both backends, by image size.

Each run in a fresh process (OpenVINO's start, compilation and first call counted, as a user
meets them), the backends interleaved, median of ``--runs``; no cell-size estimation
(``diameter="off"``), so the rows differ by the network alone. The network work of each size
(floating point operations, as ``backend="auto"`` counts them) is printed beside it: auto
picks OpenVINO from ``tiled_unet.engine.backends.AUTO_MIN_FLOPS``.

    python benchmarks/bench_auto_backend.py [--sizes 768 1024 1536 2048] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import run_script  # noqa: E402


def child(spec: dict) -> dict:
    import numpy as np
    import torch
    import tiled_unet
    from tiled_unet.config import InferenceConfig
    from tiled_unet.engine.devices import forward_flops
    from tiled_unet.engine.plan import make_tile_plan
    from tiled_unet.io.layout import parse_layout

    rng = np.random.default_rng(0)
    image = rng.random((spec["size"], spec["size"]), dtype=np.float32)
    net = tiled_unet.load_model("nuclei-2d")
    plan = make_tile_plan(parse_layout(image.shape, image.dtype, net.config, None), net,
                          InferenceConfig(device="cpu"), torch.device("cpu"))
    flops = forward_flops(net.config, plan.tiles[0].input_shape) * len(plan.tiles)
    start = time.perf_counter()
    tiled_unet.predict(image, net, diameter="off", device="cpu", backend=spec["backend"])
    return {"seconds": time.perf_counter() - start, "flops": flops}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[768, 1024, 1536, 2048])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print("RESULT " + json.dumps(child(json.loads(args.row))), flush=True)
        return 0
    from tiled_unet.engine.backends import AUTO_MIN_FLOPS

    print(f"auto picks OpenVINO from {AUTO_MIN_FLOPS:.1e} FLOPs")
    print("| image | network FLOPs | torch s | openvino s | torch / openvino |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes:
        times: dict[str, list[float]] = {"torch": [], "openvino": []}
        for _ in range(args.runs):
            for backend in times:
                result = run_script(__file__, "--row", {"size": size, "backend": backend})
                times[backend].append(result["seconds"])
        torch_s, ov_s = (sorted(t)[len(t) // 2] for t in times.values())
        print(f"| {size}x{size} | {result['flops']:.1e} | {torch_s:.2f} | {ov_s:.2f} | {torch_s / ov_s:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
