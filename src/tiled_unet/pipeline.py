"""Instance segmentation in one call: class probabilities, then instance labels.

In memory for images that fit (``out=None``), zarr to zarr for the others: the
probabilities then go to a zarr array (``probabilities=`` a path to keep them, else a
temporary array next to the output, removed at the end) and the labels are made
block by block (:func:`labels_zarr_iter`, the labelling stage of every zarr path,
resumable and cluster runs included), identical to the in-memory result.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from .config import InstanceConfig, LabelProgress, TileProgress
from .engine.predict import predict_iter, scale_plan
from .engine.resample import resize_labels
from .events import run_to_end
from .instances.memory import consecutive, instances_from_probabilities
from .instances.zarr_labels import label_zarr_iter
from .io.arrays import (create_zarr_output, discard_zarr_output, open_image, publish_zarr_output, scale_attrs,
                        source_path)
from .io.layout import parse_layout
from .io.paths import claim_output, probabilities_path
from .weights import resolve_model

INSTANCE_OPTIONS = tuple(f.name for f in dataclasses.fields(InstanceConfig))


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
    if out is None:
        if probabilities not in (None, False):
            raise ValueError("probabilities= keeps the class probabilities of a zarr-to-zarr run; "
                             "in memory (out=None) use tiled_unet.predict for them")
        labels, _ = yield from segment_in_memory(image, net, config, axes, options)
        return labels
    options = resolved_scale(image, net, axes, options)
    return (yield from _segment_to_zarr(image, net, out, probabilities, config, overwrite, block_shape,
                                        scheduler, axes, options))


def resolved_scale(image: Any, net: Any, axes: str | None, options: dict) -> dict:
    """``options`` with the cell diameter resolved once (estimated if asked) and ``model_grid`` set."""
    options = dict(options)
    voxel_size, diameter = options.pop("voxel_size", None), options.pop("diameter", "auto")
    plan = scale_plan(image, net, axes=axes, voxel_size=voxel_size, diameter=diameter, **options)
    return dict(options, voxel_size=voxel_size, diameter=plan.diameter or "off", model_grid=plan.factors is not None)


def segment_in_memory(image: Any, net: Any, config: InstanceConfig, axes: str | None,
                      options: dict) -> Generator[Any, None, tuple[np.ndarray, np.ndarray]]:
    """Labels on the image's grid and the probabilities they came from (on the model's grid when resampled)."""
    options = resolved_scale(image, net, axes, options)
    probs = yield from predict_iter(image, net, axes=axes, **options)
    labels = yield from label_frames(probs, probs.shape[:-net.config.ndim - 1], config, net.class_names)
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


def _segment_to_zarr(image, net, out, probabilities, config, overwrite, block_shape, scheduler, axes, options):
    """Probabilities to ``probabilities`` (or a temporary zarr), then :func:`labels_zarr_iter` into ``out``."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be None (in memory) or a zarr path for the labels, got {type(out).__name__}")
    out = Path(out)
    src = source_path(image)
    claim_output(out, overwrite, [src])
    if probabilities is True:
        probabilities = probabilities_path(out)
    elif probabilities is False:
        probabilities = None
    elif probabilities is not None and not isinstance(probabilities, (str, os.PathLike)):
        raise TypeError(f"probabilities must be a zarr path, True (next to out: {probabilities_path(out).name}) "
                        f"or None, got {type(probabilities).__name__}")
    if probabilities is not None:
        claim_output(probabilities, overwrite, [src], what="probabilities")
        if Path(probabilities).resolve() == out.resolve():
            raise ValueError("probabilities and labels need two different paths")
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        probs = yield from predict_iter(image, net, out=probabilities or workdir / "probabilities.zarr", axes=axes,
                                        overwrite=overwrite, **options)
        image_shape = _image_grid_shape(image, net, axes) if options.get("model_grid") else None
        return (yield from labels_zarr_iter(probs, out, net, config, image_shape=image_shape,
                                            voxel_size=options.get("voxel_size"), block_shape=block_shape,
                                            overwrite=overwrite, scheduler=scheduler, workdir=workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def labels_zarr_iter(probs: Any, out: Path, net: Any, config: InstanceConfig, *,
                     image_shape: tuple[int, ...] | None = None, voxel_size: tuple[float, ...] | None = None,
                     block_shape: tuple[int, ...] | None = None, overwrite: bool = False, scheduler: Any = None,
                     workdir: Path | None = None) -> Generator[LabelProgress, None, Any]:
    """The labelling stage of every zarr path (one process, resumable, cluster): labels of the
    finished probabilities ``probs`` into the zarr array ``out``, with its attributes.

    ``image_shape``: the image's ``(*extra, *spatial)`` when ``probs`` are on the model's grid
    (resampled): labels are made there and brought back by nearest neighbour.
    """
    ndim = net.config.ndim
    target = Path(workdir or out.parent) / f".{out.name}.model_grid.zarr" if image_shape else out
    try:
        labels = yield from label_zarr_iter(probs, target, config, net.class_names, ndim=ndim,
                                            block_shape=block_shape, overwrite=overwrite or bool(image_shape),
                                            scheduler=scheduler, workdir=workdir)
        if image_shape:
            labels = _resize_into(labels, out, image_shape, ndim, overwrite)
            labels.attrs.update({"resampled_by": probs.attrs.get("resampled_by"),
                                 "diameter": probs.attrs.get("diameter")})
    finally:
        if image_shape:
            shutil.rmtree(target, ignore_errors=True)
    label_axes = probs.attrs.get("axes", "").replace("C", "")
    voxel = dict(zip("ZYX"[-len(voxel_size):], voxel_size)) if voxel_size else None
    labels.attrs.update({"axes": label_axes, "model": net.model_config.name, "instances": config.to_dict(),
                         **scale_attrs(label_axes, voxel)})
    return labels


def _resize_into(grid_labels: Any, out: Path, shape: tuple[int, ...], ndim: int, overwrite: bool) -> Any:
    """Model-grid labels into a new zarr array ``out`` on the image's grid, chunk by chunk (nearest)."""
    chunks = (1,) * (len(shape) - ndim) + tuple(min(n, 256) for n in shape[len(shape) - ndim:])
    target = create_zarr_output(out, shape, chunks, grid_labels.dtype, overwrite)
    try:
        for corner in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks))):
            region = tuple(slice(i, min(i + c, n)) for i, c, n in zip(corner, chunks, shape))
            target[region] = resize_labels(grid_labels, shape, region)
    except BaseException:
        discard_zarr_output(out)
        raise
    return publish_zarr_output(target, out)


def segment(image: Any, model: Any, *, out: Any = None, probabilities: Any = None,
            instances: InstanceConfig | dict | None = None, overwrite: bool = False,
            progress: Callable[[Any], None] | None = None, **options: Any) -> Any:
    """Instance labels (0 = background, 1..N = cells) of ``image`` with ``model``.

    ``out=None``: in memory, returns a numpy array. ``out`` a zarr path: probabilities
    are predicted to ``probabilities`` (a zarr path, kept; ``True``: ``<name>_probabilities.zarr``
    beside ``out``, as ``segment_files`` names them) or to a temporary zarr next to ``out``
    (removed), labels are made block by block into ``out``; returns that zarr
    array. ``instances``: an :class:`InstanceConfig` or a dict overriding the model's
    stored instance parameters. ``progress`` receives :class:`TileProgress` and
    :class:`LabelProgress` events. Other options: those of :func:`tiled_unet.predict`
    plus ``block_shape`` and ``scheduler`` for the blockwise labelling.
    """
    gen = segment_iter(image, model, out=out, probabilities=probabilities, instances=instances,
                       overwrite=overwrite, **options)
    return run_to_end(gen, progress)
