"""Label images of touching cells: well separated clusters of cells that share long borders, for tests
of instance separation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage as ndi

from .nuclei import _check_shape
from .shapes import clean_labels, paint, random_shape


def _cell_cluster(ndim: int, k: int, radius: tuple[float, float], min_size: int,
                  rng: np.random.Generator) -> np.ndarray | None:
    """Labels ``1..k`` of one clump of cells in a tight box, or ``None`` if this draw failed."""
    shapes = [random_shape(rng, np.zeros(ndim), rng.uniform(*radius), rng.uniform(1.0, 1.5), 0.06)]
    for _ in range(20 * k):
        if len(shapes) == k:
            break
        parent = shapes[rng.integers(len(shapes))]
        r = rng.uniform(*radius)
        direction = rng.normal(size=ndim)
        direction /= np.linalg.norm(direction)
        centre = parent.centre + rng.uniform(0.5, 0.8) * (parent.radii.mean() + r) * direction
        if all(np.linalg.norm(centre - s.centre) >= 0.55 * (s.radii.mean() + r) for s in shapes):
            shapes.append(random_shape(rng, centre, r, rng.uniform(1.0, 1.5), 0.06))
    if len(shapes) < k:
        return None
    lo = np.min([s.centre - s.extent() for s in shapes], axis=0)
    hi = np.max([s.centre + s.extent() for s in shapes], axis=0)
    canvas = np.zeros(tuple(np.ceil(hi - lo).astype(int) + 1), np.uint32)
    best = np.full(canvas.shape, np.inf, np.float32)
    scale = np.ones(ndim)
    for label, s in enumerate(shapes, start=1):
        paint(canvas, best, dataclasses.replace(s, centre=s.centre - lo), label, scale)
    cells, _ = clean_labels(canvas, min_size)
    if cells.max() != k or ndi.label(cells > 0)[1] != 1:
        return None
    box = ndi.find_objects((cells > 0).astype(np.uint8))[0]
    return cells[box]


def _free_spot(labels: np.ndarray, mask: np.ndarray, gap: int, rng: np.random.Generator,
               tries: int = 40) -> np.ndarray | None:
    """A corner where ``mask`` fits inside ``labels`` at least ``gap`` pixels from any label."""
    room = np.asarray(labels.shape) - np.asarray(mask.shape)
    if np.any(room < 0):
        return None
    keepout = ndi.binary_dilation(np.pad(mask, gap), iterations=gap)
    for _ in range(tries):
        corner = np.array([rng.integers(0, r + 1) for r in room])
        lo = np.maximum(corner - gap, 0)
        hi = np.minimum(corner + np.asarray(mask.shape) + gap, labels.shape)
        region = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
        near = keepout[tuple(slice(a - c + gap, b - c + gap) for a, b, c in zip(lo, hi, corner))]
        if not np.any(region[near]):
            return corner
    return None


def touching_cells(shape: tuple[int, ...], n_clusters: int, cells_per_cluster: tuple[int, int] = (2, 6),
                   radius: tuple[float, float] = (8.0, 16.0), seed: int = 0) -> np.ndarray:
    """Labels (uint32) of ``n_clusters`` well separated clumps of touching cells, in 2D or 3D.

    Each clump is a union of 2..6 (``cells_per_cluster``, inclusive) overlapping, slightly
    irregular ellipses (ellipsoids) with radii in ``radius``, one per cell; a pixel of the
    clump belongs to the cell whose ellipse it is deepest in, so neighbours share long
    borders with no gap. Every cell is one connected component and not tiny, every clump is
    connected (so ``k`` cells have at least ``k - 1`` touching pairs), clumps lie entirely
    inside the image and at least 3 pixels apart: the connected components of ``labels > 0``
    are the clumps. IDs are ``1..N``, clump by clump. Raises ``ValueError`` when the
    clumps do not fit in ``shape``.
    """
    grid = _check_shape(shape)
    ndim = len(grid)
    if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 0:
        raise ValueError(f"n_clusters: expected an integer >= 0, got {n_clusters!r}")
    lo_k, hi_k = cells_per_cluster
    if not (isinstance(lo_k, (int, np.integer)) and isinstance(hi_k, (int, np.integer)) and 1 <= lo_k <= hi_k):
        raise ValueError(f"cells_per_cluster: expected integers 1 <= low <= high, got {cells_per_cluster!r}")
    if not 2.0 <= radius[0] <= radius[1]:
        raise ValueError(f"radius: expected 2 <= low <= high, got {radius!r}")
    rng = np.random.default_rng(seed)
    min_size = max(10, int(0.2 * (math.pi * radius[0] ** 2 if ndim == 2 else 4 / 3 * math.pi * radius[0] ** 3)))
    labels = np.zeros(grid, np.uint32)
    gap, next_id = 3, 0
    for index in range(int(n_clusters)):
        k = int(rng.integers(lo_k, hi_k + 1))
        for _ in range(30):  # a new cluster when one does not fit where there is room left
            cells = _cell_cluster(ndim, k, (float(radius[0]), float(radius[1])), min_size, rng)
            corner = None if cells is None else _free_spot(labels, cells > 0, gap, rng)
            if corner is not None:
                break
        else:
            raise ValueError(f"touching_cells: {n_clusters} clusters of radius {radius} do not fit in shape "
                             f"{grid} (placed {index}); expected a larger shape or fewer clusters")
        target = labels[tuple(slice(c, c + n) for c, n in zip(corner, cells.shape))]
        target[cells > 0] = cells[cells > 0] + next_id
        next_id += k
    return labels
