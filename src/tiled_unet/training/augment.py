"""Random augmentation of training patches in 2D and 3D (Ronneberger et al., 2015).

One coordinate map (flips, 90-degree rotations, a small rotation and scaling, plus a
smooth elastic deformation) is drawn per call and applied to the image and to every
companion array, so that they stay aligned: the image and float maps are resampled
linearly, label arrays by nearest neighbour (no new label values appear). Borders
are mirrored, as in overlap-tile inference. Intensity changes apply to the image only.

For 3D stacks the default keeps Z apart (microscopy stacks are usually anisotropic):
rotations and scaling act in the YX plane and the elastic displacement has no Z
component; ``across_z=True`` lifts this for isotropic volumes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import _check, _from_dict


def _check_range(name: str, value: Any, low_limit: float) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    _check(ok, f"{name} must be a pair of numbers (low, high), got {value!r}")
    _check(low_limit < value[0] <= value[1], f"{name} must satisfy {low_limit} < low <= high, got {value!r}")


def _check_number(name: str, value: Any, low: float, high: float = math.inf) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    _check(ok and low <= value <= high, f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentations of one training patch; neutral values switch a part off.

    Spatial: ``elastic`` deformation from displacement vectors drawn with standard
    deviation ``elastic_std`` (pixels) on a coarse grid of ``elastic_grid`` points per
    axis, interpolated with cubic splines to every pixel (the paper uses 3 and 10);
    every axis is flipped with ``flip_probability``; ``rot90`` rotates the YX plane by a
    random multiple of 90 degrees (odd multiples only for square YX output); a random
    rotation by up to ``rotation`` degrees and a zoom by a factor drawn from ``scale``
    (objects look that much larger). ``across_z``: 3D rotations, scaling and elastic
    displacement also involve Z (only for isotropic volumes).

    Intensity (image only, per channel, after the spatial part): gamma with exponent
    log-uniform in ``gamma`` on the channel's own min..max range, multiplication by a
    factor from ``intensity_scale``, addition of a shift from
    ``[-intensity_shift, intensity_shift]`` and Gaussian noise whose standard deviation
    is drawn from ``[0, noise_std]`` (units of the normalised image).
    """

    elastic: bool = True
    elastic_grid: int = 3
    elastic_std: float = 10.0
    flip_probability: float = 0.5
    rot90: bool = True
    rotation: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    across_z: bool = False
    gamma: tuple[float, float] = (0.8, 1.25)
    intensity_scale: tuple[float, float] = (0.8, 1.2)
    intensity_shift: float = 0.1
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        for name in ("scale", "gamma", "intensity_scale"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("elastic", "rot90", "across_z"):
            value = getattr(self, name)
            _check(isinstance(value, (bool, np.bool_)), f"{name} must be True or False, got {value!r}")
        grid = self.elastic_grid
        _check(isinstance(grid, (int, np.integer)) and not isinstance(grid, bool) and 2 <= grid <= 64,
               f"elastic_grid must be an integer number of grid points per axis in 2..64, got {grid!r}")
        _check_number("elastic_std", self.elastic_std, 0.0)
        _check_number("flip_probability", self.flip_probability, 0.0, 1.0)
        _check_number("rotation", self.rotation, 0.0, 180.0)
        _check_number("intensity_shift", self.intensity_shift, 0.0)
        _check_number("noise_std", self.noise_std, 0.0)
        _check_range("scale", self.scale, 0.0)
        _check_range("gamma", self.gamma, 0.0)
        _check_range("intensity_scale", self.intensity_scale, 0.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        """A config that changes nothing (``augment`` then only crops)."""
        return cls(elastic=False, flip_probability=0.0, rot90=False, rotation=0.0, scale=(1.0, 1.0),
                   gamma=(1.0, 1.0), intensity_scale=(1.0, 1.0), intensity_shift=0.0, noise_std=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        return _from_dict(cls, data)


def _moved_axes(ndim: int, across_z: bool) -> tuple[int, ...]:
    """Axes that rotations, scaling and elastic displacement act on."""
    return tuple(range(ndim)) if ndim == 2 or across_z else (1, 2)


def _rotation(ndim: int, first: int, second: int, angle: float) -> np.ndarray:
    matrix = np.eye(ndim)
    c, s = math.cos(angle), math.sin(angle)
    matrix[first, first], matrix[first, second] = c, -s
    matrix[second, first], matrix[second, second] = s, c
    return matrix


def draw_matrix(output_shape: tuple[int, ...], config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A random linear map from output offsets to input offsets (about the patch centres)."""
    ndim = len(output_shape)
    y_axis, x_axis = ndim - 2, ndim - 1
    flips = rng.random(ndim) < config.flip_probability
    matrix = np.diag(np.where(flips, -1.0, 1.0))
    if config.rot90:
        turns = int(rng.integers(4))
        if turns % 2 and output_shape[y_axis] != output_shape[x_axis]:
            turns -= 1  # a quarter turn of a non-square patch would leave its frame
        quarter = np.rint(_rotation(ndim, y_axis, x_axis, math.pi / 2))
        matrix = np.linalg.matrix_power(quarter, turns) @ matrix
    moved = _moved_axes(ndim, config.across_z)
    if config.scale[0] != 1.0 or config.scale[1] != 1.0:
        factor = rng.uniform(*config.scale)
        zoom = np.ones(ndim)
        zoom[list(moved)] = 1.0 / factor
        matrix = np.diag(zoom) @ matrix
    if config.rotation > 0:
        planes = [(y_axis, x_axis)] if len(moved) == 2 else [(0, 1), (0, 2), (1, 2)]
        for first, second in planes:
            angle = math.radians(rng.uniform(-config.rotation, config.rotation))
            matrix = _rotation(ndim, first, second, angle) @ matrix
    return matrix


@functools.lru_cache(maxsize=64)
def spline_matrix(points: int, size: int) -> np.ndarray:
    """(size, points) cubic-spline interpolation from ``points`` grid nodes spread over ``size`` pixels
    (read-only, cached)."""
    positions = [np.linspace(0.0, points - 1.0, size)]
    matrix = np.empty((size, points))
    for node in range(points):
        unit = np.zeros(points)
        unit[node] = 1.0
        matrix[:, node] = ndi.map_coordinates(unit, positions, order=3, mode="mirror")
    matrix.flags.writeable = False
    return matrix


def elastic_displacement(shape: tuple[int, ...], grid_points: int, std: float, rng: np.random.Generator,
                         axes: Sequence[int] | None = None) -> np.ndarray:
    """A smooth random displacement field of shape ``(ndim, *shape)`` in pixels.

    Displacements drawn from N(0, std^2) on a grid of ``grid_points`` nodes per axis
    (corners included) are interpolated by cubic splines; the field equals them at
    the nodes (between nodes its spread is smaller: about 0.8 * std over the patch).
    Components of axes not in ``axes`` (default: all) are 0.
    """
    return interpolate_nodes(elastic_nodes(len(shape), grid_points, std, rng, axes), shape)


def elastic_nodes(ndim: int, grid_points: int, std: float, rng: np.random.Generator,
                  axes: Sequence[int] | None = None) -> np.ndarray:
    """Displacements ``(ndim, grid_points, ..., grid_points)`` drawn from N(0, std^2) for ``axes``, else 0."""
    axes = tuple(range(ndim)) if axes is None else tuple(axes)
    nodes = np.zeros((ndim,) + (grid_points,) * ndim)
    for axis in axes:
        nodes[axis] = rng.normal(0.0, std, size=(grid_points,) * ndim)
    return nodes


def interpolate_nodes(nodes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The field ``(ndim, *shape)`` interpolated by cubic splines from :func:`elastic_nodes`."""
    ndim, grid_points = len(shape), nodes.shape[1]
    transposed = [np.ascontiguousarray(spline_matrix(grid_points, size).T) for size in shape]
    field = np.zeros((ndim, *shape))
    for axis in range(ndim):
        if not nodes[axis].any():
            continue
        dense = nodes[axis]
        for matrix in reversed(transposed):  # separable: interpolate the last axis, move it to the front
            dense = np.moveaxis(np.ascontiguousarray(dense) @ matrix, -1, 0)
        field[axis] = dense
    return field


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Indices reflected about the edge pixels, as scipy's ``mode='mirror'``."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


class _Resampler:
    """Applies one coordinate map to arrays of the input's spatial shape."""

    def __init__(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...], matrix: np.ndarray,
                 displacement: np.ndarray | None) -> None:
        ndim = len(input_shape)
        start = [(i - o) // 2 for i, o in zip(input_shape, output_shape)]
        centre_out = [(o - 1) / 2 for o in output_shape]
        centre_in = [s + c for s, c in zip(start, centre_out)]
        offsets = [np.arange(o) - c for o, c in zip(output_shape, centre_out)]
        self.output_shape = output_shape
        self.indices: list[np.ndarray] | None = None
        permutation = np.count_nonzero(matrix, axis=1).max() == 1 and np.all(np.isin(matrix, (-1.0, 0.0, 1.0)))
        if displacement is None and permutation:
            # flips and quarter turns only: exact integer indexing, no interpolation
            self.source = [int(np.flatnonzero(matrix[a])[0]) for a in range(ndim)]
            self.indices = [_mirror(np.rint(centre_in[a] + matrix[a, b] * offsets[b]).astype(np.intp), n)
                            for a, (b, n) in enumerate(zip(self.source, input_shape))]
            return
        coords = np.empty((ndim, *output_shape))
        for a in range(ndim):
            coords[a] = centre_in[a]
            for b in range(ndim):
                if matrix[a, b] != 0:
                    shape = [1] * ndim
                    shape[b] = -1
                    coords[a] += matrix[a, b] * offsets[b].reshape(shape)
            if displacement is not None:
                coords[a] += displacement[a]
        self.coords = coords
        self.input_shape = input_shape
        self.nearest: np.ndarray | None = None

    def __call__(self, array: np.ndarray, order: int, dtype: np.dtype,
                 region: tuple[slice, ...] | None = None) -> np.ndarray:
        """The array resampled on the output grid, or only on its ``region`` (slices of the output)."""
        if self.indices is not None:
            indices = self.indices
            if region is not None:  # indices[a] runs along output axis source[a]
                indices = [index[region[b]] for index, b in zip(indices, self.source)]
            picked = array[np.ix_(*indices)]
            return picked.transpose(np.argsort(self.source)).astype(dtype, copy=False)
        coords = self.coords if region is None else self.coords[(slice(None), *region)]
        if order == 0:  # by indexing: exact for every dtype (64-bit labels do not pass through float)
            if self.nearest is None:
                rounded = [_mirror(np.rint(c).astype(np.intp), n) for c, n in zip(self.coords, self.input_shape)]
                self.nearest = np.ravel_multi_index(rounded, self.input_shape)
            nearest = self.nearest if region is None else self.nearest[region]
            return np.ravel(array)[nearest].astype(dtype, copy=False)
        output = np.empty(coords.shape[1:], dtype)
        ndi.map_coordinates(array, coords, output=output, order=order, mode="mirror", prefilter=False)
        return output


def _intensity(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    for channel in image:  # views: changed in place
        if config.gamma != (1.0, 1.0):
            gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
            low, high = float(channel.min()), float(channel.max())
            if high > low:
                unit = (channel - low) / (high - low)
                channel[...] = low + (high - low) * np.power(unit, gamma, dtype=np.float32)
        if config.intensity_scale != (1.0, 1.0):
            channel *= np.float32(rng.uniform(*config.intensity_scale))
        if config.intensity_shift > 0:
            channel += np.float32(rng.uniform(-config.intensity_shift, config.intensity_shift))
        if config.noise_std > 0:
            std = rng.uniform(0.0, config.noise_std)
            channel += rng.standard_normal(channel.shape, dtype=np.float32) * np.float32(std)
    return image


def _nonempty_within(region: Any, size: int) -> bool:
    """Whether ``region`` is a slice with step 1 that selects at least one of ``size`` positions."""
    if not isinstance(region, slice) or region.step not in (None, 1):
        return False
    stop = size if region.stop is None else region.stop
    return 0 <= (region.start or 0) < stop <= size


def _companions(arrays: Any, name: str, spatial: tuple[int, ...], integer: bool) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of arrays (wrap a single array as ({name[:-1]},)), "
                        f"got {type(arrays).__name__}")
    checked = []
    for index, array in enumerate(arrays):
        array = np.asarray(array)
        if array.shape != spatial:
            raise ValueError(f"{name}[{index}] has shape {array.shape}, expected the image's spatial shape {spatial}")
        kinds = "biu" if integer else "biuf"
        if array.dtype.kind not in kinds:
            expected = "an integer (label) array" if integer else "a real-valued array"
            raise TypeError(f"{name}[{index}] must be {expected}, got dtype {array.dtype}")
        checked.append(array)
    return checked


def augment(image: np.ndarray, *, labels: Sequence[np.ndarray] = (), floats: Sequence[np.ndarray] = (),
            config: AugmentConfig, rng: np.random.Generator, output_shape: Sequence[int] | None = None,
            companion_region: Sequence[slice] | None = None) -> tuple[np.ndarray, tuple[np.ndarray, ...],
                                                                      tuple[np.ndarray, ...]]:
    """Augment ``image`` (C, *S) and its companions with one random transform.

    ``labels``: integer arrays of shape S (instance labels, targets with 255 = ignore),
    resampled by nearest neighbour; ``floats``: real arrays of shape S (e.g. weight
    maps), resampled linearly like the image. ``output_shape`` (default S): the size
    of a patch cut from the middle of the transformed input, computed directly from
    the coordinate map (give a larger input for context and no mirrored borders appear).
    ``companion_region`` (slices of the output, e.g. the network's output inside its
    input): labels and floats are computed only there, equal to that crop of the whole.
    Returns ``(image float32, labels, floats)`` with dtypes of the inputs kept
    (floats become float32 unless float64). The same ``rng`` state gives the same result.
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must have shape (C, Y, X) or (C, Z, Y, X), got shape {image.shape}; "
                         f"add a channel axis with image[None]")
    if image.dtype.kind not in "biuf":
        raise TypeError(f"image must be real-valued, got dtype {image.dtype}")
    spatial = image.shape[1:]
    if min(image.shape) < 1:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    label_arrays = _companions(labels, "labels", spatial, integer=True)
    float_arrays = _companions(floats, "floats", spatial, integer=False)
    if output_shape is None:
        output_shape = spatial
    else:
        try:
            output_shape = tuple(operator.index(n) for n in output_shape)
        except (TypeError, ValueError):
            raise TypeError(f"output_shape must be a sequence of integers, got {output_shape!r}") from None
        if len(output_shape) != len(spatial) or min(output_shape) < 1:
            raise ValueError(f"output_shape must hold {len(spatial)} positive sizes for an image with "
                             f"spatial shape {spatial}, got {output_shape}")

    matrix = draw_matrix(output_shape, config, rng)
    displacement = None
    if config.elastic and config.elastic_std > 0:
        axes = _moved_axes(len(spatial), config.across_z)
        displacement = elastic_displacement(output_shape, config.elastic_grid, config.elastic_std, rng, axes)
    resample = _Resampler(spatial, output_shape, matrix, displacement)
    region = None
    if companion_region is not None:
        region = tuple(companion_region)
        if len(region) != len(output_shape) or not all(map(_nonempty_within, region, output_shape)):
            raise ValueError(f"companion_region must be {len(output_shape)} non-empty slices (step 1) within the "
                             f"output shape {output_shape}, got {companion_region!r}")

    image = image.astype(np.float32, copy=False)
    image_out = np.stack([resample(channel, 1, np.dtype(np.float32)) for channel in image])
    image_out = _intensity(image_out, config, rng)
    labels_out = []
    for array in label_arrays:
        labels_out.append(resample(array, 0, array.dtype, region))
    floats_out = []
    for array in float_arrays:
        dtype = np.dtype(np.float64) if array.dtype == np.float64 else np.dtype(np.float32)
        floats_out.append(resample(array.astype(dtype, copy=False), 1, dtype, region))
    return image_out, tuple(labels_out), tuple(floats_out)
