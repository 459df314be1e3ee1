"""Instance labels from class probabilities: seeds, seeded growth, clean-up.

The steps, each defined so that it is either pointwise, local (depends on a
neighbourhood of known radius) or a connected-component labelling; this is what lets
:mod:`tiled_unet.blockwise` reproduce the in-memory result exactly, block by block.

1. foreground = ``1 - p(background) >= foreground_threshold`` (pointwise)
2. seeds = connected components (face connectivity) of ``p(interior) >= seed_threshold``
   inside the foreground; seeds smaller than ``min_seed_size`` pixels are dropped. With
   ``seed_low_threshold``: seeds are the components of the low mask ``p(interior) >=
   seed_low_threshold`` (the *low* components), except that a low component holding two
   or more components of the high mask (``>= seed_threshold``) of at least
   ``max(min_seed_size, min_size)`` pixels is seeded by those instead (its other pixels
   are grown into). Both labellings are connected components, the choice a table over
   them (:func:`seed_ids`), so it has a blockwise form
3. seeded growth: seeds grow through the foreground one pixel layer per step, for at
   most ``max_growth`` steps; a pixel reached by several seeds in the same step takes
   the first of its labelled neighbours in the fixed order -axis0, +axis0, -axis1, ...
   (a watershed on the geodesic distance to the seeds; local with radius ``max_growth``)
4. unseeded foreground (regions no seed reached) becomes cells of its own, if
   ``keep_unseeded`` (connected components)
5. cells smaller than ``min_size`` pixels are removed
6. holes: background components that touch no image border and border exactly one
   cell are filled with that cell (if ``fill_holes``)
7. IDs are made consecutive 1..N in order of first appearance (raster order)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..config import InstanceConfig


def class_roles(class_names: Sequence[str], num_classes: int) -> tuple[int | None, int]:
    """Indices of the background class (None for a single sigmoid output) and the seed class.

    Three-class models (background, interior, boundary) seed from ``interior``; two-class
    (background, foreground) and single-output models seed from the foreground itself.
    """
    names = [n.lower() for n in class_names]
    if num_classes == 1:
        return None, 0
    background = names.index("background") if "background" in names else 0
    if "interior" in names:
        return background, names.index("interior")
    return background, 1 if background == 0 else 0


def masks(probs: np.ndarray, config: InstanceConfig,
          roles: tuple[int | None, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise foreground, high and low seed masks from probabilities ``(classes, *spatial)``
    (the low mask is the high one when ``seed_low_threshold`` is off)."""
    background, seed_class = roles
    probs = np.asarray(probs, dtype=np.float32)
    if background is None:
        foreground = probs[0] >= config.foreground_threshold
    else:
        foreground = (1.0 - probs[background]) >= config.foreground_threshold
    seeds = foreground & (probs[seed_class] >= config.seed_threshold)
    if not config.seed_low_threshold:
        return foreground, seeds, seeds
    return foreground, seeds, foreground & (probs[seed_class] >= config.seed_low_threshold)


