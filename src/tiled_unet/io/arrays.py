"""Open images lazily (numpy, zarr v2/v3 directory or zip, OME-Zarr, dask, TIFF) and create outputs."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .omezarr import multiscales_of
from .paths import claim_output, partial_path, put_in_place, remove

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
    try:
        if path.suffix == ".zip":
            store = (zarr.storage.ZipStore(str(path), mode="r") if ZARR_MAJOR >= 3
                     else zarr.ZipStore(str(path), mode="r"))
            node = zarr.open(store, mode="r")
        else:
            node = zarr.open(str(path), mode=mode)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        found = [m for m in ("zarr.json", ".zarray", ".zgroup", ".zattrs") if (path / m).exists()]
        raise ValueError(f"cannot read the zarr store {path}: its metadata ({', '.join(found) or 'none found'}) "
                         f"is damaged or incomplete ({type(error).__name__}: {error}); restore the store from "
                         f"a copy or write it again") from None
    if isinstance(node, zarr.Array):
        return node
    return node[multiscales_of(node, str(path))["datasets"][0]["path"]]


def open_tiff(path: str | os.PathLike) -> Any:
    """A TIFF as a memory map where its layout allows, otherwise as a lazy zarr view."""
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


class DamagedDataError(ValueError):
    """Stored data that cannot be read back (a corrupt or truncated chunk)."""


def read_region(source: Any, index: tuple, dtype: Any = None) -> np.ndarray:
    """``np.asarray(source[index], dtype)``; a chunk that cannot be read or decoded is named, with
    what to do (:class:`DamagedDataError`)."""
    try:
        return np.asarray(source[index], dtype)
    except (MemoryError, KeyboardInterrupt, DamagedDataError):
        raise
    except Exception as error:  # noqa: BLE001 - codec and store errors of any library
        try:
            where = source_path(source)
        except Exception:  # noqa: BLE001
            where = None
        chunk = _bad_chunk(source, index)
        key = None
        try:
            key = source.metadata.encode_chunk_key(chunk) if chunk is not None else None
        except Exception:  # noqa: BLE001 - zarr v2 arrays, other array types
            pass
        raise DamagedDataError(f"cannot read {'the input ' + repr(where) if where else 'the input array'}"
                         f"{' chunk ' + str(chunk) if chunk else ''}{' (file ' + key + ')' if key else ''} (region "
                         f"{[(s.start, s.stop) if isinstance(s, slice) else s for s in index]}): "
                         f"{type(error).__name__}: {error}; the data on disk is damaged or incomplete: "
                         f"restore it from a copy or write the array again") from error


def chunk_positions(index: tuple, chunks: tuple[int, ...], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Grid positions of the chunks that the region ``index`` (slices and integers, missing
    trailing axes = whole) touches, in raster order."""
    ranges = []
    for axis, (size, n) in enumerate(zip(chunks, shape)):
        s = index[axis] if axis < len(index) else slice(None)
        lo, hi = s.indices(n)[:2] if isinstance(s, slice) else (int(s), int(s) + 1)
        ranges.append(range(lo // size, max(lo // size + 1, -(-hi // size))))
    return list(itertools.product(*ranges))


def _bad_chunk(source: Any, index: tuple) -> tuple[int, ...] | None:
    """The grid position of the first chunk in ``index`` that fails to read (None if unknown)."""
    chunks = getattr(source, "chunks", None)
    if not chunks or len(chunks) != len(source.shape) or not isinstance(chunks[0], int):
        return None
    for position in chunk_positions(index, chunks, source.shape):
        try:
            source[tuple(slice(p * c, min((p + 1) * c, n)) for p, c, n in zip(position, chunks, source.shape))]
        except Exception:  # noqa: BLE001
            return position
    return None


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
    """A new zarr array for the output ``path``, made at :func:`~tiled_unet.io.paths.partial_path`
    (``path`` itself is not touched until :func:`publish_zarr_output` renames it into place);
    refuses to replace data unless told to."""
    path = Path(path)
    claim_output(path, overwrite)
    if path.suffix == ".zip":
        raise ValueError(f"cannot write into a zip store ({path}); write a zarr directory instead")
    staged = partial_path(path)
    remove(staged)  # left by a run that was stopped
    return zarr.open_array(str(staged), mode="w", shape=shape, chunks=chunks, dtype=dtype)


def publish_zarr_output(array: Any, path: str | os.PathLike) -> Any:
    """Mark ``array`` (made by :func:`create_zarr_output` for ``path``) complete, rename it into
    place (replacing an earlier output only now) and return it opened at ``path``."""
    array.attrs["complete"] = True
    put_in_place(partial_path(path), path)
    return zarr.open_array(str(path), mode="r+")


def discard_zarr_output(path: str | os.PathLike) -> None:
    """Remove what :func:`create_zarr_output` made for ``path`` (a failed or stopped run); ``path`` stays."""
    remove(partial_path(path))


def scale_attrs(axes: str, voxel_size: dict[str, float] | None) -> dict[str, Any]:
    """Zarr attributes that record a voxel size for an array with ``axes``: ``scale`` per axis
    (micrometres on Z, Y, X; 1 on the others, as napari's layer scale) and ``unit``; ``{}`` when
    no spatial axis has a known size."""
    sizes = {a: float(v) for a, v in (voxel_size or {}).items() if a in axes and a in "ZYX"}
    if not sizes:
        return {}
    return {"scale": [sizes.get(a, 1.0) for a in axes], "unit": UNIT}
