"""Empty margins: a constant fill value where an image holds no data is shown to the model as background.

Stitched, registered and padded images often surround the data with a constant (usually 0)
far below the camera's own dark level. Left as it is, that value drags the low intensity
percentile down to it (everything else then looks bright: the whole image becomes
foreground) and, even when the statistics are right, the sharp step from the flat dark
margin makes the model mark a band of foreground along it. A fill value is recognised in a
subsample of the image as its minimum when that value covers at least 1 % of the samples and
lies apart from all other values (by at least :data:`GAP` of their intensity spread, which a
dark background clipped at zero, with its tail of values next to zero, does not). Its pixels
are then read as the image's background level: the most common intensity of the other
samples. The replacement is pointwise, so tiles still equal whole-image inference.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..config import NormalizationConfig
from ..io.arrays import read_region
from ..io.layout import Layout
from .normalize import subsample_slices

#: least share of the samples the fill value covers
MIN_SHARE = 0.01
#: least distance of the other values from the fill value, as a fraction of their spread
GAP = 0.05
#: bins of the histogram whose fullest bin is the background level
BINS = 256


def find_fill(samples: np.ndarray, config: NormalizationConfig) -> tuple[float, float] | None:
    """``(fill value, background level)`` of one channel's intensity samples, or None."""
    values = np.asarray(samples).ravel()
    if values.size == 0 or values.dtype.kind not in "iuf":
        return None
    fill = values.min()
    is_fill = values == fill
    rest = values[~is_fill].astype(np.float64)
    if is_fill.mean() < MIN_SHARE or rest.size < 1000:
        return None
    low, high = np.percentile(rest, [config.low, config.high])
    spread = high - low
    if not spread > 0 or rest.min() - float(fill) < GAP * spread:
        return None
    counts, edges = np.histogram(rest, bins=BINS, range=(low, high))
    peak = int(counts.argmax())
    return float(fill), float((edges[peak] + edges[peak + 1]) / 2)


class FilledArray:
    """``source`` with its ``fill`` values read as ``background`` (same shape and dtype);
    ``fill=None``: ``source`` as it is, checked for a fill value and found without one."""

    def __init__(self, source: Any, fill: float | None, background: float | None):
        self.source, self.fill = source, fill
        self.shape, self.dtype, self.ndim = tuple(source.shape), np.dtype(source.dtype), len(source.shape)
        self.background = (np.round(background) if background is not None and self.dtype.kind in "iu"
                           else background)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, index: Any) -> np.ndarray:
        block = read_region(self.source, index)
        if self.fill is None:
            return block
        return np.where(block == self.fill, np.asarray(self.background, self.dtype), block)


def without_fill(source: Any, layout: Layout, config: NormalizationConfig) -> Any:
    """``source``, or a :class:`FilledArray` of it when its single channel has a fill value.

    Sampled as the normalisation samples a frame, in the first, middle and last frame (a
    registered time series pads each frame differently); multi-channel images are left as
    they are."""
    if isinstance(source, FilledArray) or config.mode != "percentile" or layout.channels != 1:
        return source
    frames = list(itertools.product(*(range(n) for n in layout.lead_shape)))
    picked = sorted({0, len(frames) // 2, len(frames) - 1})
    per_frame = max(1000, config.max_samples // len(picked))
    samples = [read_region(source, layout.index(frames[f], s)).ravel()
               for f in picked for s in subsample_slices(layout.spatial_shape, per_frame)]
    found = find_fill(np.concatenate(samples), config)
    return source if found is None else FilledArray(source, *found)
