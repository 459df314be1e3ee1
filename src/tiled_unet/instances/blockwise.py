"""Instance labels of volumes larger than memory, block by block, identical to in memory.

:func:`labels_blockwise` gives exactly :func:`tiled_unet.instances.instances_from_probabilities`
of the whole volume, IDs included, for any block shape, holding only a block (plus a
halo) and tables with one entry per object in memory. Each step of the in-memory
algorithm is pointwise, local or a connected-component labelling, and each kind has its
blockwise form:

* pointwise (masks): per block;
* local with radius r (seeded growth, r = ``max_growth``, city-block): per block read
  with a halo of r pixels (clipped at the volume border), halo cropped off;
* connected components (seeds, unseeded foreground, background): labels per block,
  joined by the pairs of labels that touch across block faces, merged with
  ``scipy.sparse.csgraph.connected_components`` (the scheme of dask-image's
  ``ndmeasure.label``); sizes, the volume-border flag and the adjacent cells of a
  background component are per-block tables summed over its pieces.

IDs: the in-memory IDs are consecutive in raster order of first appearance. The first
pixel of every object is known after the growth pass (the minimum over blocks of the
first flat raster position); the size filter removes whole objects, and filling a hole
never adds a pixel before the first pixel of its cell (the pixel before the hole's first
pixel, along the last axis, belongs to the enclosing cell), so sorting by it gives the
final IDs.

Passes over the volume (each a dask graph of one task per block): masks and seed
components; seeded growth and unseeded components; background components (only with
``fill_holes``); the final write. Between them, small tasks read the face arrays and
return label pairs. Intermediate int32 label volumes live in a temporary directory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..config import InstanceConfig
from ..io.arrays import (create_zarr_output, discard_zarr_output, is_array_like, open_image,
                         publish_zarr_output, source_path)
from ..io.paths import within_path
from . import _blocks as blocks
from . import memory as instances
from .tasks import Progress, TaskRunner

DEFAULT_BLOCK_VOXELS = 2**24
MAX_BLOCK_VOXELS = 2**31 - 1


def labels_blockwise(probs: Any, out: Any, *, config: InstanceConfig | None = None,
                     class_names: Sequence[str] = ("background", "interior", "boundary"),
                     block_shape: Sequence[int] | None = None, overwrite: bool = False,
                     scheduler: Any = None, tmpdir: str | os.PathLike | None = None,
                     progress: Progress | None = None) -> Any:
    """Instance labels (0 = background, 1..N consecutive) of probabilities ``(classes, *spatial)``.

    ``probs``: a zarr array or path (2 or 3 spatial axes, float). ``out``: a zarr path,
    created with chunks = ``block_shape`` (``overwrite=True`` to replace an existing
    one), or an integer array of the spatial shape to fill. ``block_shape``: spatial
    block size (default: the input chunks grown to about 16 M voxels). ``scheduler``: a
    dask scheduler name (default ``"threads"``) or a ``dask.distributed.Client``.
    ``tmpdir``: where the temporary label volumes go (default: next to ``out``; removed
    at the end). ``progress(done, total, stage)`` is called as blocks finish.

    Identical, IDs included, to ``instances_from_probabilities(np.asarray(probs), config,
    class_names)``; uint32, or uint64 when there are 2**32 - 1 objects or more.
    """
    config = _check_config(config)
    source = _open_probs(probs)
    spatial = tuple(int(n) for n in source.shape[1:])
    roles = instances.class_roles(_check_class_names(class_names, source.shape[0]), source.shape[0])
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function (done, total, stage) or None, got {type(progress).__name__}")
    runner = TaskRunner(scheduler, progress)
    src = source_path(probs)
    out_path, out_chunks = _check_out(out, source, src, spatial, overwrite)
    block = _block_shape(block_shape, spatial, _chunks(source, spatial), out_chunks)
    grid = blocks.Grid(spatial, block)
    work = _workdir(tmpdir, out_path, out, src)
    try:
        target = out
        if out_path is not None:
            target = create_zarr_output(out_path, spatial, block, "uint32", overwrite)
            target.attrs["complete"] = False
        labeller = _Labeller(source, roles, config, grid, work, runner)
        finals, count = labeller.cells()
        dtype = np.uint32 if count < 2**32 - 1 else np.uint64
        if out_path is not None and dtype == np.uint64:
            target = create_zarr_output(out_path, spatial, block, "uint64", True)
            target.attrs["complete"] = False
        elif out_path is None and count > np.iinfo(np.dtype(out.dtype)).max:
            raise ValueError(f"out has dtype {out.dtype}, too small for {count} objects; "
                             f"give an array of dtype {np.dtype(dtype).name}")
        finals = {index: table.astype(dtype) for index, table in finals.items()}
        fills = labeller.holes(finals) if config.fill_holes else {}
        labeller.write(finals, fills, target)
        return target if out_path is None else publish_zarr_output(target, out_path)
    except BaseException:  # failed or stopped: the output stays as it was, nothing temporary left
        if out_path is not None:
            discard_zarr_output(out_path)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Labeller:
    """The passes over the volume and the tables that join them."""

    def __init__(self, source: Any, roles: tuple[int | None, int], config: InstanceConfig,
                 grid: blocks.Grid, work: str, runner: TaskRunner):
        self.source, self.roles, self.config, self.grid, self.runner = source, roles, config, grid, runner
        self.indices = grid.indices()
        chunks = blocks.sub_chunks(grid.block)
        # opened once here: zarr arrays pickle as light handles, for any scheduler
        self.codes = {name: zarr.open_array(f"{work}/{name}.zarr", mode="w", shape=grid.shape, chunks=chunks,
                                            dtype=blocks.CODE, fill_value=0) for name in ("seeds", "cells")}
        self.faces = {name: blocks.create_faces(work, name, grid) for name in ("seeds", "cells", "background")}

    def _neighbourhood(self, index: tuple[int, ...], tables: dict) -> dict:
        return {index: tables[index], **{nb: tables[nb] for _, nb in self.grid.neighbours(index)}}

    def _joins(self, stage: str, name: str, nodes: dict) -> np.ndarray:
        """Node pairs touching across all block faces of one label volume."""
        todo = [i for i in self.indices if any(True for _ in self.grid.neighbours(i))]
        calls = [(self.faces[name], self.grid, i, self._neighbourhood(i, nodes)) for i in todo]
        return blocks.unique_pairs(self.runner.map(stage, blocks.face_pairs, calls))

    def seeds(self) -> tuple[dict, int]:
        """Global seed IDs 1..S (0: none) for the seed codes of every block."""
        calls = [(self.source, self.roles, self.config, self.grid, i, self.codes["seeds"], self.faces["seeds"])
                 for i in self.indices]
        tables = self.runner.map("masks", blocks.seed_task, calls)
        pieces = _offsets(len(t) for t in tables)
        low, n_low = self._seed_components(tables, 0, "seed faces")
        if self.config.seed_low_threshold:
            high, n_high = self._seed_components(tables, 1, "high seed faces")
        else:  # one mask: the high components are the low ones
            high, n_high = low, n_low
        size = np.concatenate([t[:, 2] for t in tables])
        ids, count = instances.seed_ids(low, high, size, n_low, n_high, self.config)
        seed_ids = {i: np.concatenate([[0], ids[pieces[b]:pieces[b + 1]]]).astype(np.int64)
                    for b, i in enumerate(self.indices)}
        return seed_ids, count

    def _seed_components(self, tables: list, column: int, stage: str) -> tuple[np.ndarray, int]:
        """The global low (column 0) or high (column 1) component of every seed piece
        (-1: none), and how many there are, joined across block faces."""
        local = [t[:, column] for t in tables]
        offsets = _offsets(int(c.max(initial=-1)) + 1 for c in local)
        node = [np.where(c >= 0, offsets[b] + c, -1) for b, c in enumerate(local)]
        nodes = {i: np.concatenate([[-1, -1], node[b]]) for b, i in enumerate(self.indices)}
        comp = blocks.components(int(offsets[-1]), self._joins(stage, "seeds", nodes))
        count = int(comp.max(initial=-1)) + 1
        every = np.concatenate(node) if node else np.zeros(0, np.int64)
        return np.concatenate([comp, [-1]])[every], count  # node -1 reads the -1 at the end

    def cells(self) -> tuple[dict, int]:
        """Seeded growth and unseeded regions; final IDs for the cell codes of every block."""
        seed_ids, count = self.seeds()
        steps = self.config.max_growth
        calls = []
        for i in self.indices:
            near = {b: seed_ids[b] for b, _ in self.grid.overlapping(self.grid.window(i, steps))}
            calls.append((self.grid, i, self.codes["seeds"], self.codes["cells"], self.faces["cells"], near,
                          steps, self.config.keep_unseeded))
        results = self.runner.map("growth", blocks.grow_task, calls)
        present = [r[0] for r in results]
        extras = [r[2] for r in results]
        offsets = _offsets(extras)
        first_seed = np.concatenate([r[4][:len(r[0])] for r in results])
        seed_size = np.bincount(np.concatenate(present), weights=np.concatenate([r[1] for r in results]),
                                minlength=count + 1)[1:]
        seed_first = _minimum_per(np.concatenate(present) - 1, first_seed, count)
        comp = np.zeros(0, np.int64)
        if offsets[-1]:
            nodes = {i: np.concatenate([np.full(2 + len(present[b]), -1), offsets[b] + np.arange(extras[b])])
                     for b, i in enumerate(self.indices)}
            comp = blocks.components(int(offsets[-1]), self._joins("unseeded faces", "cells", nodes))
        n_extra = int(comp.max(initial=-1)) + 1
        extra_size = np.bincount(comp, weights=np.concatenate([r[3] for r in results]), minlength=n_extra)
        extra_first = _minimum_per(comp, np.concatenate([r[4][len(r[0]):] for r in results]), n_extra)
        size = np.concatenate([seed_size, extra_size])
        first = np.concatenate([seed_first, extra_first])
        kept = np.flatnonzero((size >= max(self.config.min_size, 1)) & (size > 0))
        final = np.zeros(len(size), np.int64)
        final[kept[np.argsort(first[kept], kind="stable")]] = np.arange(1, len(kept) + 1)
        tables = {i: np.concatenate([[0], final[present[b] - 1], final[count + comp[offsets[b]:offsets[b + 1]]]])
                  for b, i in enumerate(self.indices)}
        return tables, len(kept)

    def holes(self, finals: dict) -> dict:
        """For every block: the cell ID that fills each of its background codes (0: none)."""
        calls = [(self.grid, i, self.codes["cells"], self.faces["background"], finals[i]) for i in self.indices]
        results = self.runner.map("holes", blocks.hole_task, calls)
        offsets = _offsets(len(r[1]) for r in results)
        nodes = {i: np.concatenate([[-1, -1], offsets[b] + np.arange(len(results[b][1]))])
                 for b, i in enumerate(self.indices)}
        todo = [i for i in self.indices if any(True for _ in self.grid.neighbours(i))]
        calls = [(self.faces["background"], self.faces["cells"], self.grid, i, self._neighbourhood(i, nodes),
                  self._neighbourhood(i, finals)) for i in todo]
        across = self.runner.map("hole faces", blocks.hole_face_pairs, calls)
        comp = blocks.components(int(offsets[-1]), blocks.unique_pairs([a[0] for a in across]))
        n_bg = int(comp.max(initial=-1)) + 1
        border = np.zeros(n_bg, bool)
        border[comp[np.concatenate([offsets[b] + r[0].astype(np.int64) - 1 for b, r in enumerate(results)])]] = True
        # adjacent cells of each background component: smallest and largest ID suffice
        owners = blocks.unique_pairs([a[1] for a in across])
        low = _minimum_per(np.concatenate([comp, comp[owners[:, 0]]]),
                           np.concatenate([r[1] for r in results] + [owners[:, 1]]), n_bg)
        high = np.zeros(n_bg, np.int64)
        np.maximum.at(high, np.concatenate([comp, comp[owners[:, 0]]]),
                      np.concatenate([r[2] for r in results] + [owners[:, 1]]))
        fill = np.where((high > 0) & (low == high) & ~border, high, 0)
        tables = {}
        for b, i in enumerate(self.indices):
            table = np.concatenate([[0], fill[comp[offsets[b]:offsets[b + 1]]]])
            if table.any():
                tables[i] = table.astype(finals[i].dtype)
        return tables

    def write(self, finals: dict, fills: dict, out: Any) -> None:
        calls = [(self.grid, i, self.codes["cells"], out, finals[i], fills.get(i)) for i in self.indices]
        self.runner.map("write", blocks.write_task, calls)


def _offsets(counts) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.fromiter(counts, np.int64))]).astype(np.int64)


def _minimum_per(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    out = np.full(count, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, groups, values)
    return out


# --- inputs ------------------------------------------------------------------------------

def _check_config(config: Any) -> InstanceConfig:
    if config is None:
        return InstanceConfig()
    if not isinstance(config, InstanceConfig):
        raise TypeError(f"config must be an InstanceConfig or None, got {type(config).__name__}")
    return config


def _open_probs(probs: Any) -> Any:
    if isinstance(probs, (str, os.PathLike)):
        source = open_image(probs)
    elif is_array_like(probs) and hasattr(probs, "ndim"):
        source = probs
    else:
        raise TypeError(f"probs must be a zarr array, a numpy array or a path to a zarr array, "
                        f"got {type(probs).__name__}")
    if source.ndim not in (3, 4):
        raise ValueError(f"probs must have axes (classes, *spatial) with 2 or 3 spatial axes, "
                         f"got shape {tuple(source.shape)}")
    if min(source.shape) < 1:
        raise ValueError(f"probs must not have an empty axis, got shape {tuple(source.shape)}")
    if np.dtype(source.dtype).kind != "f":
        raise TypeError(f"probs must hold float probabilities (classes, *spatial), got dtype {source.dtype}")
    return source


def _check_class_names(class_names: Any, classes: int) -> tuple[str, ...]:
    if (isinstance(class_names, str) or not isinstance(class_names, Sequence)
            or not all(isinstance(n, str) for n in class_names)):
        raise TypeError(f"class_names must be a sequence of strings, got {class_names!r}")
    if len(class_names) != classes:
        raise ValueError(f"class_names has {len(class_names)} names {tuple(class_names)} but probs has "
                         f"{classes} classes (axis 0)")
    return tuple(class_names)


def _check_out(out: Any, source: Any, src: str | None, spatial: tuple[int, ...],
               overwrite: bool) -> tuple[str | None, tuple[int, ...] | None]:
    """(path to create or None, chunks a given array imposes on the blocks or None)."""
    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        if src is not None and (within_path(src, path) or within_path(path, src)):
            raise ValueError(f"out {path!r} is, contains or lies inside the input {src!r}; write the "
                             f"labels somewhere else (inputs are never overwritten)")
        if Path(path).suffix == ".zip":
            raise ValueError(f"cannot write labels into a zip store ({path}); give a zarr directory path")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"output {path} already exists; pass overwrite=True to replace it, "
                                  f"or choose another path")
        return path, None
    if not (is_array_like(out) and hasattr(out, "__setitem__")):
        raise TypeError(f"out must be a zarr path or an integer array to fill, got {type(out).__name__}")
    where = source_path(out)
    if out is source or (src is not None and where is not None and (within_path(src, where) or within_path(where, src))):
        raise ValueError("out is (or lies inside) the input probabilities; write the labels somewhere else")
    if tuple(out.shape) != spatial:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected the spatial shape of probs {spatial}")
    if np.dtype(out.dtype).kind not in "iu":
        raise ValueError(f"out must have an integer dtype (uint32 recommended), got {out.dtype}")
    flags = getattr(out, "flags", None)
    if getattr(out, "read_only", False) or (flags is not None and not flags.writeable):
        raise ValueError("out is read-only; open it for writing (zarr: mode='r+' or 'a')")
    chunks = getattr(out, "shards", None) or getattr(out, "chunks", None)
    return None, (tuple(int(c) for c in chunks) if chunks and not isinstance(chunks[0], tuple) else None)


def _chunks(source: Any, spatial: tuple[int, ...]) -> tuple[int, ...]:
    chunks = getattr(source, "chunks", None)
    if not chunks:
        return tuple(min(64, n) for n in spatial)
    chunks = tuple(c[0] if isinstance(c, tuple) else c for c in chunks[1:])
    return tuple(int(c) for c in chunks)


def _block_shape(block_shape: Any, spatial: tuple[int, ...], chunks: tuple[int, ...],
                 required: tuple[int, ...] | None) -> tuple[int, ...]:
    """The given block shape (checked), or ``chunks`` doubled along the shortest axis to
    about DEFAULT_BLOCK_VOXELS. ``required``: chunks of a given output array, which every
    block must cover whole (so that no two blocks write into one chunk)."""
    nd = len(spatial)
    if block_shape is None:
        block = [min(c, n) for c, n in zip(required or chunks, spatial)]
        while math.prod(block) * 2 <= DEFAULT_BLOCK_VOXELS:
            growable = [a for a in range(nd) if block[a] < spatial[a]]
            if not growable:
                break
            axis = min(growable, key=lambda a: block[a])
            block[axis] = min(block[axis] * 2, spatial[axis])
        while math.prod(block) > 4 * DEFAULT_BLOCK_VOXELS and required is None:  # huge input chunks
            axis = block.index(max(block))
            block[axis] = -(-block[axis] // 2)
        block_shape = block
    if isinstance(block_shape, (str, bytes)) or not hasattr(block_shape, "__len__"):
        raise TypeError(f"block_shape must be a sequence of {nd} integers or None, got {block_shape!r}")
    if len(block_shape) != nd:
        raise ValueError(f"block_shape must have {nd} entries (one per spatial axis of {spatial}), "
                         f"got {tuple(block_shape)}")
    for b in block_shape:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"block_shape entries must be integers >= 1, got {tuple(block_shape)}")
    block = tuple(min(int(b), n) for b, n in zip(block_shape, spatial))
    if math.prod(block) > MAX_BLOCK_VOXELS:
        raise ValueError(f"block_shape {block} has {math.prod(block):,} voxels; at most {MAX_BLOCK_VOXELS:,} "
                         f"are allowed (use smaller blocks)")
    if required and any(b % c and b < n for b, c, n in zip(block, required, spatial)):
        raise ValueError(f"block_shape {block} must be a multiple of the chunks of out {required} "
                         f"(or span a whole axis), so that no two blocks write into one chunk")
    return block


def _workdir(tmpdir: Any, out_path: str | None, out: Any, src: str | None) -> str:
    """A fresh temporary directory inside ``tmpdir`` (default: next to the output)."""
    if tmpdir is not None:
        if not isinstance(tmpdir, (str, os.PathLike)):
            raise TypeError(f"tmpdir must be a directory path or None, got {type(tmpdir).__name__}")
        parent = Path(tmpdir)
    elif out_path is not None:
        parent = Path(os.path.abspath(out_path)).parent
    else:
        where = source_path(out)
        parent = Path(where).parent if where else Path(tempfile.gettempdir())
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"tmpdir {os.fspath(parent)!r} is not a directory")
    if src is not None and within_path(parent, src):
        raise ValueError(f"the temporary directory {os.fspath(parent)!r} lies inside the input {src!r}; "
                         f"give tmpdir= elsewhere")
    if out_path is not None and within_path(parent, out_path):
        raise ValueError(f"tmpdir {os.fspath(parent)!r} lies inside the output {out_path!r}, which is "
                         f"replaced; give tmpdir= elsewhere")
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=".tiled-unet-labels-", suffix=".tmp", dir=parent)
