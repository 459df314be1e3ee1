"""Instance segmentation in one call: class probabilities, then instance labels.

In memory for images that fit (``out=None``), zarr to zarr for the others: the
probabilities then go to a zarr array (``probabilities=`` a path to keep them, else a
temporary array next to the output, removed at the end) and the labels are made
block by block (:func:`tiled_unet.blockwise.labels_blockwise`), identical to the
in-memory result.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from .config import InstanceConfig, TileProgress
from .engine.predict import predict_iter, scale_plan
from .engine.resample import resize_labels
from .events import run_to_end
from .instances.blockwise import labels_blockwise
from .instances.memory import consecutive, instances_from_probabilities
from .io.arrays import create_zarr_output, open_image, scale_attrs, source_path
from .io.layout import parse_layout
from .io.paths import claim_output, within_path
from .weights import resolve_model

INSTANCE_OPTIONS = tuple(f.name for f in dataclasses.fields(InstanceConfig))


@dataclasses.dataclass(frozen=True)
class LabelProgress:
    """Yielded while labelling: ``done`` of ``total`` blocks (or frames) of one ``stage``."""

    done: int
    total: int
    stage: str = "labels"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def resolve_instance_config(model_config: InstanceConfig, instances: InstanceConfig | dict | None) -> InstanceConfig:
    """The model's stored instance parameters, with ``instances`` (a config or a dict) on top."""
    if instances is None:
        return model_config
    if isinstance(instances, InstanceConfig):
        return instances
    if not isinstance(instances, dict):
        raise TypeError(f"instances must be an InstanceConfig or a dict of its fields, got "
                        f"{type(instances).__name__}")
    unknown = sorted(set(instances) - set(INSTANCE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown instance options {unknown}; expected some of {list(INSTANCE_OPTIONS)}")
    return dataclasses.replace(model_config, **instances)


def segment_iter(image: Any, model: Any, *, out: Any = None, probabilities: Any = None,
                 instances: InstanceConfig | dict | None = None, overwrite: bool = False,
                 block_shape: tuple[int, ...] | None = None, scheduler: Any = None,
                 axes: str | None = None, **options: Any) -> Generator[TileProgress | LabelProgress, None, Any]:
    """Instance labels of ``image``; yields progress (tiles, then label blocks), returns the labels.

    Labels have axes ``(*extra, *spatial)``: 0 = background, 1..N = cells, consecutive,
    uint32 (uint64 if more are needed). ``options`` are :func:`tiled_unet.predict` options.
    When the image is resampled for the model (``voxel_size``, ``diameter``), the labels are made
    on the model's grid (where the instance parameters hold) and brought back to the image's grid
    by nearest neighbour; kept ``probabilities`` are then on the model's grid.
    """
    net = resolve_model(model)
    config = resolve_instance_config(net.model_config.instances, instances)
    class_names = tuple(net.model_config.class_names) or _default_class_names(net.config.num_classes)
    if out is None:
        if probabilities is not None:
            raise ValueError("probabilities= keeps the class probabilities of a zarr-to-zarr run; "
                             "in memory (out=None) use tiled_unet.predict for them")
        labels, _ = yield from segment_in_memory(image, net, config, class_names, axes, options)
        return labels
    options = resolved_scale(image, net, axes, options)
    return (yield from _segment_to_zarr(image, net, out, probabilities, config, class_names, overwrite,
                                        block_shape, scheduler, axes, options))


def resolved_scale(image: Any, net: Any, axes: str | None, options: dict) -> dict:
    """``options`` with the cell diameter resolved once (estimated if asked) and ``model_grid`` set."""
    options = dict(options)
    voxel_size, diameter = options.pop("voxel_size", None), options.pop("diameter", "auto")
    plan = scale_plan(image, net, axes=axes, voxel_size=voxel_size, diameter=diameter, **options)
    return dict(options, voxel_size=voxel_size, diameter=plan.diameter or "off", model_grid=plan.factors is not None)


def segment_in_memory(image: Any, net: Any, config: InstanceConfig, class_names: tuple[str, ...],
                      axes: str | None, options: dict) -> Generator[Any, None, tuple[np.ndarray, np.ndarray]]:
    """Labels on the image's grid and the probabilities they came from (on the model's grid when resampled)."""
    options = resolved_scale(image, net, axes, options)
    probs = yield from predict_iter(image, net, axes=axes, **options)
    labels = yield from label_frames(probs, probs.shape[:-net.config.ndim - 1], config, class_names)
    if not options["model_grid"]:
        return labels, probs
    shape = _image_grid_shape(image, net, axes)
    spatial = shape[len(shape) - net.config.ndim:]
    frames = [consecutive(resize_labels(frame, spatial))
              for frame in labels.reshape(-1, *labels.shape[-net.config.ndim:])]
    dtype = np.result_type(*[f.dtype for f in frames])
    return np.stack(frames).astype(dtype).reshape(shape), probs


def _image_grid_shape(image: Any, net: Any, axes: str | None) -> tuple[int, ...]:
    """``(*extra, *spatial)`` of the image's own grid."""

    source = open_image(image)
    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    return layout.lead_shape + layout.spatial_shape


def label_frames(probs: np.ndarray, lead: tuple[int, ...], config: InstanceConfig,
                 class_names: tuple[str, ...]) -> Generator[LabelProgress, None, np.ndarray]:
    """In-memory labels of probabilities ``(*lead, classes, *spatial)``, frame by frame."""
    labels = None
    frames = list(itertools.product(*(range(n) for n in lead)))
    for i, frame in enumerate(frames):
        frame_labels = instances_from_probabilities(probs[frame], config, class_names)
        if labels is None:
            labels = np.zeros(lead + frame_labels.shape, frame_labels.dtype)
        labels[frame] = frame_labels
        yield LabelProgress(i + 1, len(frames))
    return labels


def _default_class_names(classes: int) -> tuple[str, ...]:
    return {1: ("foreground",), 2: ("background", "foreground"),
            3: ("background", "interior", "boundary")}.get(classes, tuple(f"class{i}" for i in range(classes)))


def _segment_to_zarr(image, net, out, probabilities, config, class_names, overwrite, block_shape,
                     scheduler, axes, options):

    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be None (in memory) or a zarr path for the labels, got {type(out).__name__}")
    out = Path(out)
    src = source_path(image)
    for name, path in (("out", out), ("probabilities", probabilities)):
        if path is not None and src is not None and within_path(src, path):
            raise ValueError(f"{name} path {os.fspath(path)!r} is (or contains) the input {src!r}; "
                             f"choose another path (inputs are never overwritten)")
    claim_output(out, overwrite, [src])
    if probabilities is not None and Path(probabilities).resolve() == out.resolve():
        raise ValueError("probabilities and labels need two different paths")
    workdir = None
    if probabilities is None:
        workdir = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        probs_path = Path(workdir) / "probabilities.zarr"
    else:
        probs_path = Path(probabilities)
    resampled = options.get("model_grid", False)
    if resampled and workdir is None:
        workdir = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    target = Path(workdir) / "model_grid_labels.zarr" if resampled else out
    try:
        probs = yield from predict_iter(image, net, out=probs_path, axes=axes, overwrite=overwrite, **options)
        spatial = probs.shape[-net.config.ndim:]
        lead = probs.shape[:-net.config.ndim - 1]
        if not lead:
            yield from _stream(labels_blockwise, probs, target, config=config, class_names=class_names,
                               block_shape=block_shape, overwrite=overwrite or resampled, scheduler=scheduler,
                               tmpdir=workdir)
        else:
            yield from _segment_frames(probs, target, lead, spatial, config, class_names, block_shape,
                                       overwrite or resampled, scheduler, workdir)
        import zarr

        if resampled:
            _resize_into(zarr.open_array(str(target), mode="r"), out, _image_grid_shape(image, net, axes),
                         net.config.ndim, overwrite)
        labels = zarr.open_array(str(out), mode="r+")
        if resampled:
            labels.attrs.update({"resampled_by": probs.attrs.get("resampled_by"),
                                 "diameter": probs.attrs.get("diameter")})
        label_axes = probs.attrs.get("axes", "").replace("C", "")
        voxel = options.get("voxel_size")
        labels.attrs.update({"axes": label_axes, "model": net.model_config.name, "instances": config.to_dict(),
                             **scale_attrs(label_axes, dict(zip("ZYX"[-len(voxel):], voxel)) if voxel else None)})
        return labels
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _resize_into(grid_labels: Any, out: Path, shape: tuple[int, ...], ndim: int, overwrite: bool) -> None:
    """Model-grid labels into a new zarr array ``out`` on the image's grid, chunk by chunk (nearest)."""
    chunks = (1,) * (len(shape) - ndim) + tuple(min(n, 256) for n in shape[len(shape) - ndim:])
    target = create_zarr_output(out, shape, chunks, grid_labels.dtype, overwrite)
    for corner in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks))):
        region = tuple(slice(i, min(i + c, n)) for i, c, n in zip(corner, chunks, shape))
        target[region] = resize_labels(grid_labels, shape, region)


