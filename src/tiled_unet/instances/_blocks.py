"""Block geometry and the per-block tasks of :mod:`tiled_unet.blockwise`.

Every task is a plain module-level function of zarr arrays (light handles that pickle
as their store path), a block index and small tables: it reads what it needs, writes
its block into zarr itself and returns small per-object tables, so any dask scheduler
(threads, processes, a distributed cluster) can run it.

Label images are stored as int32 *codes* numbered within each block (1..n); the tables
handed to later tasks map a block's codes to global IDs. The first and last plane of
every block along every axis are also written to small *face* arrays, so that the
equivalences across block faces can be found without reading whole blocks again.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import zarr
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..config import InstanceConfig
from . import memory as instances

Index = tuple[int, ...]
Region = tuple[slice, ...]
CODE = np.int32
SUB_CHUNK_VOXELS = 2**19


@dataclass(frozen=True)
class Grid:
    """A volume of ``shape`` cut into blocks of ``block`` (the last ones cut at the border)."""

    shape: tuple[int, ...]
    block: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block))

    def indices(self) -> list[Index]:
        """All block indices in C order."""
        return list(itertools.product(*(range(c) for c in self.counts)))

    def slices(self, index: Index) -> Region:
        return tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, self.block, self.shape))

    def window(self, index: Index, halo: int) -> Region:
        """The block grown by ``halo`` pixels on every side, clipped at the volume border."""
        return tuple(slice(max(s.start - halo, 0), min(s.stop + halo, n))
                     for s, n in zip(self.slices(index), self.shape))

    def overlapping(self, region: Region) -> Iterator[tuple[Index, Region]]:
        """Blocks that intersect ``region`` and the intersection (volume coordinates)."""
        ranges = [range(s.start // b, (s.stop - 1) // b + 1) for s, b in zip(region, self.block)]
        for index in itertools.product(*ranges):
            yield index, tuple(slice(max(r.start, s.start), min(r.stop, s.stop))
                               for r, s in zip(region, self.slices(index)))

    def neighbours(self, index: Index) -> Iterator[tuple[int, Index]]:
        """``(axis, index)`` of the next block along each axis, where there is one."""
        for axis, (i, c) in enumerate(zip(index, self.counts)):
            if i + 1 < c:
                yield axis, index[:axis] + (i + 1,) + index[axis + 1:]

    def on_volume_face(self, index: Index) -> list[tuple[int, int]]:
        """``(axis, side)`` of the block faces (side 0 low, -1 high) that lie on the volume border."""
        faces = []
        for axis, s in enumerate(self.slices(index)):
            if s.start == 0:
                faces.append((axis, 0))
            if s.stop == self.shape[axis]:
                faces.append((axis, -1))
        return faces

    def raveled(self, index: Index, local_flat: np.ndarray) -> np.ndarray:
        """Flat raster positions in the volume of flat positions inside block ``index``."""
        region = self.slices(index)
        coords = np.unravel_index(local_flat, tuple(s.stop - s.start for s in region))
        return np.ravel_multi_index(tuple(c + s.start for c, s in zip(coords, region)), self.shape)


def sub_chunks(block: tuple[int, ...], limit: int = SUB_CHUNK_VOXELS) -> tuple[int, ...]:
    """Chunks that tile ``block`` exactly, halved until about ``limit`` voxels, so that
    reading a thin halo from a neighbouring block decodes little more than the halo."""
    chunk = list(block)
    while math.prod(chunk) > limit:
        even = [a for a in range(len(chunk)) if chunk[a] % 2 == 0 and chunk[a] >= 32]
        if not even:
            break
        axis = max(even, key=lambda a: chunk[a])
        chunk[axis] //= 2
    return tuple(chunk)


def create_faces(root: str, name: str, grid: Grid) -> dict[int, Any]:
    """Face arrays of one label volume: along ``axis``, plane ``2 i`` / ``2 i + 1`` holds the
    first / last plane of the blocks with index ``i`` on that axis. Only axes with a block
    border get one."""
    arrays = {}
    for axis, count in enumerate(grid.counts):
        if count < 2:
            continue
        shape = grid.shape[:axis] + (2 * count,) + grid.shape[axis + 1:]
        chunks = grid.block[:axis] + (1,) + grid.block[axis + 1:]
        arrays[axis] = zarr.open_array(f"{root}/{name}_faces{axis}.zarr", mode="w", shape=shape,
                                       chunks=chunks, dtype=CODE, fill_value=0)
    return arrays


def _face_region(grid: Grid, index: Index, axis: int, first_plane: int, planes: int) -> Region:
    region = list(grid.slices(index))
    region[axis] = slice(first_plane, first_plane + planes)
    return tuple(region)


def write_faces(faces: dict[int, Any], grid: Grid, index: Index, labels: np.ndarray) -> None:
    for axis, array in faces.items():
        planes = np.concatenate([np.take(labels, [0], axis), np.take(labels, [-1], axis)], axis=axis)
        array[_face_region(grid, index, axis, 2 * index[axis], 2)] = planes


def read_face(array: Any, grid: Grid, index: Index, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The last plane of block ``index`` and the first plane of the next block along ``axis``."""
    planes = np.asarray(array[_face_region(grid, index, axis, 2 * index[axis] + 1, 2)])
    return np.take(planes, 0, axis), np.take(planes, 1, axis)


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with face connectivity (as :func:`instances.label_components`), int32."""
    labels, count = ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, 1), output=CODE)
    return labels, int(count)


def unique_pairs(pairs: list[np.ndarray]) -> np.ndarray:
    pairs = [p for p in pairs if len(p)]
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def components(count: int, pairs: np.ndarray) -> np.ndarray:
    """Connected component (0..k-1) of each of ``count`` nodes joined by the edges ``pairs``."""
    if count == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def first_positions(codes: np.ndarray, count: int) -> np.ndarray:
    """Flat raster position of the first pixel of each code 1..count (all present)."""
    flat = codes.ravel()
    starts = np.empty(flat.shape, bool)
    starts[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    starts &= flat > 0
    where = np.flatnonzero(starts)
    values, first = np.unique(flat[where], return_index=True)  # stable: earliest occurrence
    out = np.zeros(count, np.int64)
    out[values - 1] = where[first]
    return out


# --- the tasks ---------------------------------------------------------------------------

def seed_task(probs: Any, roles: tuple[int | None, int], config: InstanceConfig, grid: Grid,
              index: Index, seed_codes: Any, faces: dict[int, Any]) -> np.ndarray:
    """Masks and seed pieces of one block (:func:`instances.seed_pieces`).

    Writes codes: k > 0 seed piece k, -1 foreground outside the seed masks, 0 background.
    Returns the pieces' table: low component, high component (-1: none; both numbered
    0.. within the block) and pixel count.
    """
    region = grid.slices(index)
    foreground, high, low = instances.masks(np.asarray(probs[(slice(None),) + region]), config, roles)
    codes, table = instances.seed_pieces(high, low, label)
    codes[foreground & (codes == 0)] = -1
    seed_codes[region] = codes
    write_faces(faces, grid, index, codes)
    return table


def face_pairs(faces: dict[int, Any], grid: Grid, index: Index, nodes: dict[Index, np.ndarray]) -> np.ndarray:
    """Node pairs that touch across the high faces of block ``index``.

    ``nodes[b]`` maps the codes of block ``b`` (index = code + 1, so that -1 works) to a
    node number, or to -1 for no node.
    """
    pairs = []
    for axis, neighbour in grid.neighbours(index):
        if axis not in faces:
            continue
        mine, theirs = read_face(faces[axis], grid, index, axis)
        a, b = nodes[index][mine + 1], nodes[neighbour][theirs + 1]
        keep = (a >= 0) & (b >= 0)
        pairs.append(np.stack([a[keep], b[keep]], axis=1))
    return unique_pairs(pairs)


def grow_task(grid: Grid, index: Index, seed_codes: Any, cell_codes: Any, faces: dict[int, Any],
              seed_ids: dict[Index, np.ndarray], steps: int, keep_unseeded: bool) -> tuple:
    """Seeded growth of one block, read with a halo of ``steps`` pixels, and its unseeded regions.

    ``seed_ids[b]`` maps the seed codes of every block ``b`` that the halo reaches to global
    seed IDs (0: dropped). Writes codes 1..P (the P seeds present, in increasing global ID)
    and P+1..P+E (unseeded components). Returns (present seed IDs, their pixel counts, E,
    pixel counts of the unseeded components, first flat raster position of every code).
    """
    window = grid.window(index, steps)
    raw = np.asarray(seed_codes[window])
    # grow() depends on which pixels share a label, not on the values: number the seeds
    # of the window 1..k so that int32 suffices
    ids = np.unique(np.concatenate([np.zeros(1, np.int64)] + [seed_ids[b] for b, _ in grid.overlapping(window)]))
    seeds = np.zeros(raw.shape, CODE)
    for block, part in grid.overlapping(window):
        local = tuple(slice(p.start - w.start, p.stop - w.start) for p, w in zip(part, window))
        compact = np.searchsorted(ids, seed_ids[block]).astype(CODE)
        seeds[local] = compact[np.maximum(raw[local], 0)]
    foreground = raw != 0
    del raw
    grown = instances.grow(seeds, foreground, steps)
    del seeds
    core = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(grid.slices(index), window))
    grown, foreground = grown[core], foreground[core]
    counts = np.bincount(grown.ravel(), minlength=len(ids))
    present = np.flatnonzero(counts[1:]) + 1
    renumber = np.zeros(len(ids), CODE)
    renumber[present] = np.arange(1, len(present) + 1, dtype=CODE)
    codes = renumber[grown]
    extra_count = 0
    if keep_unseeded:
        extra, extra_count = label(foreground & (grown == 0))
        codes = np.where(extra > 0, extra + len(present), codes).astype(CODE, copy=False)
    cell_codes[grid.slices(index)] = codes
    write_faces(faces, grid, index, codes)
    sizes = np.bincount(codes.ravel(), minlength=len(present) + extra_count + 1)
    first = grid.raveled(index, first_positions(codes, len(present) + extra_count))
    return ids[present], counts[present], extra_count, sizes[len(present) + 1:], first


def neighbour_range(background: np.ndarray, cells: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest cell ID face-adjacent to each background code 1..count
    (max ID / 0 where none). One adjacent cell exactly when smallest == largest."""
    low = np.full(count + 1, np.iinfo(np.int64).max, np.int64)
    high = np.zeros(count + 1, np.int64)
    for axis in range(background.ndim):
        n = background.shape[axis]
        if n < 2:
            continue
        lo = tuple(slice(0, n - 1) if a == axis else slice(None) for a in range(background.ndim))
        hi = tuple(slice(1, n) if a == axis else slice(None) for a in range(background.ndim))
        for here, there in ((lo, hi), (hi, lo)):
            bg, cell = background[here], cells[there]
            keep = (bg > 0) & (cell > 0)
            bg, cell = bg[keep], cell[keep].astype(np.int64)
            np.minimum.at(low, bg, cell)
            np.maximum.at(high, bg, cell)
    return low[1:], high[1:]


