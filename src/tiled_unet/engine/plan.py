"""The tile plan of one input, made once and handed to every path (resumed, distributed), and the
record of the tiles a run has stored."""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import InferenceConfig
from ..io.layout import Layout, parse_layout
from ..model import UNet
from .devices import auto_tile_shape, memory_budget, resolve_device
from .tiling import Tile, UNetGeometry, plan_tiles

#: largest output chunk (bytes of float32 probabilities)
MAX_CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one input for one model and inference config, made once by :func:`make_tile_plan`
    and handed to every path (in memory, zarr, resumed, distributed) and to the time estimate."""

    layout: Layout
    geometry: UNetGeometry
    tiles: tuple[Tile, ...]
    step: tuple[int, ...]
    chunks: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def classes(self) -> int:
        return self.output_shape[len(self.layout.lead_shape)]

    @property
    def frames(self) -> int:
        return math.prod(self.layout.lead_shape)


def make_tile_plan(layout: Layout, net: UNet, cfg: InferenceConfig, device: torch.device | None = None) -> TilePlan:
    """The one place that plans tiles: geometry (with ``cfg.halo``), tile shape ("auto" resolved for the
    device's memory budget), tiles, step and output chunks."""
    if cfg.halo is not None and net.config.padding == "valid":
        raise ValueError("halo can only be set for same-padding models; a valid-padding model's halo "
                         "is fixed by its architecture")
    geometry = net.geometry if cfg.halo is None else dataclasses.replace(net.geometry, same_halo=cfg.halo)
    device = resolve_device(cfg.device) if device is None else device
    tiles = tuple(plan_tiles(layout.spatial_shape, geometry, choose_tile_shape(cfg, net, geometry, layout, device)))
    step = tuple(t.write_stop - t.write_start for t in tiles[0].spans)
    classes = net.config.num_classes
    return TilePlan(layout, geometry, tiles, step, output_chunks(layout, classes, step), layout.output_shape(classes))


def tile_plan(source: Any, net: UNet, axes: str | None, cfg: InferenceConfig) -> TilePlan:
    """:func:`make_tile_plan` for an opened input ``source`` with ``axes`` (None: inferred)."""
    return make_tile_plan(parse_layout(source.shape, source.dtype, net.config, axes), net, cfg)


def auto_tile_shape_fits(net: UNet, geometry: UNetGeometry, layout: Layout, budget: int) -> bool:
    """Whether the smallest tile fits ``budget`` bytes."""
    try:
        auto_tile_shape(net.config, geometry, layout.spatial_shape, budget)
    except ValueError:
        return False
    return True


def choose_tile_shape(cfg: InferenceConfig, net: UNet, geometry: UNetGeometry, layout: Layout,
                       device: torch.device) -> tuple[int, ...]:
    if cfg.tile_shape == "auto":
        total = memory_budget(device, cfg.memory_budget)
        try:
            return auto_tile_shape(net.config, geometry, layout.spatial_shape, total // cfg.batch_size)
        except ValueError:
            if cfg.batch_size == 1 or not auto_tile_shape_fits(net, geometry, layout, total):
                raise
            raise ValueError(f"batch_size {cfg.batch_size} (CLI --batch-size) does not fit: the {cfg.batch_size} "
                             f"tiles of a batch share the memory budget of {total / 2**20:.0f} MiB and not even the "
                             f"smallest tiles fit; use a smaller batch size (1 fits)") from None
    tile = tuple(int(t) for t in cfg.tile_shape)
    if len(tile) != geometry.ndim:
        raise ValueError(f"tile_shape must have {geometry.ndim} sizes ({layout.spatial_axes}) for this "
                         f"{geometry.ndim}-D model, got {tile}")
    return tile


def output_chunks(layout: Layout, classes: int, step: tuple[int, ...]) -> tuple[int, ...]:
    """Zarr chunks aligned with the output tiles: the tile step, halved until small enough."""
    chunk = list(step)
    while math.prod(chunk) * classes * 4 > MAX_CHUNK_BYTES and max(chunk) % 2 == 0 and max(chunk) > 16:
        chunk[chunk.index(max(chunk))] //= 2
    spatial = tuple(min(c, n) for c, n in zip(chunk, layout.spatial_shape))
    return (1,) * len(layout.lead_shape) + (classes,) + spatial


def tile_region(plan: TilePlan, frame: int, tile: int) -> tuple[slice | int, ...]:
    """Index of the output region tile ``tile`` of frame ``frame`` (flat, as the engine counts) writes."""
    lead = tuple(int(i) for i in np.unravel_index(frame, plan.layout.lead_shape)) if plan.layout.lead_shape else ()
    return lead + (slice(None),) + plan.tiles[tile].write_slices


def tile_checksum(array: Any, plan: TilePlan, frame: int, tile: int) -> int:
    """CRC-32 of the stored values of one tile (read back from ``array``)."""
    values = np.ascontiguousarray(np.asarray(array[tile_region(plan, frame, tile)]))
    return zlib.crc32(values.view(np.uint8).reshape(-1))


class TileRecord:
    """A :class:`~tiled_unet.engine.sinks.TileHook` of resumable runs: skips recorded tiles (and, for a
    block of a distributed run, those outside it) and appends stored tiles to ``path``, one line
    ``frame tile crc32`` each, the checksum read back from ``out`` (the array the run writes into,
    laid out by ``plan``) so that a rerun can verify what it skips."""

    def __init__(self, path: str | None, done: set[tuple[int, int]] = frozenset(),
                 select: dict[int, set[int]] | None = None,
                 intensities: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
                 out: Any = None, plan: TilePlan | None = None):
        if path is not None and (out is None or plan is None):
            raise ValueError("a TileRecord that writes a record needs the output array and its tile plan "
                             "(out=, plan=) to checksum the stored tiles")
        self.path, self.done, self.select, self.intensities = path, set(done), select, intensities
        self.out, self.plan = out, plan
        self.stored = 0

    def skip(self, frame: int, tile: int) -> bool:
        if self.select is not None and tile not in self.select.get(frame, ()):
            return True
        return (frame, tile) in self.done

    def intensity(self, frame: int):
        return None if self.intensities is None else self.intensities.get(frame)

    def written(self, frame: int, tiles: list[int]) -> None:
        self.stored += len(tiles)
        if self.path is not None:
            lines = "".join(f"{frame} {t} {tile_checksum(self.out, self.plan, frame, t):08x}\n" for t in tiles)
            with open(self.path, "a") as fh:  # one small append: whole lines or a torn last line
                fh.write(lines)
