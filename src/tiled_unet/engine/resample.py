"""Lazy resampling of arrays to another voxel size (for models trained at another resolution).

:class:`ResampledArray` is a read-only view of an array on a grid of another size along
some axes; a slice of it reads only the source region it needs and interpolates
linearly, axis by axis. Pixel centres are aligned: output pixel ``j`` of an axis
resized from ``n`` to ``m`` pixels samples the source at ``(j + 0.5) * n / m - 0.5``,
clamped to the first and last pixel. Each output value depends only on its own
coordinate, so a tiled read equals a whole read.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..io.arrays import read_region


def resampled_size(n: int, factor: float) -> int:
    """Pixels along an axis of ``n`` pixels scaled by ``factor`` (at least 1)."""
    return max(1, int(round(n * factor)))


def scale_factors(image_voxel_size: Sequence[float], model_voxel_size: Sequence[float],
                  tolerance: float = 0.01) -> tuple[float, ...] | None:
    """Per-axis factors image -> model grid, or None when the sizes agree within ``tolerance``."""
    if len(image_voxel_size) != len(model_voxel_size):
        raise ValueError(f"voxel_size has {len(image_voxel_size)} values, the model's has "
                         f"{len(model_voxel_size)} ({tuple(model_voxel_size)})")
    if any(float(v) <= 0 for v in image_voxel_size):
        raise ValueError(f"voxel sizes must be positive, got {tuple(image_voxel_size)}")
    factors = tuple(float(i) / float(m) for i, m in zip(image_voxel_size, model_voxel_size))
    if all(abs(f - 1.0) <= tolerance for f in factors):
        return None
    return factors


class ResampledArray:
    """``source`` seen on a grid of ``shape`` (same number of axes; equal sizes pass through)."""

    def __init__(self, source: Any, shape: Sequence[int]):
        if len(shape) != len(source.shape):
            raise ValueError(f"target shape {tuple(shape)} must have {len(source.shape)} axes")
        self.source = source
        self.shape = tuple(int(s) for s in shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out.astype(dtype) if dtype is not None else out

    def _coords(self, axis: int, index: Any) -> tuple[np.ndarray, bool]:
        n, m = self.source.shape[axis], self.shape[axis]
        positions = np.arange(m)[index]
        scalar = np.ndim(positions) == 0
        positions = np.atleast_1d(positions)
        if n == m:
            return positions.astype(np.float64), scalar
        coords = (positions + 0.5) * (n / m) - 0.5
        return np.clip(coords, 0, n - 1), scalar

    def __getitem__(self, index: Any) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (self.ndim - len(index) + 1) + index[at + 1:]
        index = index + (slice(None),) * (self.ndim - len(index))
        coords, scalars = zip(*(self._coords(a, i) for a, i in enumerate(index)))
        lows = [int(math.floor(c.min())) if len(c) else 0 for c in coords]
        highs = [min(int(math.ceil(c.max())) + 1, n) if len(c) else 0
                 for c, n in zip(coords, self.source.shape)]
        block = read_region(self.source, tuple(slice(lo, hi) for lo, hi in zip(lows, highs)), np.float32)
        for axis, (c, lo) in enumerate(zip(coords, lows)):
            local = c - lo
            left = np.floor(local).astype(np.int64)
            weight = (local - left).astype(np.float32)
            right = np.minimum(left + 1, block.shape[axis] - 1)
            shape = [1] * block.ndim
            shape[axis] = len(c)
            weight = weight.reshape(shape)
            block = np.take(block, left, axis=axis) * (1 - weight) + np.take(block, right, axis=axis) * weight
        squeeze = tuple(a for a, s in enumerate(scalars) if s)
        return block.squeeze(axis=squeeze) if squeeze else block


def nearest_indices(n: int, m: int) -> np.ndarray:
    """Source pixel of each of ``m`` output pixels resized from ``n`` (nearest, centres aligned)."""
    return np.minimum(((np.arange(m) + 0.5) * (n / m)).astype(np.int64), n - 1)


def resize_labels(labels: Any, shape: Sequence[int], region: tuple[slice, ...] | None = None) -> np.ndarray:
    """Labels (or any array) on a grid of ``shape`` by nearest neighbour; only ``region`` of it if given.

    Pointwise, so a region equals the same part of the whole result; reads only the source
    block that the region needs.
    """
    region = region or tuple(slice(0, m) for m in shape)
    picks = [nearest_indices(n, m)[r] for n, m, r in zip(labels.shape, shape, region)]
    box = tuple(slice(int(p.min()), int(p.max()) + 1) if len(p) else slice(0, 0) for p in picks)
    block = np.asarray(labels[box])
    return block[np.ix_(*[p - b.start for p, b in zip(picks, box)])]
