"""Resumable zarr segmentation: a run killed at any moment continues where it stopped.

The probabilities go to ``.<output>.partial/probabilities.zarr`` (chunks aligned with
tiles, so a tile is whole chunks), next to ``manifest.json`` (input, model hash, options,
tile plan) and ``tiles.txt``, to which a line ``frame tile`` is appended only after the
tile is stored. A rerun with the same manifest skips the recorded tiles; the result is
bit for bit that of an uninterrupted run (same tiles, same batches, same computation).
Labels are then made from the finished probabilities and moved into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np
import zarr

from .config import InferenceConfig, InstanceConfig
from .io import open_image
from .layout import Layout, parse_layout
from .model import UNet

MANIFEST_FORMAT = "tiled-unet-partial"


@dataclass(frozen=True)
class Notice:
    """A message about a file's run (resumed, started over, ...)."""

    text: str


@dataclass(frozen=True)
class Plan:
    """The tile plan of one input: what a resumed or distributed run must reproduce."""

    layout: Layout
    step: tuple[int, ...]
    tiles: int
    chunks: tuple[int, ...]
    output_shape: tuple[int, ...]


def tile_plan(source: Any, net: UNet, axes: str | None, cfg: InferenceConfig) -> Plan:
    """The engine's tile plan for ``source`` (``cfg.tile_shape`` "auto" resolved here, once)."""
    from .devices import resolve_device
    from .predict import _choose_tile_shape, output_chunks
    from .tiling import UNetGeometry, plan_tiles

    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    geometry = UNetGeometry(net.config.ndim, net.config.depth, net.config.padding, cfg.halo)
    tiles = plan_tiles(layout.spatial_shape, geometry,
                       _choose_tile_shape(cfg, net, geometry, layout, resolve_device(cfg.device)))
    step = tuple(t.write_stop - t.write_start for t in tiles[0].spans)
    classes = net.config.num_classes
    return Plan(layout, step, len(tiles), output_chunks(layout, classes, step), layout.output_shape(classes))


