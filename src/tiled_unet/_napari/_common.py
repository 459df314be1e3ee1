"""Helpers shared by the widgets: layer data as engine input, and one way to start a worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator

import numpy as np

if TYPE_CHECKING:
    import napari

SPATIAL = {2: "YX", 3: "ZYX"}
AXIS_LETTERS = set("TQRSUCZYX")


def layer_data(layer: napari.layers.Layer) -> Any:
    """The layer's array as it is (level 0 of a pyramid): never loaded whole."""
    return layer.data[0] if layer.multiscale else layer.data


def _named_axes(layer: napari.layers.Layer) -> str | None:
    """The layer's axis labels as axis letters, when they are (a TIFF or zarr reader sets them)."""
    labels = "".join(str(a).upper() for a in getattr(layer, "axis_labels", ()))
    ndim = layer_data(layer).ndim
    if len(labels) == ndim and set(labels) <= AXIS_LETTERS and len(set(labels)) == len(labels):
        return labels
    return None


def image_ndim(layer: napari.layers.Layer) -> int:
    """2 or 3: the spatial dimensions of a layer, for choosing a 2-D or 3-D model.

    Named axes decide (a Z axis: 3-D); else RGB and 2-D data are 2-D, more axes 3-D.
    """
    named = _named_axes(layer)
    if named is not None:
        return 3 if "Z" in named else 2
    if getattr(layer, "rgb", False):
        return 2
    return 3 if layer_data(layer).ndim >= 3 else 2


def guess_axes(layer: napari.layers.Layer, ndim: int) -> str:
    """Axis letters of a layer's data for an ``ndim``-D model (RGB: channels last; extra axes: T)."""
    data = layer_data(layer)
    if getattr(layer, "rgb", False):
        return "T" * (data.ndim - 1 - ndim) + SPATIAL[ndim] + "C"
    named = _named_axes(layer)
    if named is not None:
        return named
    extra = data.ndim - ndim
    if extra < 0:
        return SPATIAL[ndim][-data.ndim:]
    return "TQRSU"[:extra] + SPATIAL[ndim]


@dataclass
class EngineInput:
    """What the engine gets for a layer, and how its labels map back onto the viewer."""

    data: Any             # array with the axes below (one channel picked lazily when needed)
    axes: str             # axes of ``data``
    out_axes: str         # axes of the labels the engine returns
    scale: tuple          # of the labels layer, per out axis
    translate: tuple
    axis_labels: tuple
    voxel_size: tuple     # scale of the spatial axes (ZYX order)


def engine_input(layer: napari.layers.Layer, axes: str, ndim: int, in_channels: int,
                 channel: int = 0) -> EngineInput:
    """Prepare a layer for :func:`tiled_unet.segment_iter` (with clear errors for wrong axes)."""
    data = layer_data(layer)
    axes = axes.strip().upper()
    spatial = SPATIAL[ndim]
    if len(axes) != data.ndim or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} must name each of the {data.ndim} axes of {layer.name!r} "
                         f"(shape {tuple(data.shape)}) once, e.g. {guess_axes(layer, ndim)!r}")
    missing = [a for a in spatial if a not in axes]
    if missing:
        raise ValueError(f"axes {axes!r} lack the spatial axes {missing} a {ndim}-D model needs")
    rgb = getattr(layer, "rgb", False)
    # napari's scale/translate cover every axis but the RGB one
    geometry_axes = axes.replace("C", "") if rgb else axes
    scale = dict(zip(geometry_axes, layer.scale))
    translate = dict(zip(geometry_axes, layer.translate))
    names = dict(zip(geometry_axes, getattr(layer, "axis_labels", geometry_axes)))
    if "C" in axes:
        c = axes.index("C")
        channels = data.shape[c]
        if in_channels == 1 and channels > 1:
            if not 0 <= channel < channels:
                raise ValueError(f"channel {channel} does not exist: {layer.name!r} has {channels} "
                                 f"channels (0..{channels - 1})")
            data = _take(data, c, channel)
            axes = axes.replace("C", "")
        elif channels != in_channels:
            raise ValueError(f"the model takes {in_channels} channel(s), {layer.name!r} has {channels}; "
                             f"choose another model or layer")
    elif in_channels != 1:
        raise ValueError(f"the model takes {in_channels} channels; name the channel axis 'C' in axes "
                         f"(now {axes!r})")
    out_axes = "".join(a for a in axes if a != "C" and a not in spatial) + spatial
    return EngineInput(data, axes, out_axes, tuple(scale.get(a, 1.0) for a in out_axes),
                       tuple(translate.get(a, 0.0) for a in out_axes),
                       tuple(names.get(a, a) for a in out_axes), tuple(scale.get(a, 1.0) for a in spatial))


def _take(data: Any, axis: int, index: int) -> Any:
    """``data`` at ``index`` along ``axis``, lazily (a numpy view, else a dask slice)."""
    where = (slice(None),) * axis + (index,)
    if isinstance(data, np.ndarray):
        return data[where]
    import dask.array as da

    chunks = getattr(data, "chunks", None)
    lazy = data if isinstance(data, da.Array) else da.from_array(data, chunks=chunks if chunks else "auto")
    return lazy[where]


def known_voxel_size(sizes: dict[str, float]) -> dict[str, float]:
    """``sizes`` (axis -> size), or {} for napari's default scale of all ones (unknown)."""
    return {} if all(float(v) == 1.0 for v in sizes.values()) else sizes


def voxel_size_for(model_voxel: tuple, voxel: tuple, knows_cell_size: bool = False) -> tuple | None:
    """The ``voxel_size=`` to pass: the layer's, when the model knows its own voxel size (or its
    cells' diameter, which makes the voxel shape matter) and the layer's is set.

    A scale of all ones is napari's default (unknown); the image is then taken to be at
    the model's voxel size, and nothing is resampled.
    """
    if not (model_voxel or knows_cell_size) or not known_voxel_size(dict(enumerate(voxel))):
        return None
    return tuple(float(v) for v in voxel)


def start_worker(gen: Generator, *, description: str, yielded: Callable, returned: Callable,
                 finished: Callable, fraction: Callable[[Any], float] = lambda e: 0.0,
                 describe: Callable[[Any], str] | None = None, errored: Callable | None = None):
    """Run the generator ``gen`` in a napari thread worker with a progress bar in the activity dock.

    ``worker.quit()`` stops at the next yield and closes ``gen`` in the worker thread, so
    its ``finally`` blocks run (temporary files removed, best training model saved).
    Errors become napari notifications with the engine's message.
    """
    from napari.qt.threading import create_worker
    from napari.utils import progress
    from napari.utils.notifications import show_error
    from qtpy.QtCore import Qt

    def drive():
        return (yield from gen)

    worker = create_worker(drive, _start_thread=False, _ignore_errors=True)
    bar = progress(total=1000, desc=description)

    def on_yield(event: Any) -> None:
        yielded(event)  # first: updating the bar may process pending events (returned, finished)
        if not bar.disable:
            if describe is not None:
                bar.set_description(describe(event))
            value = int(1000 * min(max(fraction(event), 0.0), 1.0))
            if value > bar.n:  # update() emits the value event the activity dock's bar shows
                bar.update(value - bar.n)

    def on_error(exc: Exception) -> None:
        if errored is not None:
            errored(exc)
        show_error(f"{description} failed: {exc}")

    def on_finish() -> None:
        bar.close()
        finished()

    worker.yielded.connect(on_yield)
    worker.returned.connect(returned)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finish)
    worker.aborted.connect(gen.close, Qt.ConnectionType.DirectConnection)
    worker.start()
    return worker
