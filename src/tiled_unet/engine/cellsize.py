"""Cell size: measuring it, estimating it in an image, and the grid a model should see it on.

The *diameter* of a cell is twice its largest inscribed radius (for round cells their diameter,
for elongated ones their width): the largest distance, inside the cell, to the background. It
is measured in pixels along the image's in-plane axes (Y, X), plane by plane in 3D. A model file stores the
median diameter of its training cells and their 10th-90th percentile range (``ModelConfig.diameter``,
``ModelConfig.diameter_range``, pixels on the model's grid).

When an image's cells lie outside that range, the engine resamples the image so that they come
to its nearest end, or to the median (``ModelConfig.rescale_to``; :func:`size_scale`), and brings
the result back to the image's grid. Without a given diameter it is estimated
(:func:`estimate_from_samples`): the model is run on a few regions of the image, at its scale and
shrunk by halves, and the median diameter of the cells it finds that holds across a halving is
taken (texture inside large nuclei does not hold; the model is most reliable near its own size).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

#: relative differences of cell size below this are not worth a resampling
SIZE_TOLERANCE = 0.1
#: an estimate asking for a rescale beyond this (or its inverse) is measured again on the rescaled image
REFINE_BEYOND = 1.5
#: fewer cells than this give no estimate
MIN_CELLS = 5
#: two sizes measured a halving apart that agree this closely (ratio) confirm a cell size
STABLE_WITHIN = 1.3
#: the image is shrunk at most this much to find a size that holds (16: cells up to ~16x the model's)
MAX_SHRINK = 16


def cell_diameters(cells: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
    """Diameter of every cell of ``cells`` (labels): twice the largest distance inside it to the background.

    ``foreground`` (default ``cells > 0``) is what counts as inside. Distances are in-plane (along
    Y and X, plane by plane in 3D), in pixels, so neither the voxel size along Z nor a cell cut by
    the first or last plane changes the result.
    """
    cells = np.asarray(cells)
    mask = cells > 0 if foreground is None else np.asarray(foreground, bool)
    ids = np.unique(cells[cells > 0])
    if ids.size == 0:
        return np.zeros(0)
    if mask.ndim == 2:
        distance = ndi.distance_transform_edt(mask)
    else:
        distance = np.stack([ndi.distance_transform_edt(plane) for plane in mask.reshape(-1, *mask.shape[-2:])])
        distance = distance.reshape(mask.shape)
    return 2.0 * np.asarray(ndi.maximum(distance, cells, index=ids), float)


def training_diameter(labels: Sequence[Any]) -> tuple[float, tuple[float, ...]]:
    """Median, and 10th and 90th percentile, of the diameters of all cells of the label images.

    ``(0.0, ())`` when there is no cell.
    """
    sizes = [cell_diameters(np.asarray(l)) for l in labels]
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    if not sizes.size:
        return 0.0, ()
    low, median, high = np.percentile(sizes, (10, 50, 90))
    return float(median), (float(low), float(high))


def relative_voxel(model_voxel: Sequence[float], ndim: int) -> tuple[float, ...]:
    """The model's voxel size relative to its in-plane pixel (isotropic when it stores none)."""
    if not model_voxel:
        return (1.0,) * ndim
    return tuple(float(v) / float(model_voxel[-1]) for v in model_voxel)


def base_factors(voxel_size: Sequence[float] | None, model_voxel: Sequence[float], ndim: int
                 ) -> tuple[float, ...]:
    """Per-axis factors image -> a grid with the model's voxel *shape*, before any cell-size rescale.

    With a model voxel size the image goes to it (the model's physical grid); without one the image
    is made isotropic at its in-plane pixel size. No voxel size: the image as it is.
    """
    if voxel_size is None:
        return (1.0,) * ndim
    if model_voxel:
        return tuple(float(v) / float(m) for v, m in zip(voxel_size, model_voxel))
    return tuple(float(v) / float(voxel_size[-1]) for v in voxel_size)


def diameter_on_base(diameter: float, voxel_size: Sequence[float] | None, base: Sequence[float]) -> float:
    """A diameter in the image's units (``voxel_size`` units, or pixels) in base-grid pixels."""
    if voxel_size is None:
        return float(diameter) * base[-1]
    return float(diameter) * base[-1] / float(voxel_size[-1])