def model_bytes(net: UNet) -> tuple[bytes, str]:
    """The model as safetensors bytes (weights + config JSON; no pickle) and their SHA-256."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save(state, metadata={"config": json.dumps(net.model_config.to_dict(), sort_keys=True)})
    return data, hashlib.sha256(data).hexdigest()


def model_from_bytes(data: bytes) -> UNet:
    """The model of :func:`model_bytes` (the safetensors header holds the config)."""
    from safetensors.torch import load

    from .config import ModelConfig

    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    net = UNet(ModelConfig.from_dict(json.loads(header["__metadata__"]["config"])))
    net.load_state_dict(load(data), strict=True)
    return net.eval()


class TileRecord:
    """The ``tile_hook`` of :func:`tiled_unet.predict_iter`: skips recorded tiles (and, for a
    block of a distributed run, those outside it) and appends stored tiles to ``path``."""

    def __init__(self, path: str | None, done: set[tuple[int, int]] = frozenset(),
                 select: dict[int, set[int]] | None = None,
                 intensities: dict[int, tuple[np.ndarray, np.ndarray]] | None = None):
        self.path, self.done, self.select, self.intensities = path, set(done), select, intensities
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
            with open(self.path, "a") as fh:  # one small append: whole lines or a torn last line
                fh.write("".join(f"{frame} {t}\n" for t in tiles))


def read_record(path: Path) -> set[tuple[int, int]]:
    """Tiles recorded in ``path``; a line torn by a kill is ignored (that tile is redone)."""
    done = set()
    if path.exists():
        for line in path.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts) and line.endswith(parts[1]):
                done.add((int(parts[0]), int(parts[1])))
    return done


def _manifest(image: Any, source: Any, net: UNet, digest: str, axes: str | None, cfg: InferenceConfig) -> dict:
    """What must match for a rerun to continue a partial run (the tile plan is added to it)."""
    from .io import source_path

    src = source_path(image)
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("prefetch", "memory_budget")}
    return json.loads(json.dumps({
        "format": MANIFEST_FORMAT, "version": 1,
        "input": os.path.abspath(src) if src else None, "input_shape": list(source.shape),
        "input_dtype": str(source.dtype), "axes": axes, "model": net.model_config.name,
        "model_sha256": digest, "inference": options}))


def _plan_dict(plan: Plan) -> dict:
    return {"step": list(plan.step), "tiles": plan.tiles, "chunks": list(plan.chunks),
            "output_shape": list(plan.output_shape)}


def prepare(partial: Path, manifest: dict, overwrite: bool, make_plan) -> tuple[Plan, Any, set, str | None]:
    """Continue a partial run with the same manifest, or start one: (plan, probabilities,
    tiles done, notice). ``make_plan(step or None)`` gives the tile plan (the earlier run's
    step on resume, as "auto" may choose differently on another day)."""
    meta = partial / "manifest.json"
    old = None
    if partial.exists():
        try:
            old = json.loads(meta.read_text())
        except (OSError, ValueError):
            pass
        same = old is not None and {k: v for k, v in old.items() if k != "plan"} == manifest
        if same and not overwrite and (partial / "probabilities.zarr").exists():
            plan = make_plan(tuple(old["plan"]["step"]))
            if _plan_dict(plan) == old["plan"]:
                done = read_record(partial / "tiles.txt")
                probs = zarr.open_array(str(partial / "probabilities.zarr"), mode="r+")
                total = plan.tiles * int(np.prod(plan.layout.lead_shape))
                return plan, probs, done, f"resuming: {len(done)} of {total} tiles already done"
        if overwrite:
            notice = "starting over (overwrite): the earlier partial run is discarded"
        else:
            changed = sorted(k for k in manifest if old is None or old.get(k) != manifest.get(k))
            notice = f"starting over: the earlier partial run differs in {', '.join(changed) or 'its tile plan'}"
        shutil.rmtree(partial)
    else:
        notice = None
    plan = make_plan(None)
    partial.mkdir(parents=True)
    probs = zarr.open_array(str(partial / "probabilities.zarr"), mode="w", shape=plan.output_shape,
                            chunks=plan.chunks, dtype=manifest["inference"]["output_dtype"])
    tmp = partial / "manifest.json.tmp"
    tmp.write_text(json.dumps({**manifest, "plan": _plan_dict(plan)}, indent=1))
    os.replace(tmp, meta)
    return plan, probs, set(), notice


def segment_zarr_iter(image: Any, net: UNet, partial: Path, *, instances: InstanceConfig,
                      class_names: tuple[str, ...], overwrite: bool = False, axes: str | None = None,
                      block_shape: tuple[int, ...] | None = None, scheduler: Any = None,
                      client: Any = None, options: dict | None = None) -> Generator[Any, None, Any]:
    """Probabilities (resumable) and labels of ``image`` in ``partial``; returns the labels
    zarr array ``partial/labels.zarr`` (the caller moves it, and the probabilities, into place)."""
    from .segment import _segment_frames, _stream

    cfg = InferenceConfig(**(options or {}))
    source = open_image(image)
    _, digest = model_bytes(net)
    manifest = _manifest(image, source, net, digest, axes, cfg)

    def make_plan(step):
        return tile_plan(source, net, axes, cfg if step is None else dataclasses.replace(cfg, tile_shape=step))

    plan, probs, done, notice = prepare(partial, manifest, overwrite, make_plan)
    if notice:
        yield Notice(notice)
    cfg = dataclasses.replace(cfg, tile_shape=plan.step)
    record = TileRecord(str(partial / "tiles.txt"), done)
    if client is not None:
        from .distributed import predict_blocks_iter

        yield from predict_blocks_iter(image, net, probs, plan, record, client, cfg)
    else:
        from .predict import predict_iter

        yield from predict_iter(image, net, out=probs, axes=plan.layout.axes, config=cfg, tile_hook=record)
    probs.attrs.update({"axes": plan.layout.output_axes, "model": net.model_config.name,
                        "class_names": list(class_names), "complete": True})
    labels_path = partial / "labels.zarr"
    if labels_path.exists():
        shutil.rmtree(labels_path)
    nd = net.config.ndim
    lead, spatial = plan.output_shape[:-nd - 1], plan.output_shape[-nd:]
    scheduler = client if client is not None else scheduler
    if not lead:
        from .blockwise import labels_blockwise

        yield from _stream(labels_blockwise, probs, labels_path, config=instances, class_names=class_names,
                           block_shape=block_shape, scheduler=scheduler, tmpdir=partial)
    else:
        yield from _segment_frames(probs, labels_path, lead, spatial, instances, class_names, block_shape,
                                   True, scheduler, str(partial))
    labels = zarr.open_array(str(labels_path), mode="r+")
    labels.attrs.update({"axes": plan.layout.output_axes.replace("C", ""), "model": net.model_config.name,
                         "instances": instances.to_dict()})
    return labels
