"""Axes of an input image: which are spatial, which is the channel axis, which are extra (T, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import UNetConfig

SPATIAL = {2: "YX", 3: "ZYX"}


@dataclass(frozen=True)
class Layout:
    """Where the axes of an input array are.

    ``axes`` names every input axis (e.g. ``"TZYXC"``); ``lead`` are the extra axes
    processed one frame at a time; the output is ``(*lead, classes, *spatial)``.
    """

    axes: str
    shape: tuple[int, ...]
    ndim_spatial: int

    @property
    def spatial_axes(self) -> str:
        return SPATIAL[self.ndim_spatial]

    @property
    def channel_index(self) -> int | None:
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def lead_indices(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.axes) if a != "C" and a not in self.spatial_axes)

    @property
    def spatial_indices(self) -> tuple[int, ...]:
        return tuple(self.axes.index(a) for a in self.spatial_axes)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.lead_indices)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.spatial_axes)

    @property
    def channels(self) -> int:
        return 1 if self.channel_index is None else self.shape[self.channel_index]

    @property
    def output_axes(self) -> str:
        return "".join(self.axes[i] for i in self.lead_indices) + "C" + self.spatial_axes

    def output_shape(self, classes: int) -> tuple[int, ...]:
        return self.lead_shape + (classes,) + self.spatial_shape

    def index(self, frame: tuple[int, ...], spatial: tuple[slice, ...]) -> tuple:
        """Index into the input for one frame and a spatial region (all channels)."""
        index: list = [slice(None)] * len(self.axes)
        for i, f in zip(self.lead_indices, frame):
            index[i] = f
        for a, s in zip(self.spatial_axes, spatial):
            index[self.axes.index(a)] = s
        return tuple(index)

    def to_channels_first(self, block: np.ndarray) -> np.ndarray:
        """A block read with :meth:`index` as ``(C, *spatial)``."""
        kept = [a for a in self.axes if a == "C" or a in self.spatial_axes]
        if "C" not in kept:
            return block[None]
        return np.moveaxis(block, kept.index("C"), 0)


def _default_axes(shape: tuple[int, ...], config: UNetConfig) -> str:
    nd = config.ndim
    spatial = SPATIAL[nd]
    extra = len(shape) - nd
    if config.in_channels == 1:
        if extra == 1 and shape[-1] in (3, 4):  # read as RGB(A) colour, as a TIFF's samples are
            return spatial + "C"
        return _lead_names(extra) + spatial
    if extra >= 1 and shape[-nd - 1] == config.in_channels:
        return _lead_names(extra - 1) + "C" + spatial
    if extra >= 1 and shape[-1] == config.in_channels:
        return _lead_names(extra - 1) + spatial + "C"
    raise ValueError(
        f"the model expects {config.in_channels} channels, but no axis of the image (shape {shape}) "
        f"has that size before or after the {spatial} axes; pass axes= (e.g. 'C{spatial}') to say "
        f"which axis holds the channels")


def _lead_names(count: int) -> str:
    if count > 5:
        raise ValueError(f"the image has {count} extra axes besides the spatial and channel axes; "
                         f"at most 5 are supported")
    return "TQRSU"[:count]


def parse_layout(shape: tuple[int, ...], dtype: np.dtype, config: UNetConfig,
                 axes: str | None = None) -> Layout:
    """Validate an input's shape and dtype against a model; errors say expected vs received."""
    shape = tuple(int(n) for n in shape)
    nd = config.ndim
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"expected a numeric image (bool, integer or float), got dtype {dtype}")
    if axes is None:
        if len(shape) < nd:
            raise ValueError(
                f"the model is {nd}-D and needs an image with at least {nd} dimensions "
                f"({SPATIAL[nd]}), got {len(shape)} dimension(s), shape {shape}")
        axes = _default_axes(shape, config)
    axes = axes.upper()
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} name {len(axes)} axes but the image has {len(shape)} "
                         f"(shape {shape})")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} repeat a name")
    spatial = SPATIAL[nd]
    present = "".join(a for a in axes if a in spatial)
    if present != spatial:
        raise ValueError(f"the model is {nd}-D: axes must contain {', '.join(spatial)} in that order, "
                         f"got {axes!r}")
    layout = Layout(axes, shape, nd)
    if layout.channels != config.in_channels:
        colour = ""
        if config.in_channels == 1 and layout.channels in (3, 4):
            colour = (f"; it looks like an RGB(A) colour image: convert it to one grey channel (e.g. "
                      f"image.mean(axis={axes.index('C') - len(axes)})) or pick one channel, or, if that axis is "
                      f"not colour, name the axes (axes=, CLI --axes, e.g. {'T' + SPATIAL[nd]!r})")
        raise ValueError(f"the model expects {config.in_channels} input channel(s), got an image with "
                         f"{layout.channels} (axes {axes!r}, shape {shape}){colour}")
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape})")
    return layout


def guess_spatial_ndim(shape: tuple[int, ...], axes: str | None = None) -> int:
    """2 or 3: the spatial axes an image has, for choosing a 2-D or 3-D model (``Z`` in ``axes``; without
    axes, 3 or more axes unless the last is 3 or 4 long on a 3-axis image, which is read as RGB(A))."""
    if axes:
        return 3 if "Z" in axes.upper() else 2
    return 3 if len(shape) >= 3 and not (len(shape) == 3 and shape[-1] in (3, 4)) else 2
