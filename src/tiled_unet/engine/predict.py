"""The inference engine: exact overlap-tile prediction from any array source into any sink.

:func:`predict_iter` is a generator: it yields a :class:`TileProgress` after each batch
and *returns* the probabilities (a numpy array, or the zarr array it wrote). Closing it
(or stopping iteration) cancels between tiles. :func:`predict` runs it to the end.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generator

import numpy as np
import torch

from ..config import InferenceConfig, TileProgress, config_or_options
from ..events import run_to_end
from ..instances.memory import class_roles, instances_from_probabilities, masks
from ..io.arrays import open_image, read_region, source_path
from ..io.layout import Layout, parse_layout
from ..io.paths import claim_output
from ..model import UNet
from ..weights import resolve_model
from . import normalize
from .backends import OpenVINONetwork, resolve_backend
from .devices import forward_flops, resolve_device, resolve_precision
from .nodata import FilledArray, without_fill
from .plan import TilePlan, make_tile_plan
from .resample import ResampledArray, resampled_size
from .scale import ScalePlan, plan_scale
from .sinks import TileHook, open_sink
from .tiling import Tile, UNetGeometry, mirror_pad_whole, split_tile


def _read_tile(source: Any, layout: Layout, frame: tuple[int, ...], tile: Tile,
               offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Read, normalise and mirror-pad one tile's network input: ``(C, *input_shape)``."""
    slices, takes = tile.read_plan(layout.spatial_shape)
    raw = read_region(source, layout.index(frame, slices))
    normalize.check_finite(raw, f"in the region {[(s.start, s.stop) for s in slices]}, frame {frame}")
    block = layout.to_channels_first(raw)
    for axis, take in enumerate(takes, start=1):
        if take is not None:
            block = np.take(block, take, axis=axis)
    return normalize.apply(block, offset, scale)


_INFERENCE_COPIES: "weakref.WeakKeyDictionary[UNet, tuple[tuple, UNet]]" = weakref.WeakKeyDictionary()
_INFERENCE_COPIES_LOCK = threading.Lock()


def _inference_network(net: UNet, device: torch.device, memory_format: torch.memory_format | None) -> UNet:
    """``net`` with its BatchNorms folded (:meth:`UNet.fused_for_inference`), on ``device``; ``net`` is left
    as it is. The copy is kept while ``net`` lives and its weights are unchanged (training makes a new one)."""
    state = tuple((t.data_ptr(), t._version) for t in itertools.chain(net.parameters(), net.buffers()))
    key = (state, str(device), str(memory_format))
    with _INFERENCE_COPIES_LOCK:
        kept = _INFERENCE_COPIES.get(net)
        if kept is not None and kept[0] == key:
            return kept[1]
    fused = net.fused_for_inference().to(device)
    if memory_format is not None:
        fused.to(memory_format=memory_format)
    with _INFERENCE_COPIES_LOCK:
        _INFERENCE_COPIES[net] = (key, fused)
    return fused


class _Runner:
    """Runs batches of tiles on the device; splits a tile that runs out of GPU memory."""

    def __init__(self, net: UNet, device: torch.device, amp: torch.dtype | None, channels_last: bool,
                 geometry: UNetGeometry, openvino: OpenVINONetwork | None = None):
        self.net, self.device, self.amp, self.geometry, self.openvino = net, device, amp, geometry, openvino
        nd = net.config.ndim
        self.memory_format = (torch.channels_last if nd == 2 else torch.channels_last_3d) if channels_last else None
        self.same = net.config.padding == "same"

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self.openvino is not None:
            logits = self.openvino(batch)
        else:
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                                                        enabled=self.amp is not None):
                logits = self.net(x).float()
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    def crop(self, tile: Tile) -> tuple[slice, ...]:
        shift = tile.halo if self.same else 0
        return (slice(None),) + tuple(slice(c.start + shift, c.stop + shift) for c in tile.crop_slices)

    def run(self, tiles: list[Tile], inputs: list[np.ndarray],
            reread: Callable[[Tile], np.ndarray]) -> list[tuple[Tile, np.ndarray]]:
        """Probabilities for each tile's written region; halves batch or tile on OOM."""
        try:
            probs = self.forward(np.stack(inputs))
            return [(t, p[self.crop(t)]) for t, p in zip(tiles, probs)]
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(tiles) > 1:
                half = len(tiles) // 2
                return (self.run(tiles[:half], inputs[:half], reread)
                        + self.run(tiles[half:], inputs[half:], reread))
            pieces = split_tile(tiles[0], self.geometry)
            if len(pieces) == 1:
                raise
            results = []
            for piece in pieces:
                results += self.run([piece], [reread(piece)], reread)
            return results


