"""Reader: zarr arrays and OME-Zarr images (pyramids as multiscale layers), opened lazily.

Nothing is computed over the whole array: contrast limits come from OME ``omero``
metadata, or from the smallest pyramid level when it is small, or from one chunk.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
SAMPLE_LIMIT = 1 << 22  # elements read at most to guess contrast limits


def get_reader(path: str | list[str]) -> Callable | None:
    """The reader function for a zarr directory, else ``None`` (napari tries other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if not p.is_dir() or not any((p / m).exists() for m in ZARR_MARKERS):
        return None
    return read_zarr


def read_zarr(path: str | list[str]) -> list[tuple]:
    """Layer data for one zarr path: ``[(data, metadata, layer_type)]``."""
    import zarr

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
    return [_read_ome(node, name, str(path))]


def _is_labels(attrs: dict, dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "iu" and ("instances" in attrs or "image-label" in attrs)


def _read_ome(group: Any, name: str, where: str) -> tuple:
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales")
    if not multiscales:
        arrays = sorted(n for n, _ in group.arrays())
        raise ValueError(f"{where} is a zarr group without OME-Zarr 'multiscales' metadata; open one of "
                         f"its arrays instead (found: {arrays or 'none'})")
    first = multiscales[0]
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
    else:
        chunks = getattr(smallest, "chunks", smallest.shape)
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
