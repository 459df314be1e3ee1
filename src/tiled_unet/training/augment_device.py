"""Training patches made on the training device (``TrainConfig.augment_on="device"``).

The prepared training data are copied to the device once. For every patch the CPU
only draws the random choices from the training generator, in the order of
:func:`tiled_unet.datasets.sample_patch` and :func:`tiled_unet.augment.augment`
(example, centre, coordinate map, elastic nodes, intensity parameters); the device
builds the coordinate map, interpolates the elastic displacement with the same
cubic-spline matrices, and samples the image, weights (linear) and targets (nearest)
from the whole example with ``grid_sample`` (``align_corners=True`` and reflection:
the reflection about the edge pixels of scipy's ``mode="mirror"``). The intensity
changes and the Gaussian noise are applied there too (the noise from a torch
generator seeded from the training generator at the start of each epoch).

Given the same draws the result equals the CPU path's where the CPU's patch region
holds every sampled point (tested); elsewhere it is closer to the data: context
beyond the patch region comes from the image, not from a mirror of the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import (
    AugmentConfig,
    _moved_axes,
    draw_matrix,
    elastic_nodes,
    spline_matrix,
)
from .datasets import output_crop, patch_start

#: share of the device's free memory the training data may take (CUDA)
DEVICE_DATA_SHARE = 0.5


@dataclass(frozen=True)
class PatchDraw:
    """The random choices of one patch (everything but the noise values)."""

    example: int
    centre: np.ndarray            # (ndim,) centre of the input patch in example coordinates
    matrix: np.ndarray            # (ndim, ndim) output offsets -> input offsets
    nodes: np.ndarray | None      # elastic displacement nodes (ndim, g, ..., g), None without elastic
    intensity: np.ndarray         # (channels, 4): gamma, scale, shift, noise std (neutral: 1, 1, 0, 0)


def draw_patch(index: int, example: Any, input_shape: tuple[int, ...], foreground_fraction: float,
               config: AugmentConfig | None, rng: np.random.Generator) -> PatchDraw:
    """Draw the choices of a patch of ``example`` (number ``index``) from ``rng`` in the CPU path's order
    (noise values excepted)."""
    ndim, channels = len(input_shape), int(example.image.shape[0])
    start = patch_start(example, input_shape, foreground_fraction, rng)
    centre_in = start + (np.array(input_shape) - 1) / 2.0
    intensity = np.tile(np.array([1.0, 1.0, 0.0, 0.0]), (channels, 1))
    if config is None:
        return PatchDraw(index, centre_in, np.eye(ndim), None, intensity)
    matrix = draw_matrix(input_shape, config, rng)
    nodes = None
    if config.elastic and config.elastic_std > 0:
        nodes = elastic_nodes(ndim, config.elastic_grid, config.elastic_std, rng, _moved_axes(ndim, config.across_z))
    for channel in range(channels):  # as augment._intensity, which draws the noise values in between
        if config.gamma != (1.0, 1.0):
            intensity[channel, 0] = np.exp(rng.uniform(np.log(config.gamma[0]), np.log(config.gamma[1])))
        if config.intensity_scale != (1.0, 1.0):
            intensity[channel, 1] = rng.uniform(*config.intensity_scale)
        if config.intensity_shift > 0:
            intensity[channel, 2] = rng.uniform(-config.intensity_shift, config.intensity_shift)
        if config.noise_std > 0:
            intensity[channel, 3] = rng.uniform(0.0, config.noise_std)
    return PatchDraw(index, centre_in, matrix, nodes, intensity)


class DevicePatches:
    """Batches of augmented ``(image, targets, weights)`` patches made on ``device``, as tensors.

    The same interface as :class:`tiled_unet.datasets.PatchStream`: :meth:`epoch` yields
    ``steps`` batches ``(x, targets, weights)`` of shapes ``(B, C, *input)``,
    ``(B, *output)`` (int64) and ``(B, *output)`` (float32), on ``device``.
    """

    def __init__(self, examples: Sequence[Any], input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                 foreground_fraction: float, augment_config: AugmentConfig | None, rng: np.random.Generator,
                 device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        self._rng, self._config, self._fraction = rng, augment_config, foreground_fraction
        self._examples = list(examples)  # for drawing (shapes, foreground); patches come from the device copy
        _check_fits(examples, self.device)
        # image channels and the weight map share one linear resampling; targets are sampled by nearest
        self._linear = [torch.from_numpy(np.concatenate([ex.image, ex.weights[None]]).astype(np.float32, copy=False))
                        .to(self.device) for ex in examples]
        self._targets = [torch.from_numpy(ex.targets.astype(np.float32))[None].to(self.device) for ex in examples]
        offsets = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0 for n in self.input_shape]
        self._offsets = torch.stack(torch.meshgrid(*offsets, indexing="ij")).to(self.device, torch.float32)
        self._splines: list[torch.Tensor] | None = None
        if augment_config is not None and augment_config.elastic and augment_config.elastic_std > 0:
            self._splines = [torch.from_numpy(np.array(spline_matrix(augment_config.elastic_grid, n)))
                             .to(self.device, torch.float32) for n in self.input_shape]
        self._crop = output_crop(self.input_shape, self.output_shape)

    def draw(self) -> PatchDraw:
        """The next patch's random choices (from the training generator)."""
        k = int(self._rng.integers(len(self._examples)))
        return draw_patch(k, self._examples[k], self.input_shape, self._fraction, self._config, self._rng)

    def epoch(self, steps: int, batch_size: int):
        """Yield ``steps`` batches of ``batch_size`` patches (tensors on the device)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(self._rng.integers(2**63)))
        for _ in range(steps):
            yield self.make_batch([self.draw() for _ in range(batch_size)], generator)

    def close(self) -> None:
        """Release the device copy of the training data."""
        self._linear, self._targets = [], []

    def coordinates(self, draws: Sequence[PatchDraw]) -> torch.Tensor:
        """Sampling positions ``(B, ndim, *input)`` in example coordinates (float32)."""
        dev = self.device
        matrix = torch.from_numpy(np.stack([d.matrix for d in draws])).to(dev, torch.float32)
        centre = torch.from_numpy(np.stack([d.centre for d in draws])).to(dev, torch.float32)
        coords = torch.einsum("bij,j...->bi...", matrix, self._offsets)
        coords += centre.reshape(centre.shape + (1,) * len(self.input_shape))
        if self._splines is not None:
            nodes = torch.from_numpy(np.stack([d.nodes for d in draws])).to(dev, torch.float32)
            for matrix_axis in self._splines:  # separable: contract the first grid axis, append the dense one
                nodes = torch.tensordot(nodes, matrix_axis, dims=([2], [1]))
            coords += nodes
        return coords

    def make_batch(self, draws: Sequence[PatchDraw], generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, targets, weights)`` for the given draws."""
        coords = self.coordinates(draws)
        images, targets, weights = [], [], []
        for draw, position in zip(draws, coords):
            grid = _normalised_grid(position, self._examples[draw.example].targets.shape)
            linear = F.grid_sample(self._linear[draw.example][None], grid, mode="bilinear",
                                   padding_mode="reflection", align_corners=True)[0]
            images.append(linear[:-1])
            weights.append(linear[-1][self._crop])
            inner = grid[(slice(None),) + self._crop]
            picked = F.grid_sample(self._targets[draw.example][None], inner, mode="nearest",
                                   padding_mode="reflection", align_corners=True)[0, 0]
            targets.append(picked)
        x = _intensity(torch.stack(images), draws, self._config, generator)
        return x, torch.stack(targets).round().to(torch.int64), torch.stack(weights)


