"""Memory and time estimates for a segmentation run, from the model's geometry and the tile grid.

An estimate, not a measurement: activation memory follows
:func:`tiled_unet.devices.activation_bytes`; time is the multiply-adds of the network
on every tile divided by a nominal speed of the device, replaced by the speed measured
in the last run of this session once there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import InferenceConfig
from ..engine.devices import (
    activation_bytes,
    resolve_device,
)
from ..engine.plan import make_tile_plan
from ..io.layout import SPATIAL, Layout

#: nominal speeds (floating point operations per second) until a run has been measured; CPU: per
#: thread (about 1e11 was measured for float32 on one core of an AVX-512 server)
NOMINAL_FLOPS = {"cpu": 8e10, "cuda": 1e13, "mps": 2e12}
MEASURED_FLOPS: dict[str, float] = {}


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

    def text(self) -> str:
        speed = "measured speed of the last run" if self.measured else "nominal device speed"
        where = "result in memory" if self.result_bytes else "result written to zarr"
        return (f"Estimate: {self.tiles} tile(s) of {'x'.join(map(str, self.input_tile))} x {self.frames} "
                f"frame(s); about {_size(self.tile_bytes)} per tile on {self.device}, "
                f"{_size(self.result_bytes) + ' ' if self.result_bytes else ''}{where}; "
                f"roughly {_duration(self.seconds)} ({speed}, +- a factor 2).")


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


def forward_flops(config, input_shape: tuple[int, ...]) -> float:
    """Floating point operations of one forward pass (convolutions; sizes followed layer by layer)."""
    k = 3 ** config.ndim
    shrink = 2 if config.padding == "valid" else 0
    sizes = list(input_shape)
    total = 0.0
    skips = []
    c_in = config.in_channels
    for level in range(config.depth + 1):
        c = config.base_channels * 2**level
        for c_from in (c_in, c):
            sizes = [n - shrink for n in sizes]
            total += 2 * k * c_from * c * math.prod(sizes)
        c_in = c
        if level < config.depth:
            skips.append(c)
            sizes = [n // 2 for n in sizes]
    for level in reversed(range(config.depth)):
        c = config.base_channels * 2**level
        sizes = [2 * n for n in sizes]
        total += 2 * (2 * c) * c * math.prod(sizes)  # 2x up-convolution: one output voxel per input tap
        for c_from in (2 * c, c):
            sizes = [n - shrink for n in sizes]
            total += 2 * k * c_from * c * math.prod(sizes)
    return total


def estimate(spatial_shape: tuple[int, ...], frames: int, net, *, tile_shape="auto", device: str = "auto",
             in_memory: bool = True, batch_size: int = 1, halo: int | None = None) -> Estimate:
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
    speed = MEASURED_FLOPS.get(dev.type)
    nominal = NOMINAL_FLOPS.get(dev.type, NOMINAL_FLOPS["cpu"])
    if dev.type == "cpu":
        nominal *= torch.get_num_threads() ** 0.8
    seconds = flops / (speed or nominal)
    return Estimate(len(tiles), frames, tuple(input_tile), per_tile, result, flops, seconds,
                    speed is not None, str(dev))


def record_speed(device: str, flops: float, seconds: float) -> None:
    """Remember the speed of a finished run, for the next estimates on that device."""
    if seconds > 0.2 and flops > 0:
        MEASURED_FLOPS[resolve_device(device).type] = flops / seconds
