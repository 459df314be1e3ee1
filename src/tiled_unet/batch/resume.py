"""Resumable zarr segmentation: a run killed at any moment continues where it stopped.

The probabilities go to ``.<output>.partial/probabilities.zarr`` (chunks aligned with
tiles, so a tile is whole chunks), next to ``manifest.json`` (input, model hash, options,
tile plan) and ``tiles.txt``, to which a line ``frame tile crc32`` is appended only after the
tile is stored (the checksum of its values read back from the store). A rerun with the same
manifest verifies each recorded tile (its chunks present and readable, its checksum equal) and
skips those that pass; the others are recomputed, and a :class:`Notice` says how many. The
result is bit for bit that of an uninterrupted run (same tiles, same batches, same computation).
Labels are then made from the finished probabilities and moved into place.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import zarr

from ..config import InferenceConfig, InstanceConfig
from ..engine.distributed import predict_blocks_iter
from ..engine.plan import TilePlan, TileRecord, tile_checksum, tile_plan, tile_region
from ..engine.predict import predict_iter
from ..io.arrays import chunk_positions, open_image, source_path
from ..io.paths import remove
from ..model import UNet
from ..pipeline import labels_zarr_iter
from ..weights import model_bytes

MANIFEST_FORMAT = "tiled-unet-partial"


@dataclass(frozen=True)
class Notice:
    """A message about a file's run (resumed, started over, ...)."""

    text: str


def read_record(path: Path) -> dict[tuple[int, int], int | None]:
    """Tiles recorded in ``path`` -> their CRC-32 (None for a line without one, as older versions
    wrote); a line torn by a kill (no newline yet) is ignored, and a tile recorded twice keeps its last."""
    record: dict[tuple[int, int], int | None] = {}
    if path.exists():
        for line in path.read_text(errors="replace").split("\n")[:-1]:
            parts = line.split()
            if len(parts) not in (2, 3) or not (parts[0].isdigit() and parts[1].isdigit()):
                continue
            crc = parts[2] if len(parts) == 3 else ""
            valid = len(crc) == 8 and all(c in "0123456789abcdef" for c in crc)
            record[int(parts[0]), int(parts[1])] = int(crc, 16) if valid else None
    return record


def tile_chunk_files(root: Path, probs: Any, plan: TilePlan, frame: int, tile: int) -> list[Path]:
    """The chunk files of one tile in the zarr store at ``root``."""
    positions = chunk_positions(tile_region(plan, frame, tile), probs.chunks, probs.shape)
    return [root / probs.metadata.encode_chunk_key(coords) for coords in positions]


def verify_record(root: Path, probs: Any, plan: TilePlan, record: dict) -> tuple[set[tuple[int, int]], dict]:
    """The recorded tiles whose chunks are present, readable and match their checksum, and the
    number of the others by reason."""
    trusted, failed = set(), collections.Counter()
    frames, tiles = plan.frames, len(plan.tiles)
    for (frame, tile), crc in sorted(record.items()):
        if frame >= frames or tile >= tiles:
            failed["not in the tile plan"] += 1
        elif crc is None:
            failed["recorded without a checksum"] += 1
        elif not all(f.is_file() for f in tile_chunk_files(root, probs, plan, frame, tile)):
            failed["chunks missing"] += 1
        else:
            try:
                same = tile_checksum(probs, plan, frame, tile) == crc
            except Exception:  # noqa: BLE001 - an undecodable chunk is redone, whatever the codec raises
                failed["chunks unreadable"] += 1
                continue
            if same:
                trusted.add((frame, tile))
            else:
                failed["checksum differs"] += 1
    return trusted, dict(failed)


def verify_notice(failed: dict, recorded: int) -> str | None:
    """The notice about recorded tiles that failed verification, or None."""
    if not failed:
        return None
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(failed.items()))
    return (f"{sum(failed.values())} of {recorded} recorded tiles failed verification and are recomputed "
            f"({reasons})")


def _manifest(image: Any, source: Any, net: UNet, digest: str, axes: str | None, cfg: InferenceConfig) -> dict:
    """What must match for a rerun to continue a partial run (the tile plan is added to it)."""

    src = source_path(image)
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("prefetch", "memory_budget")}
    return json.loads(json.dumps({
        "format": MANIFEST_FORMAT, "version": 1,
        "input": os.path.abspath(src) if src else None, "input_shape": list(source.shape),
        "input_dtype": str(source.dtype), "axes": axes, "model": net.model_config.name,
        "model_sha256": digest, "inference": options}))


def _plan_dict(plan: TilePlan) -> dict:
    return {"step": list(plan.step), "tiles": len(plan.tiles), "chunks": list(plan.chunks),
            "output_shape": list(plan.output_shape)}


def prepare(partial: Path, manifest: dict, overwrite: bool, make_plan) -> tuple[TilePlan, Any, set, list[str]]:
    """Continue a partial run with the same manifest, or start one: (plan, probabilities,
    verified tiles done, notices). ``make_plan(step or None)`` gives the tile plan (the earlier
    run's step on resume, as "auto" may choose differently on another day)."""
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
                record = read_record(partial / "tiles.txt")
                store = partial / "probabilities.zarr"
                probs = zarr.open_array(str(store), mode="r+")
                done, failed = verify_record(store, probs, plan, record)
                notices = [f"resuming: {len(done)} of {len(plan.tiles) * plan.frames} tiles already done",
                           verify_notice(failed, len(record))]
                return plan, probs, done, [n for n in notices if n]
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
    return plan, probs, set(), [notice] if notice else []


def segment_zarr_iter(image: Any, net: UNet, partial: Path, *, instances: InstanceConfig,
                      overwrite: bool = False, axes: str | None = None,
                      block_shape: tuple[int, ...] | None = None, scheduler: Any = None,
                      client: Any = None, options: dict | None = None) -> Generator[Any, None, Any]:
    """Probabilities (resumable, on a cluster with ``client``) and labels (the one labelling
    stage, :func:`tiled_unet.pipeline.labels_zarr_iter`) of ``image`` in ``partial``; returns the
    labels zarr array ``partial/labels.zarr`` (the caller moves it, and the probabilities, into place)."""
    cfg = InferenceConfig(**(options or {}))
    source = open_image(image)
    _, digest = model_bytes(net)
    manifest = _manifest(image, source, net, digest, axes, cfg)

    def make_plan(step):
        return tile_plan(source, net, axes, cfg if step is None else dataclasses.replace(cfg, tile_shape=step))

    plan, probs, done, notices = prepare(partial, manifest, overwrite, make_plan)
    for notice in notices:
        yield Notice(notice)
    record = TileRecord(str(partial / "tiles.txt"), done, out=probs, plan=plan)
    if client is not None:
        yield from predict_blocks_iter(image, net, probs, plan, record, client, cfg)
    else:
        yield from predict_iter(image, net, out=probs, axes=plan.layout.axes, config=cfg, tile_hook=record,
                                tile_plan=plan)
    probs.attrs.update({"axes": plan.layout.output_axes, "model": net.model_config.name,
                        "class_names": list(net.class_names), "complete": True})
    labels_path = partial / "labels.zarr"
    remove(labels_path)
    return (yield from labels_zarr_iter(probs, labels_path, net, instances, block_shape=block_shape,
                                        overwrite=True, scheduler=client if client is not None else scheduler,
                                        workdir=partial))