def scale_plan(image: Any, model: UNet | str | os.PathLike, *, axes: str | None = None,
               voxel_size: tuple[float, ...] | None = None, diameter: Any = "auto",
               config: InferenceConfig | None = None, **options: Any) -> ScalePlan:
    """The resampling :func:`predict` applies to ``image`` for ``voxel_size`` and ``diameter``.

    ``diameter``: ``"auto"`` (estimated when the model stores the diameter of its training cells),
    ``"off"`` (no cell-size rescale) or the cells' diameter in pixels (in ``voxel_size`` units
    when one is given).
    """
    cfg = config_or_options(InferenceConfig, config, options, "scale_plan")
    net = resolve_model(model)
    source = open_image(image)
    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    source = without_fill(source, layout, net.model_config.normalization)
    return _scale_plan(source, layout, net, voxel_size, diameter, cfg)


def _scale_plan(source: Any, layout: Layout, net: UNet, voxel_size: Any, diameter: Any,
                cfg: InferenceConfig) -> ScalePlan:
    class_names = net.class_names
    roles = class_roles(class_names, net.config.num_classes)
    probe_cfg = dataclasses.replace(cfg, backend="torch")  # small probes of varying shape: see backends

    def cells_of(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = run_to_end(predict_iter(block, net, axes="C" + layout.spatial_axes, config=probe_cfg,
                                        diameter="off"), None)
        foreground, _, _ = masks(probs, net.model_config.instances, roles)
        return instances_from_probabilities(probs, net.model_config.instances, class_names), foreground

    return plan_scale(source, layout, net, voxel_size, diameter, cells_of)


def predict_iter(image: Any, model: UNet | str | os.PathLike, *, out: Any = None, axes: str | None = None,
                 overwrite: bool = False, voxel_size: tuple[float, ...] | None = None, diameter: Any = "auto",
                 config: InferenceConfig | None = None, tile_hook: TileHook | None = None, model_grid: bool = False,
                 tile_plan: TilePlan | None = None, **options: Any) -> Generator[TileProgress, None, Any]:
    """Class probabilities of ``image``, tile by tile; yields progress, returns the result.

    The result has axes ``(*extra, classes, *spatial)`` (``Layout.output_axes``, e.g.
    ``"CYX"`` or ``"TCZYX"``). ``options`` are :class:`InferenceConfig` fields.
    ``voxel_size`` (spatial axes, the model's units) and ``diameter`` (see :func:`scale_plan`):
    when the image's voxel size or cell size differs from the model's, the image is resampled
    to the model's grid and the probabilities back to the image's (see :mod:`tiled_unet.resample`),
    or not back with ``model_grid=True`` (as :func:`tiled_unet.segment` labels them).
    ``out``: None, an array, a zarr path or a :class:`~tiled_unet.engine.sinks.Sink`.
    ``tile_hook`` (for resumable and distributed runs; not with resampling): a
    :class:`~tiled_unet.engine.sinks.TileHook`: ``skip(frame, tile) -> bool`` (tiles not to
    compute), ``intensity(frame)`` -> ``(offset, scale)`` or None (given normalisation), and
    ``written(frame, tiles)``, called once those tiles are stored in ``out``. ``tile_plan``: the plan of this input
    (:func:`tiled_unet.engine.plan.make_tile_plan`), when a caller has made it already.
    """
    cfg = config_or_options(InferenceConfig, config, options, "predict")
    net = resolve_model(model)
    source = open_image(image)
    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    source = without_fill(source, layout, net.model_config.normalization)
    plan = _scale_plan(source, layout, net, voxel_size, diameter, cfg)
    if plan.factors is not None:
        if tile_hook is not None or tile_plan is not None:
            raise ValueError("tile_hook and tile_plan cannot be combined with resampling to the model's voxel or cell size")
        return (yield from _predict_resampled(image, source, layout, plan, net, out, overwrite, cfg, model_grid))
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    channels_last = device.type in ("cpu", "cuda") if cfg.channels_last == "auto" else bool(cfg.channels_last)
    if tile_plan is None:
        tile_plan = make_tile_plan(layout, net, cfg, device)
    elif tile_plan.layout != layout or tile_plan.classes != net.config.num_classes:
        raise ValueError(f"tile_plan was made for an input of shape {tile_plan.layout.shape} (axes "
                         f"{tile_plan.layout.axes}) and {tile_plan.classes} classes, not for this one "
                         f"({layout.shape}, {layout.axes}, {net.config.num_classes}): make it with "
                         f"tiled_unet.engine.plan.make_tile_plan for this input and model")
    geometry, tiles = tile_plan.geometry, list(tile_plan.tiles)
    attrs = {"axes": layout.output_axes, "model": net.model_config.name,
             "class_names": list(net.model_config.class_names)}
    sink = open_sink(out, image, tile_plan.output_shape, tile_plan.chunks, cfg.output_dtype, overwrite, attrs)
    frames = list(itertools.product(*(range(n) for n in layout.lead_shape)))
    flops = forward_flops(net.config, tiles[0].input_shape) * len(tiles) * len(frames)
    openvino = OpenVINONetwork(net, amp) if resolve_backend(cfg.backend, device, amp, flops) == "openvino" else None
    channels_last = channels_last and openvino is None
    memory_format = (torch.channels_last if geometry.ndim == 2 else torch.channels_last_3d) if channels_last else None
    network = net if openvino is not None else _inference_network(net, device, memory_format)
    runner = _Runner(network, device, amp, channels_last, geometry, openvino)
    readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiled-unet-read")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiled-unet-write")
    writes: deque[tuple[Future, Any]] = deque()

    def settle(write: tuple[Future, Any]) -> None:
        write[0].result()
        if write[1] is not None:
            tile_hook.written(*write[1])

    try:
        if openvino is not None:
            seconds = openvino.prepare((net.config.in_channels, *tiles[0].input_shape))
            yield TileProgress(0, len(tiles), 0, len(frames),
                               note=f"OpenVINO ({openvino.hint}): network compiled in {seconds:.1f} s")
        for f, frame in enumerate(frames):
            todo = tiles if tile_hook is None else [t for t in tiles if not tile_hook.skip(f, t.index)]
            if not todo:
                yield TileProgress(len(tiles), len(tiles), f, len(frames))
                continue
            given = None if tile_hook is None else tile_hook.intensity(f)
            offset, scale = given if given is not None else normalize.intensity_range(
                lambda s, fr=frame: layout.to_channels_first(read_region(source, layout.index(fr, s))),
                layout.spatial_shape, net.model_config.normalization)

            def read(tile: Tile, fr=frame, o=offset, s=scale) -> np.ndarray:
                return _read_tile(source, layout, fr, tile, o, s)

            batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
            pending: deque[list[Future]] = deque()
            upcoming = iter(batches)
            for batch in itertools.islice(upcoming, cfg.prefetch + 1):
                pending.append([readers.submit(read, t) for t in batch])
            done = len(tiles) - len(todo)
            for batch in batches:
                inputs = [fut.result() for fut in pending.popleft()]
                nxt = next(upcoming, None)
                if nxt is not None:
                    pending.append([readers.submit(read, t) for t in nxt])
                for tile, probs in runner.run(batch, inputs, read):
                    index = frame + (slice(None),) + tile.write_slices
                    writes.append((writer.submit(sink.write, index, probs.astype(cfg.output_dtype, copy=False)),
                                   None))
                if tile_hook is not None:  # the writer is FIFO: the batch is stored once its last write is
                    writes[-1] = (writes[-1][0], (f, [t.index for t in batch]))
                while len(writes) > 2 * cfg.batch_size:
                    settle(writes.popleft())
                done += len(batch)
                yield TileProgress(done, len(tiles), f, len(frames))
        while writes:
            settle(writes.popleft())
    except BaseException:  # failed or stopped (also a closed generator): no temporary output left
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        discard = getattr(sink, "discard", None)
        if discard is not None:
            discard()
        raise
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
    for fut, _ in writes:
        fut.result()
    return sink.finish()


