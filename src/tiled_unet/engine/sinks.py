"""Where the engine's probabilities go, and how a caller steers which tiles it computes.

A :class:`Sink` receives each tile's probabilities as they are made (``write``, from one
writer thread, in order) and gives the result at the end (``finish``). :func:`open_sink`
makes one from ``predict``'s ``out``: None (a new numpy array), an array to fill, a zarr
path (written under a temporary name, renamed into place at the end) or any object with ``write`` and ``finish``
(e.g. a sink that shows tiles as they come); a sink may also have ``discard``, called
when the run fails or is stopped. A :class:`TileHook` (resumable and cluster
runs: :class:`tiled_unet.engine.plan.TileRecord`) skips tiles, gives a frame's intensity
range and hears when tiles are stored.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..io.arrays import create_zarr_output, discard_zarr_output, is_array_like, publish_zarr_output, source_path
from ..io.paths import claim_output


@runtime_checkable
class Sink(Protocol):
    """Receives probabilities ``values`` for ``index`` (``(*frame, slice(None), *spatial slices)``)."""

    def write(self, index: tuple, values: np.ndarray) -> None: ...

    def finish(self) -> Any: ...


class TileHook(Protocol):
    """Steers one run: tiles to skip, a frame's given ``(offset, scale)``, tiles stored."""

    def skip(self, frame: int, tile: int) -> bool: ...

    def intensity(self, frame: int) -> tuple[np.ndarray, np.ndarray] | None: ...

    def written(self, frame: int, tiles: list[int]) -> None: ...


class ArraySink:
    """Fills an array (a new numpy array when none is given); ``finish`` returns it."""

    def __init__(self, array: Any):
        self.array = array

    def write(self, index: tuple, values: np.ndarray) -> None:
        self.array[index] = values

    def finish(self) -> Any:
        return self.array


class ZarrSink(ArraySink):
    """A new zarr array for ``path``, written under a temporary name and renamed into place (its
    ``complete`` attribute true) once every tile is in."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
                 overwrite: bool, attrs: dict[str, Any]):
        super().__init__(create_zarr_output(path, shape, chunks, dtype, overwrite))
        self.path = path
        self.array.attrs.update({**attrs, "complete": False})

    def finish(self) -> Any:
        return publish_zarr_output(self.array, self.path)

    def discard(self) -> None:
        discard_zarr_output(self.path)


def open_sink(out: Any, image: Any, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
              overwrite: bool, attrs: dict[str, Any]) -> Sink:
    """The sink for ``predict``'s ``out`` (see the module docstring), checked against the output."""
    if out is None:
        return ArraySink(np.empty(shape, dtype))
    if isinstance(out, (str, os.PathLike)):
        claim_output(out, overwrite, [source_path(image)])
        return ZarrSink(out, shape, chunks, dtype, overwrite, attrs)
    if isinstance(out, Sink) and not is_array_like(out):
        return out
    if not is_array_like(out):
        raise TypeError(f"out must be None, a zarr path, an array or a Sink (write and finish), "
                        f"got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(shape)} "
                         f"(extra axes, classes, spatial axes)")
    if np.dtype(out.dtype).kind != "f":
        raise ValueError(f"out must have a float dtype for probabilities, got {out.dtype}")
    if out is image:
        raise ValueError("out is the input array; write the probabilities somewhere else")
    return ArraySink(out)
