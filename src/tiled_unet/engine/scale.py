"""How an image is resampled for a model: voxel size and cell size to per-axis factors."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from typing import Any, Callable

import numpy as np

from ..io.arrays import read_region
from ..io.layout import Layout
from ..model import UNet
from . import cellsize
from .resample import ResampledArray, resampled_size


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    """How an image is resampled for a model: ``factors`` image -> model grid per spatial axis
    (None: not resampled) and the cell ``diameter`` used, in the image's units (None: unknown)."""

    factors: tuple[float, ...] | None
    diameter: float | None
    estimated: bool = False


def plan_scale(source: Any, layout: Layout, net: UNet, voxel_size: Any, diameter: Any,
               cells_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> ScalePlan:
    """The resampling of ``source`` for ``net``; ``cells_of(block)``: labels and foreground of a region."""
    ndim, stored = net.config.ndim, net.model_config
    diameter = cellsize.check_diameter(diameter)
    if voxel_size is not None:
        voxel_size = tuple(float(v) for v in voxel_size)
        if len(voxel_size) != ndim or not all(math.isfinite(v) and v > 0 for v in voxel_size):
            raise ValueError(f"voxel_size must have {ndim} values ({layout.spatial_axes}), each positive and "
                             f"finite, for this {ndim}-D model, got {voxel_size}")
    if isinstance(diameter, float) and not stored.diameter:
        raise ValueError(f"model {stored.name!r} stores no cell diameter of its training data, so diameter= "
                         f"cannot rescale for it; use diameter='off' (or retrain it with this version)")
    uses_voxel = voxel_size is not None and (bool(stored.voxel_size) or stored.diameter > 0)
    base = cellsize.base_factors(voxel_size if uses_voxel else None, stored.voxel_size, ndim)
    scale, used, estimated = 1.0, None, False
    if stored.diameter > 0 and diameter != "off":
        if diameter == "auto":
            on_base = _estimate_on_base(source, layout, net, base, cells_of)
            estimated = True
            if on_base is None:
                warnings.warn(f"too few cells found to estimate their diameter; the image is used at its own "
                              f"scale: pass diameter= (pixels{', or the unit of voxel_size' if uses_voxel else ''})"
                              f" if its cells are much smaller or larger than {stored.diameter:.0f} pixels",
                              stacklevel=3)
        else:
            on_base = cellsize.diameter_on_base(diameter, voxel_size if uses_voxel else None, base)
        if on_base is not None:
            scale = cellsize.size_scale(stored.diameter, on_base, stored.diameter_range, stored.rescale_to)
            used = cellsize.diameter_in_image_units(on_base, voxel_size if uses_voxel else None, base)
    factors = tuple(b * scale for b in base)
    if all(abs(f - 1.0) <= 0.01 for f in factors):
        factors = None
    return ScalePlan(factors, used, estimated)


def _estimate_on_base(source: Any, layout: Layout, net: UNet, base: tuple[float, ...],
                      cells_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> float | None:
    """Median cell diameter on the base grid, from the model's cells on a few regions of the image."""
    ndim = net.config.ndim
    region = (256, 256) if ndim == 2 else (32, 128, 128)
    frames = list(itertools.product(*(range(n) for n in layout.lead_shape)))
    frames = frames[:1] + frames[len(frames) // 2:len(frames) // 2 + 1] if len(frames) > 1 else frames

    def read(factors: tuple[float, ...]) -> list[np.ndarray]:
        spatial = dict(zip(layout.spatial_indices, factors))
        view = ResampledArray(source, [resampled_size(n, spatial[a]) if a in spatial else n
                                       for a, n in enumerate(source.shape)])
        view_layout = Layout(layout.axes, view.shape, ndim)
        regions = []
        for frame in frames:
            for slices in cellsize.sample_regions(view_layout.spatial_shape, region, 4):
                regions.append(view_layout.to_channels_first(read_region(view, view_layout.index(frame, slices))))
        return regions

    return cellsize.estimate_from_samples(read, cells_of, net.model_config.diameter, base,
                                          net.model_config.diameter_range, net.model_config.rescale_to)
