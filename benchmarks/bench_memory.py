"""Memory is bounded by the tile, not the volume.

Creates zarr volumes of increasing depth on disk and runs ``tiled_unet.predict``
zarr -> zarr on each with one fixed tile shape, each run in a fresh Python process.
Prints time and peak resident memory per run, and PASS if the peak RSS of all runs
lies within 10 % of each other (a whole-volume approach grows with the volume).

    python benchmarks/bench_memory.py            # 64, 128, 256 planes of 512x512
    python benchmarks/bench_memory.py --quick    # tiny smoke test
    python benchmarks/bench_memory.py --model nuclei-3d --backend openvino

Peak RSS is the process's own high-water mark (``VmHWM`` from /proc/self/status on
Linux, ``ru_maxrss`` elsewhere), read by the child just before it exits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 0.10
QUICK = {"planes": [8, 16, 32], "size": 128, "tile": (8, 64, 64), "chunks": (8, 64, 64)}


def peak_rss_mib() -> float:
    """Peak resident set size of this process, in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def make_volume(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], seed: int = 0):
    """A smooth, noisy uint16 volume written slab by slab (never whole in memory).

    Reused when ``path`` already holds a volume made with the same parameters.
    """
    import numpy as np
    import zarr

    key = {"shape": list(shape), "chunks": list(chunks), "seed": seed, "generator": 1}
    if path.exists():
        try:
            if dict(zarr.open_array(str(path), mode="r").attrs).get("bench") == key:
                return
        except Exception:  # noqa: BLE001 - anything unreadable is recreated
            pass
    rng = np.random.default_rng(seed)
    waves = rng.uniform(0.01, 0.06, size=(6, len(shape))) * rng.choice([-1, 1], size=(6, len(shape)))
    phases = rng.uniform(0, 2 * np.pi, size=6)
    arr = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="uint16")
    grids = [np.arange(n, dtype=np.float32) for n in shape[1:]]
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(z0 + chunks[0], shape[0])
        coords = np.meshgrid(np.arange(z0, z1, dtype=np.float32), *grids, indexing="ij", sparse=True)
        field = np.zeros((z1 - z0,) + tuple(shape[1:]), np.float32)
        for k, phase in zip(waves, phases):
            field += np.cos(sum(float(c) * g for c, g in zip(k, coords)) + phase)
        field = np.maximum(field, 0) ** 2 * 300 + 500
        field += rng.normal(scale=40, size=field.shape).astype(np.float32)
        arr[z0:z1] = np.clip(field, 0, 65535).astype(np.uint16)
    arr.attrs["bench"] = key


def child(spec: dict) -> dict:
    """Runs in the fresh process: a baseline (import + model) or one prediction."""
    import torch  # noqa: F401 - part of the baseline
    import tiled_unet

    net = tiled_unet.load_model(spec["model"])
    result = {"config": net.config.to_dict()}
    if spec["task"] == "predict":
        from tiled_unet.engine.tiling import UNetGeometry, plan_tiles

        import zarr

        shape = zarr.open_array(spec["volume"], mode="r").shape
        geometry = UNetGeometry(net.config.ndim, net.config.depth, net.config.padding)
        tiles = plan_tiles(shape, geometry, tuple(spec["tile"]))
        start = time.perf_counter()
        tiled_unet.predict(spec["volume"], net, out=spec["out"], overwrite=True,
                           tile_shape=tuple(spec["tile"]), device="cpu", backend=spec["backend"])
        result.update(seconds=time.perf_counter() - start, tiles=len(tiles),
                      input_shape=list(tiles[0].input_shape))
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_script(script: str, flag: str, spec: dict, env: dict | None = None) -> dict:
    """Run ``script flag JSON`` in a fresh Python process (``env``: variables added to its
    environment); return the dict of its last ``RESULT`` line."""
    proc = subprocess.run([sys.executable, os.path.abspath(script), flag, json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child process failed (exit code {proc.returncode}) for {spec}")
    return json.loads(lines[-1][len("RESULT "):])


def run_child(spec: dict) -> dict:
    return run_script(__file__, "--child", spec)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Each prediction runs in its own process, so each peak RSS "
                                            "belongs to one volume.")
    parser.add_argument("--planes", type=int, nargs="+", default=[64, 128, 256],
                        help="depths (Z) of the volumes (default: 64 128 256)")
    parser.add_argument("--size", type=int, default=512, help="Y and X size of every plane (default: 512)")
    parser.add_argument("--tile", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"),
                        help="output tile shape passed to predict (default: 32 256 256)")
    parser.add_argument("--chunks", type=int, nargs=3, default=(16, 256, 256), metavar=("Z", "Y", "X"),
                        help="zarr chunks of the input volumes (default: 16 256 256)")
    parser.add_argument("--model", default="placeholder-3d",
                        help="built-in model name or .safetensors file (default: placeholder-3d)")
    parser.add_argument("--backend", default="torch", choices=("torch", "openvino", "auto"),
                        help="inference backend passed to predict (default: torch)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_data",
                        help="where volumes and outputs are written (default: benchmarks/_data)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke test: 8, 16, 32 planes of 128x128, tile 8 64 64")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.planes, args.size = QUICK["planes"], QUICK["size"]
        args.tile, args.chunks = QUICK["tile"], QUICK["chunks"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    tile = tuple(args.tile)
    base = run_child({"task": "baseline", "model": args.model})
    print(f"model {args.model}: {base['config']}")
    print(f"tile shape (output) {tile}, input chunks {tuple(args.chunks)}, backend {args.backend}, "
          f"torch threads: default")
    rows = []
    for planes in sorted(args.planes):
        shape = (planes, args.size, args.size)
        volume = args.workdir / f"memory_{planes}x{args.size}x{args.size}.zarr"
        t0 = time.perf_counter()
        make_volume(volume, shape, tuple(min(c, n) for c, n in zip(args.chunks, shape)))
        made = time.perf_counter() - t0
        res = run_child({"task": "predict", "model": args.model, "volume": str(volume),
                         "out": str(args.workdir / f"memory_{planes}_probs.zarr"), "tile": list(tile),
                         "backend": args.backend})
        rows.append((planes, math.prod(shape), res))
        print(f"  {planes} planes: volume ready in {made:.1f} s, {res['tiles']} tiles of input "
              f"{tuple(res['input_shape'])}, predicted in {res['seconds']:.1f} s", flush=True)
    smallest = rows[0][2]["peak_rss_mib"]
    print()
    print("| planes | voxels | time s | output Mvox/s | peak RSS MiB | RSS / smallest |")
    print("|---:|---:|---:|---:|---:|---:|")
    for planes, voxels, res in rows:
        print(f"| {planes} | {voxels:,} | {res['seconds']:.1f} | {voxels / res['seconds'] / 1e6:.2f} | "
              f"{res['peak_rss_mib']:.0f} | {res['peak_rss_mib'] / smallest:.3f} |")
    print(f"| baseline (import torch + tiled_unet, build model) | | | | {base['peak_rss_mib']:.0f} | |")
    peaks = [res["peak_rss_mib"] for _, _, res in rows]
    spread = max(peaks) / min(peaks) - 1
    volume_growth = rows[-1][1] / rows[0][1]
    ok = spread <= TOLERANCE
    print()
    print(f"{'PASS' if ok else 'FAIL'}: peak RSS spread {spread:.1%} across a {volume_growth:.0f}x range of "
          f"volume sizes (limit {TOLERANCE:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
