"""Paths of inputs and outputs: zarr stores, file stems, containment, removal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def is_zarr(path: Path) -> bool:
    """True for a zarr store: a folder (``.zarr`` or with zarr metadata) or a ``.zarr.zip`` file."""
    if path.is_dir():
        return path.suffix.lower() == ".zarr" or any(
            (path / m).exists() for m in (".zarray", ".zgroup", "zarr.json"))
    return path.suffix.lower() == ".zip" and path.name.lower().endswith(".zarr.zip")


def file_stem(path: Path) -> str:
    """The name of an image without its suffixes (``a.ome.tif`` -> ``a``, ``b.zarr`` -> ``b``)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr.zip", ".ome.zarr", ".zarr", ".zip"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def probabilities_path(labels: str | os.PathLike, suffix: str = "zarr") -> Path:
    """The default side output for the probabilities of ``labels``: ``a_labels.zarr`` -> ``a_probabilities.zarr``."""
    labels = Path(labels)
    base = file_stem(labels)
    return labels.parent / f"{base[:-len('_labels')] if base.endswith('_labels') else base}_probabilities.{suffix}"


def within_path(inner: str | os.PathLike, outer: str | os.PathLike) -> bool:
    """True if ``inner`` is ``outer`` or lies inside it (replacing ``outer`` would delete it)."""
    inner, outer = os.path.realpath(inner), os.path.realpath(outer)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def remove(path: Path) -> None:
    """Remove a file or a directory tree if present."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def partial_path(path: str | os.PathLike) -> Path:
    """Where a write to ``path`` goes until it is complete: ``.<name>.partial`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def put_in_place(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the finished ``staged`` file or folder to ``final``. An existing ``final`` is moved
    aside first and removed only once the new one is in place, so ``final`` always holds a whole
    result: the old one or the new one."""
    staged, final = Path(staged), Path(final)
    old = final.with_name(f".{final.name}.replaced")
    if os.path.lexists(final):
        remove(old)
        os.replace(final, old)
    os.replace(staged, final)
    remove(old)


def claim_output(path: str | os.PathLike, overwrite: bool, inputs: Any = (), *, what: str = "output",
                 replace_hint: str = "pass overwrite=True (CLI: --overwrite) to replace it") -> Path:
    """The one check before writing ``path``: never an input, inside one or around one (whatever
    ``overwrite`` says); an existing file or folder only with ``overwrite``. ``inputs``: paths or None."""
    path = Path(path)
    for source in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
        if source is not None and (within_path(path, source) or within_path(source, path)):
            raise ValueError(f"{what} {os.fspath(path)!r} is, contains or lies inside the input "
                             f"{os.fspath(source)!r}; choose another path (inputs are never overwritten)")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{what} {os.fspath(path)} already exists; {replace_hint}, or choose another path")
    return path