class LabellingCancelled(Exception):
    """Raised inside :func:`labels_blockwise` (at its next progress report) when its generator is closed."""


_FINISHED = object()


def _stream(function: Callable, *args, **kwargs) -> Generator:
    """Run ``function(*args, progress=..., **kwargs)`` in a thread and yield its progress as it comes.

    Returns what ``function`` returns and raises what it raises. Closing the generator (a cancel)
    makes the next progress report raise :class:`LabellingCancelled`, which stops the function
    cleanly, and waits for it to end.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    cancelled = threading.Event()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int, stage: str) -> None:
        if cancelled.is_set():
            raise LabellingCancelled("labelling cancelled")
        events.put(LabelProgress(done, total, stage))

    def work() -> None:
        try:
            outcome["value"] = function(*args, progress=progress, **kwargs)
        except BaseException as error:  # handed to the generator's thread below
            outcome["error"] = error
        finally:
            events.put(_FINISHED)

    thread = threading.Thread(target=work, name="tiled-unet-labels", daemon=True)
    thread.start()
    try:
        while True:
            try:  # a timeout keeps the wait interruptible (Ctrl-C) on every platform
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event is _FINISHED:
                break
            yield event
    finally:
        cancelled.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _Frame:
    """One frame of a ``(*lead, classes, *spatial)`` array, read region by region (never copied whole)."""

    def __init__(self, array: Any, frame: tuple[int, ...]):
        self.array, self.frame = array, frame
        self.shape = tuple(array.shape[len(frame):])
        self.chunks = tuple(array.chunks[len(frame):])
        self.dtype, self.ndim = array.dtype, len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.array[self.frame + (index if isinstance(index, tuple) else (index,))]


def _copy_by_chunks(source: Any, target: Any, frame: tuple[int, ...]) -> None:
    """``target[frame] = source`` one chunk of ``source`` at a time (memory bounded by the chunk)."""
    chunks = tuple(source.chunks)
    for corner in itertools.product(*(range(0, n, c) for n, c in zip(source.shape, chunks))):
        region = tuple(slice(i, min(i + c, n)) for i, c, n in zip(corner, chunks, source.shape))
        target[frame + region] = source[region]


def _segment_frames(probs, out, lead, spatial, config, class_names, block_shape, overwrite, scheduler,
                    workdir):
    """Extra axes (e.g. T): each frame labelled on its own (read from ``probs`` block by block), then
    copied into one array chunk by chunk."""
    scratch = Path(workdir or tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    target = None
    try:
        for frame in itertools.product(*(range(n) for n in lead)):
            frame_out = scratch / "frame_labels.zarr"
            frame_labels = yield from _stream(labels_blockwise, _Frame(probs, frame), frame_out, config=config,
                                              class_names=class_names, block_shape=block_shape, overwrite=True,
                                              scheduler=scheduler, tmpdir=scratch)
            if target is None:
                target = create_zarr_output(out, lead + spatial, (1,) * len(lead) + tuple(frame_labels.chunks),
                                            "uint32", overwrite)
            _copy_by_chunks(frame_labels, target, frame)
        return target
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def segment(image: Any, model: Any, *, out: Any = None, probabilities: Any = None,
            instances: InstanceConfig | dict | None = None, overwrite: bool = False,
            progress: Callable[[Any], None] | None = None, **options: Any) -> Any:
    """Instance labels (0 = background, 1..N = cells) of ``image`` with ``model``.

    ``out=None``: in memory, returns a numpy array. ``out`` a zarr path: probabilities
    are predicted to ``probabilities`` (a zarr path, kept) or to a temporary zarr next to
    ``out`` (removed), labels are made block by block into ``out``; returns that zarr
    array. ``instances``: an :class:`InstanceConfig` or a dict overriding the model's
    stored instance parameters. ``progress`` receives :class:`TileProgress` and
    :class:`LabelProgress` events. Other options: those of :func:`tiled_unet.predict`
    plus ``block_shape`` and ``scheduler`` for the blockwise labelling.
    """
    gen = segment_iter(image, model, out=out, probabilities=probabilities, instances=instances,
                       overwrite=overwrite, **options)
    return run_to_end(gen, progress)
