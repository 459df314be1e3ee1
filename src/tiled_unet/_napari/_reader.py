"""Reader: zarr arrays, OME-Zarr images (pyramids as multiscale layers, with their labels) and
TIFF files, opened lazily with their axes and voxel size (micrometres) as the layer scale.

Nothing is computed over the whole array: contrast limits come from OME ``omero``
metadata, or from the smallest pyramid level when it is small, or from one chunk.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr

from ..io.arrays import TIFF_SUFFIXES, open_tiff
from ..io.omezarr import multiscales_of, ome_attrs
from ..io.tiff import read_tiff_meta

ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
SAMPLE_LIMIT = 1 << 22  # elements read at most to guess contrast limits
LABELS_STEM = "_labels"  # integer TIFFs named <stem>_labels.tif open as Labels layers


def get_reader(path: str | list[str]) -> Callable | None:
    """The reader for a zarr directory or a TIFF file, else ``None`` (napari tries other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES:
        return read_tiff
    if not p.is_dir() or not any((p / m).exists() for m in ZARR_MARKERS):
        return None
    return read_zarr


def read_tiff(path: str | list[str]) -> list[tuple]:
    """Layer data for one TIFF: ImageJ / OME axes as axis labels, the voxel size as the scale.

    RGB(A) samples become an RGB layer; integer images named ``*_labels.tif`` a Labels layer.
    """
    if isinstance(path, list):
        path = path[0]
    meta = read_tiff_meta(path)
    data = open_tiff(path)
    stem = Path(path).name.split(".")[0]
    axes = meta.axes
    rgb = bool(axes) and axes[-1] == "C" and data.shape[-1] in (3, 4)
    geometry = axes[:-1] if rgb else axes
    layer: dict[str, Any] = {"name": stem}
    if geometry:
        layer["axis_labels"] = tuple(geometry.lower())
        layer["scale"] = tuple(meta.voxel_size.get(a, 1.0) for a in geometry)
    elif {"Y", "X"} <= set(meta.voxel_size) and data.ndim >= 2 and data.shape[-1] not in (3, 4):
        layer["scale"] = (1.0,) * (data.ndim - 2) + (meta.voxel_size["Y"], meta.voxel_size["X"])
    if stem.endswith(LABELS_STEM) and np.dtype(data.dtype).kind in "iu":
        return [(data, layer, "labels")]
    if rgb:
        layer["rgb"] = True
    elif np.dtype(data.dtype).kind != "b":
        layer["contrast_limits"] = _contrast_limits([data])
    return [(data, layer, "image")]


def read_zarr(path: str | list[str]) -> list[tuple]:
    """Layer data for one zarr path: ``[(data, metadata, layer_type)]``."""
    if isinstance(path, list):
        path = path[0]
    node = zarr.open(str(path), mode="r")
    name = Path(path).name.split(".")[0] or Path(path).name
    if isinstance(node, zarr.Array):
        attrs = dict(node.attrs)
        kind = "labels" if _is_labels(attrs, node.dtype) else "image"
        meta: dict[str, Any] = {"name": name}
        axes = attrs.get("axes")
        if isinstance(axes, str) and len(axes) == node.ndim:
            meta["axis_labels"] = tuple(axes.lower())
        if isinstance(attrs.get("scale"), list) and len(attrs["scale"]) == node.ndim:
            meta["scale"] = tuple(float(s) for s in attrs["scale"])
        if kind == "image":
            meta["contrast_limits"] = _contrast_limits([node])
        return [(node, meta, kind)]
    return [_read_ome(node, name, str(path)), *_ome_labels(node)]


def _ome_labels(group: Any) -> list[tuple]:
    """The label images an OME-Zarr image lists under ``labels/`` (unreadable ones left out)."""
    if "labels" not in group:
        return []
    attrs = dict(group["labels"].attrs)
    names = ome_attrs(attrs).get("labels") or []
    layers = []
    for name in names:
        try:
            data, meta, _ = _read_ome(group["labels"][name], str(name), str(name))
        except (KeyError, ValueError):
            continue
        meta.pop("contrast_limits", None)
        layers.append((data, meta, "labels"))
    return layers


def _is_labels(attrs: dict, dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "iu" and ("instances" in attrs or "image-label" in attrs)


def _read_ome(group: Any, name: str, where: str) -> tuple:
    ome = ome_attrs(dict(group.attrs))
    first = multiscales_of(group, where)
    levels = [group[d["path"]] for d in first["datasets"]]
    meta: dict[str, Any] = {"name": first.get("name") or name}
    axes = first.get("axes")
    if axes and len(axes) == levels[0].ndim:
        meta["axis_labels"] = tuple(a["name"] if isinstance(a, dict) else str(a) for a in axes)
    scale = _level0_scale(first["datasets"][0], levels[0].ndim)
    if scale is not None:
        meta["scale"] = scale
    if len(levels) > 1:
        meta["multiscale"] = True
    data = levels if len(levels) > 1 else levels[0]
    if _is_labels(ome, levels[0].dtype):
        return data, meta, "labels"
    meta["contrast_limits"] = _omero_window(ome) or _contrast_limits(levels)
    return data, meta, "image"


def _level0_scale(dataset: dict, ndim: int) -> tuple[float, ...] | None:
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == ndim:
            return tuple(float(s) for s in transform["scale"])
    return None


def _omero_window(attrs: dict) -> list[float] | None:
    channels = attrs.get("omero", {}).get("channels") or []
    if len(channels) != 1:
        return None
    window = channels[0].get("window", {})
    if "start" in window and "end" in window and window["end"] > window["start"]:
        return [float(window["start"]), float(window["end"])]
    return None


def _contrast_limits(levels: list) -> list[float]:
    """From the smallest level if it is small, else from one chunk in the middle of it."""
    smallest = levels[-1]
    if math.prod(smallest.shape) <= SAMPLE_LIMIT:
        values = np.asarray(smallest[...])
    else:  # one chunk; without chunks (a memory map) the middle plane
        chunks = getattr(smallest, "chunks", None) or (1,) * (smallest.ndim - 2) + tuple(smallest.shape[-2:])
        index = tuple(slice(max(n // 2 - c // 2, 0), max(n // 2 - c // 2, 0) + c)
                      for n, c in zip(smallest.shape, chunks))
        values = np.asarray(smallest[index])
    if values.dtype == bool:
        return [0.0, 1.0]
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return [0.0, 1.0]
    lo, hi = (float(v) for v in np.percentile(values, [0.1, 99.9]))
    if hi <= lo:
        hi = lo + 1.0
    return [lo, hi]
