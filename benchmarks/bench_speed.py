"""Throughput of tiled-unet against the raw network and MONAI's sliding-window inference.

One same-padding 3D U-Net (seeded) and one uint16 zarr volume, five rows, each in a
fresh process (so each peak RSS belongs to one row):

  a  raw forward     the network alone on one in-memory tile of the engine's input
                     shape, same precision and memory format as the engine; warm-up
                     call, then timed repeats. The throughput limit.
  b  tiled-unet      predict() zarr -> zarr, exact halo (equal to whole-volume inference)
  c  tiled-unet      the same with a smaller halo (--fast-halo): approximate near tile
                     borders, less computation per output voxel
  d  MONAI           sliding_window_inference, roi = the input tile of (a), overlap 0.25,
                     mode "constant", sw_batch_size 1, float32 contiguous; end to end:
                     read the zarr into memory, percentile 1/99.8 scaling, inference,
                     softmax, write a zarr
  e  MONAI bf16      as d, under torch.autocast(bfloat16) with model and input in
                     channels_last_3d (the precision/memory format tiled-unet uses)

Times cover the work after the network is built (no warm-up in b-e: a fresh process
pays oneDNN's first-call setup, as a user does). "computed" voxels are network input
voxels: tiles x tile input voxels (b, c) or windows x roi voxels (d, e).

    python benchmarks/bench_speed.py            # 64 x 384 x 384, depth 3, 16 channels
    python benchmarks/bench_speed.py --quick    # tiny smoke test
    python benchmarks/bench_speed.py --builtin  # built-in models, PyTorch and OpenVINO end to end
                                                # (bench_backends.py; other options go to it)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import make_volume, peak_rss_mib, run_script  # noqa: E402

ROWS = {
    "a": "raw forward (one tile, warm)",
    "b": "tiled-unet zarr->zarr (exact halo)",
    "c": "tiled-unet zarr->zarr (halo {fast_halo}, approximate)",
    "d": "MONAI sliding window (float32, defaults)",
    "e": "MONAI sliding window (bf16 autocast, channels_last_3d)",
}
QUICK = {"shape": (16, 64, 64), "depth": 2, "base_channels": 8, "tile": ("16", "32", "32"),
         "chunks": (8, 32, 32), "repeats": 2}


def build_net(spec: dict):
    import torch
    from tiled_unet import UNet, UNetConfig

    torch.manual_seed(spec["seed"])
    return UNet(UNetConfig(ndim=3, depth=spec["depth"], base_channels=spec["base_channels"],
                           padding="same", num_classes=2)).eval()


def engine_format():
    """The autocast dtype (or None) and memory format the engine uses on this CPU."""
    import torch
    from tiled_unet.engine.devices import resolve_precision

    return resolve_precision("auto", torch.device("cpu")), torch.channels_last_3d


def row_raw(spec: dict, net) -> dict:
    import torch

    amp, fmt = engine_format()
    net.to(memory_format=fmt)
    x = torch.randn((1, 1) + tuple(spec["input_shape"])).contiguous(memory_format=fmt)

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            net(x).float()
        return time.perf_counter() - start

    first = forward()
    times = sorted(forward() for _ in range(spec["repeats"]))
    voxels = math.prod(spec["input_shape"])
    return {"seconds": times[len(times) // 2], "first_call": first, "computed": voxels, "output": None}


def row_ours(spec: dict, net, halo: int | None) -> dict:
    import tiled_unet
    from tiled_unet.engine.tiling import UNetGeometry, plan_tiles

    shape, tile = tuple(spec["shape"]), tuple(spec["tile"])
    tiles = plan_tiles(shape, UNetGeometry(3, spec["depth"], "same", halo), tile)
    start = time.perf_counter()
    tiled_unet.predict(spec["volume"], net, out=spec["out"], overwrite=True, tile_shape=tile,
                       device="cpu", halo=halo, backend=spec["backend"])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "computed": len(tiles) * math.prod(tiles[0].input_shape),
            "output": math.prod(shape), "passes": len(tiles), "input_shape": list(tiles[0].input_shape)}


def row_monai(spec: dict, net, bf16: bool) -> dict:
    import numpy as np
    import torch
    import zarr
    from monai.inferers import sliding_window_inference
    from monai.transforms import ScaleIntensityRangePercentiles

    roi = tuple(spec["input_shape"])
    fmt = torch.channels_last_3d if bf16 else torch.contiguous_format
    net.to(memory_format=fmt)
    calls = []

    def predictor(window):
        calls.append(window.shape[0])
        return net(window.contiguous(memory_format=fmt))

    start = time.perf_counter()
    image = zarr.open_array(spec["volume"], mode="r")[:]
    scale = ScaleIntensityRangePercentiles(lower=1.0, upper=99.8, b_min=0.0, b_max=1.0, clip=False)
    x = torch.as_tensor(scale(image[None].astype(np.float32)))[None].contiguous(memory_format=fmt)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = sliding_window_inference(x, roi, 1, predictor, overlap=0.25, mode="constant")
    probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)[0].numpy()
    chunks = (probs.shape[0],) + tuple(min(t, n) for t, n in zip(spec["tile"], probs.shape[1:]))
    out = zarr.open_array(spec["out"], mode="w", shape=probs.shape, chunks=chunks, dtype="float32")
    out[:] = probs
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "computed": sum(calls) * math.prod(roi), "output": math.prod(spec["shape"]),
            "passes": sum(calls)}


def child(spec: dict) -> dict:
    net = build_net(spec)
    row = spec["row"]
    if row == "a":
        result = row_raw(spec, net)
    elif row in "bc":
        result = row_ours(spec, net, None if row == "b" else spec["fast_halo"])
    else:
        result = row_monai(spec, net, bf16=row == "e")
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_child(spec: dict) -> dict:
    return run_script(__file__, "--row", spec)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 384, 384), metavar=("Z", "Y", "X"),
                        help="volume shape (default: 64 384 384)")
    parser.add_argument("--chunks", type=int, nargs=3, default=(16, 256, 256), metavar=("Z", "Y", "X"),
                        help="zarr chunks of the input volume (default: 16 256 256)")
    parser.add_argument("--depth", type=int, default=3, help="U-Net depth (default: 3)")
    parser.add_argument("--base-channels", type=int, default=16, help="U-Net base channels (default: 16)")
    parser.add_argument("--tile", nargs="+", default=("64", "192", "192"), metavar="N",
                        help="output tile shape Z Y X of rows b and c, or 'auto' for the engine's own "
                             "choice from the memory budget (default: 64 192 192); the input tile of "
                             "the exact-halo plan is row a's tile and MONAI's roi")
    parser.add_argument("--fast-halo", type=int, default=16, help="halo of row c (default: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes in row a (default: 3)")
    parser.add_argument("--rows", default="abcde", help="which rows to run (default: abcde)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network weights (default: 0)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino"),
                        help="backend of rows b and c (default: auto, OpenVINO on bf16 CPUs for this volume)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_data",
                        help="where the volume and outputs are written (default: benchmarks/_data)")
    parser.add_argument("--builtin", action="store_true",
                        help="run bench_backends.py instead: nuclei-2d and nuclei-3d end to end on both backends")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke test: 16 x 64 x 64 volume, depth 2, 8 channels, tile 16 32 32")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.depth, args.base_channels = QUICK["shape"], QUICK["depth"], QUICK["base_channels"]
        args.tile, args.chunks, args.repeats = QUICK["tile"], QUICK["chunks"], QUICK["repeats"]
    if not (args.tile == ["auto"] or (len(args.tile) == 3 and all(t.isdigit() for t in args.tile))):
        parser.error(f"--tile takes 'auto' or three sizes Z Y X, got {' '.join(args.tile)}")
    if set(args.rows) - set(ROWS):
        parser.error(f"--rows takes letters from {''.join(ROWS)}, got {args.rows!r}")
    return args


def resolve_tile(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list]:
    """The output tile shape and the exact-halo plan (the engine's tiles) for the volume."""
    import torch
    from tiled_unet.engine.devices import auto_tile_shape, memory_budget
    from tiled_unet.engine.tiling import UNetGeometry, plan_tiles

    geometry = UNetGeometry(3, args.depth, "same")
    if list(args.tile) == ["auto"]:
        net = build_net({"seed": args.seed, "depth": args.depth, "base_channels": args.base_channels})
        tile = auto_tile_shape(net.config, geometry, shape, memory_budget(torch.device("cpu")))
    else:
        tile = tuple(int(t) for t in args.tile)
    return tile, plan_tiles(shape, geometry, tile)


def fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--builtin" in argv:
        import bench_backends

        return bench_backends.main([a for a in argv if a != "--builtin"])
    args = parse_args(argv)
    if args.row:
        print("RESULT " + json.dumps(child(json.loads(args.row))), flush=True)
        return 0
    import torch
    from tiled_unet.engine.tiling import UNetGeometry

    shape = tuple(args.shape)
    args.workdir.mkdir(parents=True, exist_ok=True)
    volume = args.workdir / f"speed_{'x'.join(map(str, shape))}.zarr"
    make_volume(volume, shape, tuple(min(c, n) for c, n in zip(args.chunks, shape)))
    tile, tiles = resolve_tile(args, shape)
    input_shape = tiles[0].input_shape
    amp, _ = engine_format()
    print(f"network: 3D U-Net, depth {args.depth}, {args.base_channels} base channels, same padding, "
          f"2 classes, seed {args.seed}; exact halo {UNetGeometry(3, args.depth, 'same').exact_halo}")
    print(f"volume {shape} uint16 ({math.prod(shape):,} voxels); output tile {tile}, network input tile "
          f"{input_shape} x {len(tiles)} tiles; engine precision {amp or torch.float32}, channels_last_3d; "
          f"torch threads {torch.get_num_threads()}; backend of b and c: {args.backend}")
    base = {"shape": list(shape), "tile": list(tile), "input_shape": list(input_shape), "depth": args.depth,
            "base_channels": args.base_channels, "seed": args.seed, "fast_halo": args.fast_halo,
            "repeats": args.repeats, "volume": str(volume), "backend": args.backend}
    results = {}
    for row in args.rows:
        spec = {**base, "row": row, "out": str(args.workdir / f"speed_probs_{row}.zarr")}
        results[row] = res = run_child(spec)
        print(f"  {row}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    print()
    print("| row | time s | output Mvox/s | computed Mvox/s | tiles/windows | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row, res in results.items():
        label = ROWS[row].format(fast_halo=args.fast_halo)
        out = res["output"] / res["seconds"] / 1e6 if res["output"] else None
        passes = res.get("passes", f"1 ({args.repeats} repeats)")
        print(f"| {row}. {label} | {res['seconds']:.2f} | {fmt(out)} | "
              f"{res['computed'] / res['seconds'] / 1e6:.2f} | {passes} | {res['peak_rss_mib']:.0f} |")
    if "a" in results:
        print(f"\nraw forward: first call {results['a']['first_call']:.2f} s "
              f"(oneDNN setup), then {results['a']['seconds']:.2f} s per call")
    print()
    ok = True

    def ratio(name: str, value: float, target: float | None = None) -> None:
        nonlocal ok
        verdict = ""
        if target is not None:
            verdict = f"  target >= {target}: {'PASS' if value >= target else 'FAIL'}"
            ok &= value >= target
        print(f"{name}: {value:.2f}{verdict}")

    speed = {r: res["computed"] / res["seconds"] for r, res in results.items()}
    if "a" in results and "b" in results:
        ratio("tiled-unet computed throughput / raw forward (b/a)", speed["b"] / speed["a"], 0.9)
    for ours in "bc":
        for monai, target in (("d", 2.0), ("e", None)):
            if ours in results and monai in results:
                name = f"tiled-unet ({ours}) end-to-end speed-up over {ROWS[monai]}"
                ratio(name, results[monai]["seconds"] / results[ours]["seconds"],
                      target if ours == "b" else None)
    if args.quick:
        print("(--quick: a smoke test; the volume is too small for the targets to mean anything)")
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
