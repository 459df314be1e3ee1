"""Writers for Labels layers: TIFF (one file) and zarr (chunked, copied block by block)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..io.arrays import UNIT, source_path
from ..io.paths import within_path
from ..io.tiff import write_label_tiff
from ._common import known_voxel_size

COPY_CHUNK = 256


def _refuse_source(path: str, data: Any) -> None:
    src = source_path(data)
    if src is not None and (within_path(src, path) or within_path(path, src)):
        raise ValueError(f"{path} is where this layer's data is read from; save it under another name "
                         f"(inputs are never overwritten)")


def layer_axes(meta: dict, ndim: int) -> str:
    """Axis letters of a layer from its axis labels (``z``, ``y``, ``x``, ...), else the last of TZYX."""
    axes = "".join(str(a)[:1].upper() for a in meta.get("axis_labels") or ())
    if len(axes) == ndim and len(set(axes)) == ndim and set(axes) <= set("TQRSUCZYX"):
        return axes
    return "TQRSUZYX"[-ndim:] if ndim <= 3 else "TQRSU"[:ndim - 3] + "ZYX"


def layer_voxel_size(meta: dict, axes: str) -> dict[str, float]:
    """The layer scale of its spatial axes, in micrometres ({} for napari's default of ones)."""
    return known_voxel_size({a: float(s) for a, s in zip(axes, meta.get("scale") or ()) if a in "ZYX"})


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to a TIFF with its axes and voxel size (the layer scale), as the
    command line writes label TIFFs (loads it: use zarr for labels larger than memory)."""

    _refuse_source(path, data)
    array = np.asarray(data[...] if not isinstance(data, np.ndarray) else data)
    axes = layer_axes(meta, array.ndim)
    write_label_tiff(path, array, axes, layer_voxel_size(meta, axes))
    return [path]


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to a new zarr array, block by block (never loads it whole)."""
    _refuse_source(path, data)
    if Path(path).exists():
        raise FileExistsError(f"{path} already exists; choose a new name (zarr outputs are never replaced "
                              f"from the save dialog)")
    shape = tuple(int(n) for n in data.shape)
    chunks = tuple(getattr(data, "chunks", None) or ()) if isinstance(data, zarr.Array) else ()
    if len(chunks) != len(shape):
        chunks = tuple([1] * max(len(shape) - 3, 0) + [min(n, COPY_CHUNK) for n in shape[-3:]])
    out = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=np.dtype(data.dtype))
    for start in np.ndindex(*(math.ceil(n / c) for n, c in zip(shape, chunks))):
        index = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(start, chunks, shape))
        out[index] = np.asarray(data[index])
    axes = layer_axes(meta, len(shape))
    scale = [float(s) for s in meta.get("scale") or [1.0] * len(shape)]
    out.attrs.update({"image-label": {}, "axes": axes, "scale": scale})
    if layer_voxel_size(meta, axes):
        out.attrs["unit"] = UNIT
    return [os.fspath(path)]