def diameter_in_image_units(on_base: float, voxel_size: Sequence[float] | None, base: Sequence[float]) -> float:
    """Inverse of :func:`diameter_on_base`."""
    if voxel_size is None:
        return on_base / base[-1]
    return on_base * float(voxel_size[-1]) / base[-1]


def size_scale(model_diameter: float, on_base: float, model_range: Sequence[float] = (),
               rescale_to: str = "range") -> float:
    """Isotropic factor that brings cells of ``on_base`` pixels to the model's size.

    With a training range ``(low, high)`` (most models learn a range of sizes), cells inside it
    are left alone and others are brought to its nearest end, or to ``model_diameter`` with
    ``rescale_to="median"``; without a range, to ``model_diameter``.
    Within ``SIZE_TOLERANCE`` of 1 the factor is 1.
    """
    if model_range:
        low, high = model_range
        target = min(max(float(on_base), low), high)
        if rescale_to == "median" and target != float(on_base):
            target = float(model_diameter)
    else:
        target = float(model_diameter)
    scale = target / float(on_base)
    return 1.0 if abs(scale - 1.0) <= SIZE_TOLERANCE else scale


def check_diameter(diameter: Any) -> Any:
    """``"auto"``, ``"off"`` or a positive finite number, else a ValueError saying so."""
    if isinstance(diameter, str):
        if diameter.lower() in ("auto", "off"):
            return diameter.lower()
        try:
            diameter = float(diameter)
        except ValueError:
            raise ValueError(f"diameter must be 'auto', 'off' or a number of pixels (micrometres with a "
                             f"voxel size), got {diameter!r}") from None
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float)) or not math.isfinite(diameter) \
            or diameter <= 0:
        raise ValueError(f"diameter must be 'auto', 'off' or a positive number of pixels (micrometres with a "
                         f"voxel size), got {diameter!r}")
    return float(diameter)


def sample_regions(shape: Sequence[int], region: Sequence[int], count: int) -> list[tuple[slice, ...]]:
    """Up to ``count`` regions of at most ``region`` evenly spread over an array of ``shape``."""
    size = [min(int(r), int(n)) for r, n in zip(region, shape)]
    per_axis = [1 if s >= n else 2 for s, n in zip(size, shape)]
    starts = []
    for n, s, k in zip(shape, size, per_axis):
        starts.append([0] if k == 1 else [(n - s) // 4, n - s - (n - s) // 4])
    regions = [tuple(slice(a, a + s) for a, s in zip(corner, size))
               for corner in np.array(np.meshgrid(*starts, indexing="ij")).reshape(len(shape), -1).T]
    return regions[:count]


def estimate_from_samples(read: Callable[[tuple[float, ...]], list[np.ndarray]],
                          cells_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                          model_diameter: float, base: tuple[float, ...],
                          model_range: Sequence[float] = (), rescale_to: str = "range") -> float | None:
    """Median cell diameter on the base grid, or None when fewer than ``MIN_CELLS`` cells are found.

    ``read(factors)`` returns sample regions of the image resampled by ``factors``;
    ``cells_of(region)`` returns ``(cells, foreground)`` predicted by the model.
    Cells keep their size when the image is shrunk, texture inside large cells does not: the
    model's cells are measured at the image's scale and then at half, a quarter, ... of it, and
    the first size that a halving confirms (within ``STABLE_WITHIN``) is taken. Where none is
    confirmed, the last size is taken if each halving found larger cells, else the first; such
    a size, when far from the model's, is measured once more on the image resampled to it.
    """
    def measure(k: float) -> float | None:
        sizes = []
        for region in read(tuple(b * k for b in base)):
            cells, foreground = cells_of(region)
            sizes.append(cell_diameters(cells, foreground))
        sizes = np.concatenate(sizes) if sizes else np.zeros(0)
        return float(np.median(sizes)) / k if sizes.size >= MIN_CELLS else None

    first = measure(1.0)
    if first is None:
        return None
    previous, k, growing = first, 1.0, True
    while k > 1 / MAX_SHRINK:
        k /= 2
        current = measure(k)
        if current is None:
            break
        if abs(np.log(current / previous)) <= np.log(STABLE_WITHIN):
            return previous
        growing = growing and current > previous
        previous = current
    chosen = previous if growing else first  # no size held: texture if each shrink found larger cells
    scale = size_scale(model_diameter, chosen, model_range, rescale_to)
    if 1 / REFINE_BEYOND <= scale <= REFINE_BEYOND:
        return chosen
    second = measure(scale)
    return chosen if second is None else second
