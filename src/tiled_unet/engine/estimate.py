"""Memory and time estimates for a segmentation run, from the model's geometry and the tile grid.

An estimate, not a measurement: activation memory follows
:func:`tiled_unet.engine.devices.activation_bytes`; time is the multiply-adds of the network
on every tile divided by a nominal speed of the device, replaced by the speed measured
in the last run of this session once there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import InferenceConfig
from .backends import resolve_backend
from .devices import (
    activation_bytes,
    forward_flops,
    resolve_device,
    resolve_precision,
)
from .plan import make_tile_plan
from ..io.layout import SPATIAL, Layout

#: nominal speeds (floating point operations per second) until a run has been measured; CPU: per
#: thread (about 1e11 was measured for float32 on one core of an AVX-512 server)
NOMINAL_FLOPS = {"cpu": 8e10, "cuda": 1e13, "mps": 2e12}
#: OpenVINO against PyTorch on the CPU (1.5-2.6x measured per tile), and its start, compilation and first call
OPENVINO_SPEEDUP, OPENVINO_COMPILE_SECONDS = 2.0, 0.7
MEASURED_FLOPS: dict[tuple[str, str], float] = {}


@dataclass(frozen=True)
class Estimate:
    tiles: int
    frames: int
    input_tile: tuple[int, ...]
    tile_bytes: int
    result_bytes: int
    flops: float
    seconds: float
    measured: bool
    device: str
    backend: str = "torch"

    def text(self) -> str:
        speed = "measured speed of the last run" if self.measured else "nominal device speed"
        where = "result in memory" if self.result_bytes else "result written to zarr"
        return (f"Estimate: {self.tiles} tile(s) of {'x'.join(map(str, self.input_tile))} x {self.frames} "
                f"frame(s); about {_size(self.tile_bytes)} per tile on {self.device}, "
                f"{_size(self.result_bytes) + ' ' if self.result_bytes else ''}{where}; "
                f"roughly {_duration(self.seconds)} ({speed}, +- a factor 2"
                f"{'; OpenVINO, its compilation included' if self.backend == 'openvino' else ''}).")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(spatial_shape: tuple[int, ...], frames: int, net, *, tile_shape="auto", device: str = "auto",
             in_memory: bool = True, batch_size: int = 1, halo: int | None = None, precision: str = "auto",
             backend: str = "auto") -> Estimate:
    """Estimate memory (per tile and for the in-memory result) and time of segmenting an image,
    with the engine's own tile plan."""
    dev = resolve_device(device)
    ndim = net.config.ndim
    layout = Layout("T" + SPATIAL[ndim], (frames, *spatial_shape), ndim)
    config = InferenceConfig(tile_shape=tile_shape, device=device, batch_size=batch_size, halo=halo)
    tiles = make_tile_plan(layout, net, config, dev).tiles
    input_tile = tiles[0].input_shape
    per_tile = activation_bytes(net.config, input_tile, batch_size)
    voxels = math.prod(spatial_shape) * frames
    # probabilities (float32 per class) + labels (uint32) + seeds/masks while labelling
    result = voxels * (4 * net.config.num_classes + 4 + 8) if in_memory else 0
    flops = forward_flops(net.config, input_tile) * len(tiles) * frames
    chosen = resolve_backend(backend, dev, resolve_precision(precision, dev), flops)
    speed = MEASURED_FLOPS.get((dev.type, chosen))
    nominal = NOMINAL_FLOPS.get(dev.type, NOMINAL_FLOPS["cpu"])
    if dev.type == "cpu":
        nominal *= torch.get_num_threads() ** 0.8
    if chosen == "openvino":
        nominal *= OPENVINO_SPEEDUP
    seconds = flops / (speed or nominal) + (OPENVINO_COMPILE_SECONDS if chosen == "openvino" and not speed else 0)
    return Estimate(len(tiles), frames, tuple(input_tile), per_tile, result, flops, seconds,
                    speed is not None, str(dev), chosen)


def record_speed(device: str, flops: float, seconds: float, backend: str = "torch") -> None:
    """Remember the speed of a finished run (``backend``: the one that ran), for the next estimates."""
    if seconds > 0.2 and flops > 0:
        MEASURED_FLOPS[(resolve_device(device).type, backend)] = flops / seconds