def seed_pieces(high: np.ndarray, low: np.ndarray, label=None) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of the seed masks (``high`` inside ``low``) and their table.

    Returns codes (0: outside ``low``; 1..n_high: the high components; then one code per
    low component for its pixels outside ``high``, possibly empty) and a table
    ``(pieces, 3)``: low component (0-based), high component (0-based, -1: none), pixels.
    ``label``: the connected-component labelling to use (default :func:`label_components`).
    """
    label = label or label_components
    high_codes, n_high = label(high)
    if low is high:
        size = np.bincount(high_codes.ravel(), minlength=n_high + 1)[1:]
        index = np.arange(n_high, dtype=np.int64)
        return high_codes, np.stack([index, index, size], axis=1)
    low_codes, n_low = label(low)
    low_of_high = np.zeros(n_high + 1, np.int64)
    low_of_high[high_codes.ravel()] = low_codes.ravel()  # every high component lies in one low one
    codes = np.where(high_codes > 0, high_codes,
                     np.where(low_codes > 0, low_codes + n_high, 0)).astype(high_codes.dtype)
    size = np.bincount(codes.ravel(), minlength=n_high + n_low + 1)[1:]
    table = np.stack([np.concatenate([low_of_high[1:] - 1, np.arange(n_low)]),
                      np.concatenate([np.arange(n_high), np.full(n_low, -1)]), size], axis=1)
    return codes, table.astype(np.int64)


def seed_ids(low: np.ndarray, high: np.ndarray, size: np.ndarray, n_low: int, n_high: int,
             config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Seed ID (1..S, 0: none) of every piece, given its low and high component (-1: none)
    and pixel count; the pieces of one component may come from several blocks."""
    low_size = np.bincount(low, weights=size, minlength=n_low)
    in_high = high >= 0
    high_size = np.bincount(high[in_high], weights=size[in_high], minlength=n_high)
    low_of_high = np.zeros(n_high, np.int64)
    low_of_high[high[in_high]] = low[in_high]
    big = high_size >= max(config.min_seed_size, config.min_size, 1)
    split = np.bincount(low_of_high[big], minlength=n_low) >= 2
    whole = ~split & (low_size >= max(config.min_seed_size, 1))
    parts = big & split[low_of_high]
    id_of_low = np.where(whole, np.cumsum(whole), 0)
    id_of_high = np.where(parts, int(whole.sum()) + np.cumsum(parts), 0)
    id_of_high = np.concatenate([id_of_high, [0]])  # high -1 (none) reads the 0 at the end
    ids = np.where(split[low], id_of_high[high], id_of_low[low])
    return ids.astype(np.int64), int(whole.sum() + parts.sum())


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with face connectivity, numbered in raster order (int64)."""
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    labels, count = ndi.label(mask, structure=structure, output=np.int64)
    return labels, int(count)


def object_sizes(labels: np.ndarray, count: int | None = None) -> np.ndarray:
    """Pixel count of every ID 0..max (index = ID)."""
    return np.bincount(labels.ravel(), minlength=(count or 0) + 1)


def grow(labels: np.ndarray, region: np.ndarray, steps: int) -> np.ndarray:
    """Grow labelled pixels into ``region`` one face-neighbour layer per step.

    Local: the result at a pixel depends only on pixels within ``steps`` (city-block).
    Works on the list of pixels still to be reached, so a step costs what is left to grow.
    """
    labels = np.ascontiguousarray(labels).copy()
    flat = labels.reshape(-1)
    todo = np.flatnonzero(region & (labels == 0))
    if steps <= 0 or todo.size == 0:
        return labels
    coords = np.unravel_index(todo, labels.shape)
    strides = np.cumprod((1,) + labels.shape[:0:-1])[::-1]
    # neighbour p - shift * e_axis of each pixel, in the fixed order; the pixel itself (still 0)
    # where that lies outside
    sources = np.stack([np.where((coords[axis] - shift >= 0) & (coords[axis] - shift < labels.shape[axis]),
                                 todo - shift * int(strides[axis]), todo)
                        for axis in range(labels.ndim) for shift in (1, -1)])
    for _ in range(steps):
        values = flat[sources]  # the labels before this step, all neighbours read first
        reached = np.zeros(todo.size, labels.dtype)
        for row in values:
            take = (reached == 0) & (row > 0)
            reached[take] = row[take]
        hit = reached > 0
        if not hit.any():
            break
        flat[todo[hit]] = reached[hit]
        todo, sources = todo[~hit], sources[:, ~hit]
        if todo.size == 0:
            break
    return labels


def _shift_views(shape: tuple[int, ...], axis: int, shift: int) -> tuple[tuple, tuple] | None:
    """Index tuples ``(dst, src)`` with ``dst`` pixel ``p`` paired with ``src`` pixel
    ``p - shift * e_axis``; None when nothing pairs up."""
    n = shape[axis]
    if abs(shift) >= n:
        return None
    src = [slice(None)] * len(shape)
    dst = [slice(None)] * len(shape)
    if shift > 0:
        src[axis], dst[axis] = slice(0, n - shift), slice(shift, n)
    else:
        src[axis], dst[axis] = slice(-shift, n), slice(0, n + shift)
    return tuple(dst), tuple(src)


def border_touching(labels: np.ndarray) -> np.ndarray:
    """IDs present on any face of the array."""
    faces = []
    for axis in range(labels.ndim):
        faces.append(np.take(labels, [0, labels.shape[axis] - 1], axis=axis).ravel())
    return np.unique(np.concatenate(faces)) if faces else np.zeros(0, labels.dtype)


def adjacent_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Unique ``(a, b)`` pairs of face neighbours with ``a = first[p]``, ``b = second[q]``,
    both non-zero (``first`` and ``second`` are arrays on the same grid), sorted."""
    base = int(second.max(initial=0)) + 1
    packed = int(first.max(initial=0)) < np.iinfo(np.int64).max // base  # a * base + b fits in int64
    pairs = []
    for axis in range(first.ndim):
        for shift in (1, -1):
            views = _shift_views(first.shape, axis, shift)
            if views is None:
                continue
            a, b = first[views[0]], second[views[1]]
            keep = (a > 0) & (b > 0)
            if not keep.any():
                continue
            a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
            pairs.append(np.unique(a * base + b) if packed else np.unique(np.stack([a, b], axis=1), axis=0))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    if packed:
        keys = np.unique(np.concatenate(pairs))
        return np.stack([keys // base, keys % base], axis=1)
    return np.unique(np.concatenate(pairs), axis=0)


def enclosed_holes(background_labels: np.ndarray, cells: np.ndarray) -> dict[int, int]:
    """Background components bordering exactly one cell and no image face -> that cell."""
    pairs = adjacent_pairs(background_labels, cells)
    on_border = set(border_touching(background_labels).tolist())
    owners: dict[int, set[int]] = {}
    for hole, cell in pairs.tolist():
        owners.setdefault(hole, set()).add(cell)
    return {hole: next(iter(cells_)) for hole, cells_ in owners.items()
            if len(cells_) == 1 and hole not in on_border}


def consecutive(labels: np.ndarray) -> np.ndarray:
    """IDs renumbered 1..N in order of first appearance in raster order; uint32 (uint64 if needed)."""
    flat = labels.ravel()
    top = int(labels.max(initial=0))
    sparse = top > 4 * flat.size + 1024
    if sparse:  # large IDs: sort the pixels
        ids, first, index = np.unique(flat, return_index=True, return_inverse=True)
    else:  # the first position of each ID without sorting the pixels
        first_at = np.full(top + 1, flat.size, np.int64)
        np.minimum.at(first_at, flat, np.arange(flat.size, dtype=np.int64))
        ids = np.flatnonzero(first_at < flat.size)
        first, index = first_at[ids], labels
    nonzero = ids > 0
    order = np.flatnonzero(nonzero)[np.argsort(first[nonzero], kind="stable")]  # positions in ids
    dtype = np.uint32 if len(order) < 2**32 - 1 else np.uint64
    new_id = np.zeros(len(ids), dtype)
    new_id[order] = np.arange(1, len(order) + 1, dtype=dtype)
    if sparse:
        return new_id[index].reshape(labels.shape)
    mapping = np.zeros(top + 1, dtype)
    mapping[ids] = new_id
    return mapping[labels]


def instances_from_probabilities(probs: np.ndarray, config: InstanceConfig | None = None,
                                 class_names: Sequence[str] = ("background", "interior", "boundary"),
                                 ) -> np.ndarray:
    """Instance labels (uint32, 0 = background) from probabilities ``(classes, *spatial)``."""
    config = config or InstanceConfig()
    probs = np.asarray(probs)
    if probs.ndim < 2:
        raise ValueError(f"probabilities must have axes (classes, *spatial), got shape {probs.shape}")
    roles = class_roles(class_names, probs.shape[0])
    foreground, high, low = masks(probs, config, roles)
    codes, table = seed_pieces(high, low)
    n_low, n_high = int(table[:, 0].max(initial=-1)) + 1, int(table[:, 1].max(initial=-1)) + 1
    ids, _ = seed_ids(table[:, 0], table[:, 1], table[:, 2], n_low, n_high, config)
    seeds = np.concatenate([[0], ids])[codes]
    del codes
    cells = grow(seeds, foreground, config.max_growth)
    if config.keep_unseeded:
        extra, n_extra = label_components(foreground & (cells == 0))
        offset = int(cells.max(initial=0))
        cells = np.where(extra > 0, extra + offset, cells)
    if config.min_size > 1:
        sizes = object_sizes(cells)
        small = sizes < config.min_size
        small[0] = False
        cells[small[cells]] = 0
    if config.fill_holes:
        background, _ = label_components(cells == 0)
        holes = enclosed_holes(background, cells)
        if holes:
            fill = np.zeros(int(background.max()) + 1, cells.dtype)
            for hole, cell in holes.items():
                fill[hole] = cell
            cells = np.where(cells == 0, fill[background], cells)
    return consecutive(cells)