def _normalised_grid(position: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``grid_sample`` grid ``(1, *out, ndim)`` (last axis first) from example coordinates ``(ndim, *out)``."""
    axes = []
    for coordinate, n in zip(position, shape):
        axes.append(coordinate * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros_like(coordinate))
    return torch.stack(axes[::-1], dim=-1)[None]


def _intensity(x: torch.Tensor, draws: Sequence[PatchDraw], config: AugmentConfig | None,
               generator: torch.Generator | None) -> torch.Tensor:
    """Gamma on each channel's own range, scale, shift and noise, as :func:`augment._intensity`."""
    if config is None:
        return x
    params = torch.from_numpy(np.stack([d.intensity for d in draws])).to(x.device, torch.float32)  # (B, C, 4)
    shape = params.shape[:2] + (1,) * (x.ndim - 2)
    gamma, scale, shift, std = (params[..., k].reshape(shape) for k in range(4))
    if config.gamma != (1.0, 1.0):
        flat = x.flatten(2)
        low = flat.amin(dim=2).reshape(shape)
        high = flat.amax(dim=2).reshape(shape)
        span = high - low
        unit = (x - low) / torch.where(span > 0, span, torch.ones_like(span))
        x = torch.where(span > 0, low + span * unit.clamp_min(0).pow(gamma), x)
    if config.intensity_scale != (1.0, 1.0):
        x = x * scale
    if config.intensity_shift > 0:
        x = x + shift
    if config.noise_std > 0:
        x = x + torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std
    return x


def device_bytes(examples: Sequence[Any]) -> int:
    """Bytes the device copy of the training data takes (float32 image, weights and targets)."""
    return sum(4 * (ex.image.shape[0] + 2) * int(np.prod(ex.targets.shape)) for ex in examples)


def _check_fits(examples: Sequence[Any], device: torch.device) -> None:
    if device.type != "cuda":
        return
    need = device_bytes(examples)
    free, _ = torch.cuda.mem_get_info(device)
    if need > DEVICE_DATA_SHARE * free:
        raise ValueError(f"augment_on='device' keeps the training data on {device}: they need "
                         f"{need / 1e9:.2f} GB, more than half of the {free / 1e9:.2f} GB free there; "
                         f"use augment_on='cpu' (with workers) or fewer or smaller training images")
