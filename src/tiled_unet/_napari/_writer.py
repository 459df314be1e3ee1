"""Writers for Labels layers: TIFF (one file) and zarr (chunked, copied block by block)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io import source_path, within_path

COPY_CHUNK = 256


def _refuse_source(path: str, data: Any) -> None:
    src = source_path(data)
    if src is not None and (within_path(src, path) or within_path(path, src)):
        raise ValueError(f"{path} is where this layer's data is read from; save it under another name "
                         f"(inputs are never overwritten)")


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to a TIFF file (loads it: use zarr for labels larger than memory)."""
    import tifffile

    _refuse_source(path, data)
    array = np.asarray(data[...] if not isinstance(data, np.ndarray) else data)
    axes = "".join(str(a)[0].upper() for a in meta.get("axis_labels") or ()) or None
    metadata = {"axes": axes} if axes and len(axes) == array.ndim and len(set(axes)) == len(axes) else None
    tifffile.imwrite(path, array, compression="zlib", bigtiff=array.nbytes > 2**31 - 2**25,
                     metadata=metadata)
    return [path]


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to a new zarr array, block by block (never loads it whole)."""
    import zarr

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
    out.attrs.update({"image-label": {}, "scale": [float(s) for s in meta.get("scale", [1.0] * len(shape))]})
    labels = meta.get("axis_labels")
    if labels and len(labels) == len(shape):
        out.attrs["axes"] = "".join(str(a)[0].upper() for a in labels)
    return [os.fspath(path)]
