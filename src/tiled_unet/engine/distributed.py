"""Prediction on a dask.distributed cluster, identical to the in-process run.

The output is cut into blocks of whole tiles (tiles are whole zarr chunks, so no two
blocks write into one chunk). Each task predicts its block's tiles with the ordinary
engine and writes them straight into the output zarr. The client computes the tile plan
and the intensity normalisation once and sends them along; the model travels as
safetensors bytes (no pickled tensors) and each worker process builds it once (cached by
the bytes' SHA-256). A worker's ``device="auto"`` is its own GPU under dask-cuda's
``LocalCUDACluster``, which gives each worker one GPU through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Generator

import numpy as np
import zarr

from ..config import InferenceConfig, TileProgress
from ..io.arrays import create_zarr_output, open_image, publish_zarr_output, source_path
from ..model import UNet
from ..weights import model_bytes, model_from_bytes, resolve_model
from . import normalize
from .nodata import FilledArray, without_fill
from .plan import TilePlan, TileRecord, tile_plan
from .predict import predict_iter

_MODELS: dict[str, UNet] = {}  # per worker process: SHA-256 of the model bytes -> model


def connect(scheduler: Any, timeout: str = "20s") -> Any:
    """A ``dask.distributed.Client`` from a client (returned as is) or a scheduler address."""
    if all(hasattr(scheduler, a) for a in ("submit", "gather", "scatter")):
        return scheduler
    if not isinstance(scheduler, str):
        raise TypeError(f"expected a dask.distributed.Client or a scheduler address such as "
                        f"'tcp://10.0.0.1:8786', got {type(scheduler).__name__}")
    try:
        from distributed import Client
    except ImportError as err:
        raise ImportError("a dask cluster needs the 'distributed' package: pip install "
                          "'napari-tiled-unet[cluster]'") from err
    try:
        return Client(scheduler, timeout=timeout)
    except OSError as err:
        raise ValueError(f"cannot reach a dask scheduler at {scheduler!r} ({err}); start one with "
                         f"'dask scheduler' and workers with 'dask worker {scheduler}'") from err


def _worker_model(digest: str, data: bytes) -> UNet:
    net = _MODELS.get(digest)
    if net is None:
        net = _MODELS[digest] = model_from_bytes(data)
    return net


def _run_block(image: Any, digest: str, data: bytes, out: str, frame: int, tiles: list[int],
               intensity: tuple[np.ndarray, np.ndarray], plan: TilePlan, options: dict,
               done: set[tuple[int, int]], record: str | None, fill: tuple[float, float] | None = None) -> int:
    """On a worker: predict ``tiles`` of ``frame`` of the client's ``plan`` into the zarr array at ``out``
    (``fill``: the empty-margin value and background level the client found, see :mod:`.nodata`)."""
    net = _worker_model(digest, data)
    image = FilledArray(open_image(image), *(fill or (None, None)))  # checked by the client: not again
    target = zarr.open_array(out, mode="r+")
    hook = TileRecord(record, done, select={frame: set(tiles)}, intensities={frame: intensity}, out=target,
                      plan=plan)
    for _ in predict_iter(image, net, out=target, axes=plan.layout.axes, config=InferenceConfig(**options),
                          tile_hook=hook, tile_plan=plan):
        pass
    return hook.stored


def _block_tiles(plan: TilePlan, batch_size: int, workers: int) -> int:
    """Tiles per block: a multiple of the batch size (batches as in-process), ~4 blocks per worker."""
    per = max(1, -(-len(plan.tiles) // max(1, 4 * workers)))
    return -(-per // batch_size) * batch_size


def predict_blocks_iter(image: Any, net: UNet, out: Any, plan: TilePlan, record: TileRecord, client: Any,
                        cfg: InferenceConfig) -> Generator[TileProgress, None, Any]:
    """Predict the tiles ``record`` does not skip into the zarr array ``out`` on ``client``'s
    workers; yields progress as blocks finish, returns ``out``."""
    from distributed import as_completed

    path = source_path(out)
    if path is None:
        raise ValueError("a distributed run writes into a zarr array on disk that every worker can reach")
    src = source_path(image)
    layout = plan.layout
    source = without_fill(open_image(image), layout, net.model_config.normalization)
    fill = (source.fill, source.background) if isinstance(source, FilledArray) else None
    ref = src if isinstance(image, (str, os.PathLike)) else image
    if not isinstance(image, (str, os.PathLike)) and src is None:
        ref = client.scatter(np.asarray(image), broadcast=True)
    data, digest = model_bytes(net)
    data_ref = client.scatter(data, broadcast=True)
    options = dataclasses.asdict(cfg)
    frames = list(itertools.product(*(range(n) for n in layout.lead_shape)))
    per = _block_tiles(plan, cfg.batch_size, len(client.scheduler_info().get("workers", {})) or 1)
    futures, total = [], len(plan.tiles) * len(frames)
    done = sum(1 for f in range(len(frames)) for t in range(len(plan.tiles)) if record.skip(f, t))
    for f, frame in enumerate(frames):
        remaining = {t for t in range(len(plan.tiles)) if not record.skip(f, t)}
        if not remaining:
            continue
        intensity = normalize.intensity_range(
            lambda s, fr=frame: layout.to_channels_first(np.asarray(source[layout.index(fr, s)])),
            layout.spatial_shape, net.model_config.normalization)
        for start in range(0, len(plan.tiles), per):
            block = [t for t in range(start, min(start + per, len(plan.tiles))) if t in remaining]
            if block:
                futures.append(client.submit(_run_block, ref, digest, data_ref, path, f, block, intensity,
                                             plan, options, record.done, record.path, fill, pure=False))
    try:
        yield TileProgress(done, total, 0, len(frames))
        for future in as_completed(futures):
            done += future.result()
            yield TileProgress(done, total, 0, len(frames))
    finally:
        client.cancel(futures)  # stopped or failed: blocks not started are dropped (resume redoes them)
    return out


def predict_distributed(image: Any, model: Any, out: str | os.PathLike, client: Any, *,
                        axes: str | None = None, overwrite: bool = False, **options: Any) -> Any:
    """Class probabilities of ``image`` into the zarr array ``out`` (created) on a cluster;
    identical to ``tiled_unet.predict(image, model, out=out, ...)``."""

    net = resolve_model(model)
    cfg = InferenceConfig(**options)
    plan = tile_plan(open_image(image), net, axes, cfg)
    target = create_zarr_output(out, plan.output_shape, plan.chunks, cfg.output_dtype, overwrite)
    target.attrs.update({"axes": plan.layout.output_axes, "model": net.model_config.name,
                         "class_names": list(net.model_config.class_names)})
    gen = predict_blocks_iter(image, net, target, plan, TileRecord(None), connect(client), cfg)
    for _ in gen:
        pass
    return publish_zarr_output(target, out)
