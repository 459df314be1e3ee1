"""Open images lazily (numpy, zarr v2/v3 directory or zip, OME-Zarr, dask, TIFF) and create outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .omezarr import multiscales_of
from .paths import claim_output

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr", ".zip")
ZARR_MAJOR = int(zarr.__version__.split(".")[0])
UNIT = "micrometer"  # of voxel sizes in zarr attributes (OME-Zarr's name for it)


def is_array_like(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("shape", "dtype", "__getitem__"))


def open_zarr(path: str | os.PathLike, mode: str = "r") -> Any:
    """Open a zarr array (v2 or v3; directory or ``.zip``); an OME-Zarr image gives its level 0."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such zarr store: {path}")
    if path.suffix == ".zip":
        store = zarr.storage.ZipStore(str(path), mode="r") if ZARR_MAJOR >= 3 else zarr.ZipStore(str(path), mode="r")
        node = zarr.open(store, mode="r")
    else:
        node = zarr.open(str(path), mode=mode)
    if isinstance(node, zarr.Array):
        return node
    return node[multiscales_of(node, str(path))["datasets"][0]["path"]]


def open_tiff(path: str | os.PathLike) -> Any:
    """A TIFF as a memory map where its layout allows, otherwise as a lazy zarr view."""
    import tifffile

    try:
        return tifffile.memmap(str(path), mode="r")
    except (ValueError, OSError):
        pass
    store = tifffile.imread(str(path), aszarr=True)
    return zarr.open(store, mode="r")


def open_image(image: Any) -> Any:
    """Anything ``predict`` accepts, as an object with ``shape``, ``dtype`` and lazy slicing.

    numpy arrays, zarr arrays and dask arrays are used as they are; paths are opened
    by suffix (``.tif``/``.tiff``: TIFF; a directory or ``.zarr``/``.zip``: zarr).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
        if path.suffix.lower() in TIFF_SUFFIXES:
            return open_tiff(path)
        if path.is_dir() or path.suffix.lower() in ZARR_SUFFIXES:
            return open_zarr(path)
        raise ValueError(f"cannot read {path}: expected a TIFF file (.tif, .tiff), a zarr directory "
                         f"or a zarr .zip file")
    if isinstance(image, (list, tuple)):
        image = np.asarray(image)
    if is_array_like(image) and hasattr(image, "ndim"):
        return image
    raise TypeError(f"expected an image as a numpy, zarr or dask array or a path, got {type(image).__name__}")


def source_path(image: Any) -> str | None:
    """The file system path behind an input, where there is one (a zarr array inside a
    group: the array's own path, inside the store)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    store = getattr(image, "store", None)
    root = getattr(store, "root", None) or getattr(store, "path", None)
    if root is None:
        return None
    inner = getattr(image, "path", "") if isinstance(image, zarr.Array) else ""
    return os.path.join(os.fspath(root), inner) if inner else os.fspath(root)


def create_zarr_output(path: str | os.PathLike, shape: tuple[int, ...], chunks: tuple[int, ...],
                       dtype: Any, overwrite: bool) -> Any:
    """Create the zarr array ``predict`` writes into; refuse to replace data unless told to."""
    path = Path(path)
    claim_output(path, overwrite)
    if path.exists():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if path.suffix == ".zip":
        raise ValueError(f"cannot write into a zip store ({path}); write a zarr directory instead")
    return zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype)


def scale_attrs(axes: str, voxel_size: dict[str, float] | None) -> dict[str, Any]:
    """Zarr attributes that record a voxel size for an array with ``axes``: ``scale`` per axis
    (micrometres on Z, Y, X; 1 on the others, as napari's layer scale) and ``unit``; ``{}`` when
    no spatial axis has a known size."""
    sizes = {a: float(v) for a, v in (voxel_size or {}).items() if a in axes and a in "ZYX"}
    if not sizes:
        return {}
    return {"scale": [sizes.get(a, 1.0) for a in axes], "unit": UNIT}