def hole_task(grid: Grid, index: Index, cell_codes: Any, faces: dict[int, Any], final: np.ndarray) -> tuple:
    """Background components of one block (after the size filter).

    ``final`` maps cell codes to final IDs (0: removed). Writes background codes to the
    face arrays. Returns (background codes on the volume border, smallest and largest
    adjacent cell ID of each background code; see :func:`neighbour_range`).
    """
    cells = final[cell_codes[grid.slices(index)]]
    background, count = label(cells == 0)
    write_faces(faces, grid, index, background)
    border = [np.take(background, side, axis).ravel() for axis, side in grid.on_volume_face(index)]
    touching = np.unique(np.concatenate(border)) if border else np.zeros(0, CODE)
    return (touching[touching > 0],) + neighbour_range(background, cells, count)


def hole_face_pairs(bg_faces: dict[int, Any], cell_faces: dict[int, Any], grid: Grid, index: Index,
                    bg_nodes: dict[Index, np.ndarray], final: dict[Index, np.ndarray]) -> tuple:
    """Across the high faces of block ``index``: background-background node pairs and
    (background node, final cell ID) pairs."""
    joins, owners = [], []
    for axis, neighbour in grid.neighbours(index):
        bg_mine, bg_theirs = read_face(bg_faces[axis], grid, index, axis)
        cell_mine, cell_theirs = read_face(cell_faces[axis], grid, index, axis)
        a, b = bg_nodes[index][bg_mine + 1], bg_nodes[neighbour][bg_theirs + 1]
        ca, cb = final[index][cell_mine], final[neighbour][cell_theirs]
        keep = (a >= 0) & (b >= 0)
        joins.append(np.stack([a[keep], b[keep]], axis=1))
        for x, y in ((a, cb), (b, ca)):
            keep = (x >= 0) & (y > 0)
            owners.append(np.stack([x[keep], y[keep].astype(np.int64)], axis=1))
    return unique_pairs(joins), unique_pairs(owners)


def write_task(grid: Grid, index: Index, cell_codes: Any, out: Any, final: np.ndarray,
               fill: np.ndarray | None) -> None:
    """Final IDs of one block; background components listed in ``fill`` (by background
    code, 0: none) take the ID of the cell that encloses them."""
    region = grid.slices(index)
    cells = final[cell_codes[region]]
    if fill is not None and fill.any():
        background, _ = label(cells == 0)  # the same labelling as in hole_task
        cells = np.where(cells == 0, fill[background], cells)
    out[region] = cells