def _predict_resampled(image, source, layout: Layout, plan: ScalePlan, net: UNet, out, overwrite: bool,
                       cfg: InferenceConfig, model_grid: bool) -> Generator[TileProgress, None, Any]:
    """Predict on the image resampled to the model's voxel and cell size, then resample back."""
    factors = plan.factors
    spatial = dict(zip(layout.spatial_indices, factors))
    view = ResampledArray(source, [resampled_size(n, spatial[a]) if a in spatial else n
                                   for a, n in enumerate(source.shape)])
    view = FilledArray(view, None, None)  # checked for an empty margin before resampling: not again
    final_shape = layout.output_shape(net.config.num_classes)
    if model_grid:
        probs = yield from predict_iter(view, net, out=out, axes=layout.axes, config=cfg, diameter="off",
                                        overwrite=overwrite)
        if hasattr(probs, "attrs"):
            probs.attrs.update({"resampled_by": list(factors), "diameter": plan.diameter})
        return probs
    if isinstance(out, (str, os.PathLike)):
        claim_output(out, overwrite, [source_path(image)])
    scratch = tempfile.mkdtemp(prefix=".tiled-unet-resample.", dir=os.path.dirname(os.path.abspath(out))
                               if isinstance(out, (str, os.PathLike)) else None)
    try:
        inner_out = None if out is None else os.path.join(scratch, "model_grid.zarr")
        probs = yield from predict_iter(view, net, out=inner_out, axes=layout.axes, config=cfg, diameter="off")
        back = ResampledArray(probs, final_shape)
        step = tuple(min(n, 256) for n in final_shape[-net.config.ndim:])
        chunks = (1,) * (len(final_shape) - len(step)) + step
        chunks = chunks[:len(layout.lead_shape)] + (final_shape[len(layout.lead_shape)],) + chunks[len(layout.lead_shape) + 1:]
        sink = open_sink(out, image, final_shape, chunks, cfg.output_dtype, overwrite, {
            "axes": layout.output_axes, "model": net.model_config.name,
            "class_names": list(net.model_config.class_names), "resampled_by": list(factors),
            "diameter": plan.diameter})
        for index in itertools.product(*(range(0, n, c) for n, c in zip(final_shape, chunks))):
            region = tuple(slice(i, min(i + c, n)) for i, c, n in zip(index, chunks, final_shape))
            sink.write(region, back[region].astype(cfg.output_dtype, copy=False))
        return sink.finish()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def predict(image: Any, model: UNet | str | os.PathLike, *, out: Any = None, axes: str | None = None,
            overwrite: bool = False, progress: Callable[[TileProgress], None] | None = None,
            config: InferenceConfig | None = None, **options: Any) -> Any:
    """Per-pixel class probabilities of ``image`` by exact overlap-tile inference.

    ``image``: numpy/zarr/dask array or a path (TIFF, zarr directory or zip, OME-Zarr).
    ``model``: a :class:`UNet`, a built-in model name or a model file. ``out``: None
    (return a numpy array), a zarr path (created; ``overwrite=True`` to replace) or an
    array to fill. ``progress`` is called with a :class:`TileProgress` after each batch.
    ``voxel_size`` and ``diameter``: see :func:`predict_iter`. The engine's settings come as
    ``config`` (an :class:`InferenceConfig`) or as its fields (tile_shape, device, precision,
    batch_size, halo, memory_budget, channels_last, prefetch, output_dtype), not both.
    """
    gen = predict_iter(image, model, out=out, axes=axes, overwrite=overwrite, config=config, **options)
    return run_to_end(gen, progress)


def whole_image_probabilities(image: np.ndarray, net: UNet, precision: str = "float32") -> np.ndarray:
    """The model applied once to the whole mirror-padded image (the reference tiles must equal).

    ``image`` is ``(C, *spatial)`` and already normalised. Memory grows with the image:
    for tests and small images only.
    """

    geometry = net.geometry
    padded, crop = mirror_pad_whole(image.astype(np.float32), geometry)
    cpu = torch.device("cpu")
    runner = _Runner(_inference_network(net, cpu, None), cpu, resolve_precision(precision, cpu), False, geometry)
    probs = runner.forward(padded[None])[0]
    shift = geometry.halo if net.config.padding == "same" else 0
    return probs[(slice(None),) + tuple(slice(c.start + shift, c.stop + shift) for c in crop)]
