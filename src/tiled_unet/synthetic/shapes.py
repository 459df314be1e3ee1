"""Geometry of synthetic nuclei and cells: random star-shaped ellipsoids painted box by box.

A shape is an ellipsoid in physical coordinates with a smooth random perturbation of its
boundary (a few plane waves on the unit sphere of directions) and an optional bend (kidney
shapes). Its *level* ``f`` is < 1 inside and grows with distance from the centre; where
shapes overlap, a pixel belongs to the one with the smallest level, so overlapping shapes
share a border with no gap between them. Used by :mod:`tiled_unet.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Shape:
    """One star-shaped ellipsoid; lengths are physical (pixels along the last axis)."""

    centre: np.ndarray  # (ndim,) in index coordinates
    rotation: np.ndarray  # (ndim, ndim) orthogonal; column j is the direction of radius j
    radii: np.ndarray  # (ndim,)
    bend: float = 0.0
    waves: np.ndarray | None = None  # (m, ndim) wave vectors on the sphere of directions
    amplitudes: np.ndarray | None = None  # (m,)
    phases: np.ndarray | None = None  # (m,)

    def extent(self) -> float:
        """An upper bound of the distance from the centre to the boundary."""
        wobble = float(np.abs(self.amplitudes).sum()) if self.amplitudes is not None else 0.0
        return float(self.radii.max()) * (1.0 + wobble) * (1.0 + 2.0 * abs(self.bend)) + 1.0


def random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation matrix (2D: random angle, 3D: random unit quaternion)."""
    if ndim == 2:
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s], [s, c]])
    w, x, y, z = _unit(rng, 4)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=n)
    return v / max(float(np.sqrt(v @ v)), 1e-12)


def random_shape(rng: np.random.Generator, centre: np.ndarray, radius: float, aspect: float,
                 irregularity: float, bend: float = 0.0) -> Shape:
    """A shape of mean radius ``radius``, axis ratio ``aspect`` (>= 1) and boundary wobble.

    ``irregularity`` is the total relative amplitude of the boundary perturbation,
    spread over three smooth waves of angular frequency about 1.5 to 4. ``bend`` curves
    the long axis (kidney/bean shapes).
    """
    ndim = len(centre)
    u = rng.random(8)
    radii = [aspect**-0.5, aspect**0.5]  # the rotation is random: only the bend needs this order
    if ndim == 3:
        radii.append(aspect ** (u[2] - 0.5))
    waves = amplitudes = phases = None
    if irregularity > 0:
        directions = rng.normal(size=(3, ndim))
        waves = directions * ((1.5 + 2.5 * u[3:6]) / np.sqrt((directions**2).sum(1)))[:, None]
        weights = -np.log(rng.random(3) + 1e-12)
        amplitudes = irregularity * weights / weights.sum()
        phases = 2 * np.pi * rng.random(3)
    return Shape(np.asarray(centre, float), random_rotation(rng, ndim), radius * np.array(radii), bend,
                 waves, amplitudes, phases)


def shape_box(shape: Shape, grid: tuple[int, ...], scale: np.ndarray) -> tuple[slice, ...] | None:
    """Index bounding box of ``shape`` clipped to ``grid`` (``None`` if outside)."""
    extent = shape.extent()
    box = []
    for c, s, n in zip(shape.centre.tolist(), scale.tolist(), grid):
        lo, hi = max(math.floor(c - extent / s), 0), min(math.ceil(c + extent / s) + 1, n)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)


def level(shape: Shape, box: tuple[slice, ...], scale: np.ndarray) -> np.ndarray:
    """The level ``f`` of ``shape`` over the pixels of ``box`` (float32, < 1 inside)."""
    ndim = len(box)
    size = tuple(sl.stop - sl.start for sl in box)
    start = np.array([sl.start for sl in box], float)
    d = np.indices(size, np.float32).reshape(ndim, -1)
    # local coordinates in radii: (R^T (x - c) * scale) / radii, as one affine map
    matrix = (shape.rotation.T * scale[None, :] / shape.radii[:, None]).astype(np.float32)
    local = matrix @ d + (matrix @ (start - shape.centre)).astype(np.float32)[:, None]
    if shape.bend:
        local[0] += np.float32(shape.bend) * (local[1] * local[1] - np.float32(0.3))
    r = np.sqrt(np.einsum("ij,ij->j", local, local))
    if shape.waves is not None:
        proj = (shape.waves.astype(np.float32) @ local) / np.maximum(r, np.float32(1e-6))
        proj += shape.phases.astype(np.float32)[:, None]
        r /= 1.0 + shape.amplitudes.astype(np.float32) @ np.cos(proj)
    return r.reshape(size)


def paint(labels: np.ndarray, best: np.ndarray, shape: Shape, label: int, scale: np.ndarray,
          max_overlap: float = 1.0, friends: np.ndarray | None = None, min_pixels: int = 1) -> bool:
    """Paint ``shape`` as ``label`` where its level is below 1 and below ``best``.

    Refused (nothing painted, ``False``) when fewer than ``min_pixels`` pixels are inside,
    or when more than ``max_overlap`` of them already belong to labels not in ``friends``.
    """
    box = shape_box(shape, labels.shape, scale)
    if box is None:
        return False
    f = level(shape, box, scale)
    inside = f < 1.0
    n = int(np.count_nonzero(inside))
    if n < min_pixels:
        return False
    sub = labels[box]
    taken = sub[inside]
    taken = taken[taken > 0]
    if max_overlap < 1.0 and taken.size:
        if friends is not None:
            taken = taken[~np.isin(taken, friends)]
        if taken.size > max_overlap * n:
            return False
    sub_best = best[box]
    win = inside & (f < sub_best)
    sub[win] = label
    sub_best[win] = f[win]
    return True


def _neighbour(labels: np.ndarray, fragment: np.ndarray, own: int) -> int:
    """The label most often found next to ``fragment`` (0 if none but ``own``)."""
    ring = ndi.binary_dilation(fragment) & ~fragment
    values = labels[ring]
    values = values[(values > 0) & (values != own)]
    if values.size == 0:
        return 0
    ids, counts = np.unique(values, return_counts=True)
    return int(ids[np.argmax(counts)])


def clean_labels(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One connected component per label, none below ``min_size`` pixels, IDs ``1..N``.

    Stray pieces of a label go to the neighbour they touch most (or to the background).
    Returns the new labels (uint32) and, for each new ID ``i``, the old ID at ``[i - 1]``.
    """
    labels = labels.copy()
    boxes = ndi.find_objects(labels)
    todo: list[int] | range = range(1, len(boxes) + 1)
    for rounds in range(2):
        received: set[int] = set()
        for old in todo:
            box = boxes[old - 1] if old <= len(boxes) else None
            if box is None:
                continue
            pad = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            sub = labels[pad]
            comp, n = ndi.label(sub == old)
            if n <= 1:
                continue
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            keep = int(np.argmax(sizes))
            for piece in range(1, n + 1):
                if piece != keep:
                    fragment = comp == piece
                    to = _neighbour(sub, fragment, old) if rounds == 0 else 0
                    sub[fragment] = to
                    if to:
                        received.add(to)
        if not received:
            break
        boxes = ndi.find_objects(labels)
        todo = sorted(received)
    sizes = np.bincount(labels.ravel())
    kept = np.flatnonzero(sizes >= min_size)
    kept = kept[kept > 0]
    lut = np.zeros(sizes.size, np.uint32)
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.uint32)
    return lut[labels], kept
