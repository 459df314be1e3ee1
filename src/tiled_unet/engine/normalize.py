"""Intensity normalisation by the rule stored with a model, with bounded memory on huge arrays."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..config import NormalizationConfig

ReadFn = Callable[[tuple[slice, ...]], np.ndarray]  # spatial slices -> (C, *spatial)


def subsample_slices(spatial_shape: tuple[int, ...], max_samples: int) -> list[tuple[slice, ...]]:
    """Slices of a deterministic subsample of at most ~``max_samples`` elements.

    Small frames are read whole. Otherwise up to 16 planes (rows for 2D) evenly spaced
    along the first axis are read, each strided evenly along the other axes, so only
    the chunks those planes cross are touched: a 200 GB volume is sampled by reading a
    few hundred MB at most, never all of it.
    """
    total = math.prod(spatial_shape)
    if total <= max_samples:
        return [tuple(slice(None) for _ in spatial_shape)]
    first, rest = spatial_shape[0], spatial_shape[1:]
    planes = min(first, 16 if len(spatial_shape) == 3 else 64)
    per_plane = max_samples // planes
    stride = max(1, math.ceil((math.prod(rest) / per_plane) ** (1 / len(rest))))
    positions = np.unique(np.linspace(0, first - 1, planes).round().astype(int))
    return [(slice(int(p), int(p) + 1),) + tuple(slice(None, None, stride) for _ in rest)
            for p in positions]


def check_finite(values: np.ndarray, where: str) -> None:
    """NaN and inf are refused: there is no right class for a pixel of unknown intensity."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"the image contains NaN or infinite values ({where}); replace them first, "
                         f"e.g. with numpy.nan_to_num(image), or mask them out")


def intensity_range(read: ReadFn, spatial_shape: tuple[int, ...],
                    config: NormalizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(offset, scale)`` so that ``(x - offset) / scale`` is the network input."""
    if config.mode == "none":
        return np.zeros(1, np.float32), np.ones(1, np.float32)
    if config.mode == "fixed":
        return np.float32([config.offset]), np.float32([config.scale])
    samples = [read(s) for s in subsample_slices(spatial_shape, config.max_samples)]
    channels = samples[0].shape[0]
    values = np.concatenate([s.reshape(channels, -1) for s in samples], axis=1)
    check_finite(values, "found while sampling intensity statistics")
    low, high = np.percentile(values.astype(np.float64, copy=False), [config.low, config.high], axis=1)
    scale = np.where(high - low > 0, high - low, 1.0)
    return low, scale  # float64: an offset of 2**40 on int64 keeps its low bits


def apply(tile: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalise a ``(C, *spatial)`` tile to float32.

    In float32, unless the type is wider (32/64-bit integers, float64) and the offset too large
    for float32 to keep the values' low digits (2**24 or more): then in float64, so that a large
    constant offset (int64 + 2**40, float64 + 1e12) is removed before the rounding to float32.
    """
    shape = (-1,) + (1,) * (tile.ndim - 1)
    wide = tile.dtype.itemsize > (2 if tile.dtype.kind in "iub" else 4)
    work = np.float64 if wide and float(np.abs(offset).max(initial=0)) >= 2**24 else np.float32
    out = tile.astype(work, copy=True)
    out -= np.asarray(offset, work).reshape(shape)
    out /= np.asarray(scale, work).reshape(shape)
    return out.astype(np.float32, copy=False)
