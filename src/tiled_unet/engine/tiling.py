"""Pure geometry of U-Net overlap-tile inference (numpy only, no torch).

One axis of the plan, for a valid-padding U-Net (halo ``h``, period ``P = 2**depth``,
output step ``S``, a multiple of ``P``)::

    image           |0 .................................................... n|
    tile 0 writes   |0 ....... S|
    tile 1 writes               |S ...... 2S|
    last tile writes                        |2S ......... n|  (start moved back, aligned to P)
    tile 1 reads   |S-h ...................... S+O+h|          (O >= S: network output size)
    beyond 0 or n the input is mirrored (reflection without repeating the edge pixel).

Tile starts are multiples of ``P``: max-pooling is only shift-equivariant for such
shifts, so this is what makes the tiled result *equal* to one pass over the whole
mirror-padded image (not just close to it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UNetGeometry:
    """Sizes of a U-Net's input and output along one spatial axis (same for every axis).

    ``halo`` is the context read on each side of an output region (see
    :attr:`exact_halo`); for a same-padding network a smaller ``same_halo`` trades
    exactness for speed.
    """

    ndim: int
    depth: int
    padding: str = "valid"
    same_halo: int | None = None

    @property
    def period(self) -> int:
        """Shifts that leave max-pooling unchanged: tile starts are multiples of this."""
        return 2**self.depth

    @property
    def exact_halo(self) -> int:
        """Context on each side that makes tiles exactly equal to whole-image inference.

        Valid padding: ``(input - output) / 2 = 6 * 2**depth - 4`` (92 for depth 4).
        Same padding: how far the zero padding at a tile's border corrupts the output,
        found by following it through the network; pooling rounds it up to whole pooled
        pixels, so it exceeds the receptive-field radius (22 vs 20 for depth 2, 46 vs 44
        for depth 3, 94 vs 92 for depth 4).
        """
        if self.padding == "valid":
            return 6 * self.period - 4
        reach, skips = 0, []
        for _ in range(self.depth):
            reach += 2
            skips.append(reach)
            reach = -(-reach // 2)
        reach += 2
        for skip in reversed(skips):
            reach = max(2 * reach, skip) + 2
        return reach

    @property
    def halo(self) -> int:
        """Context read on each side of a tile: ``exact_halo`` unless ``same_halo`` is set."""
        if self.padding == "same" and self.same_halo is not None:
            return self.same_halo
        return self.exact_halo

    def output_size(self, n: int) -> int | None:
        """Output length for input length ``n``, or ``None`` if ``n`` is not valid."""
        if self.padding == "same":
            return n if n >= self.period and n % self.period == 0 else None
        for _ in range(self.depth):
            n -= 4
            if n < 2 or n % 2:
                return None
            n //= 2
        n -= 4
        if n < 1:
            return None
        for _ in range(self.depth):
            n = 2 * n - 4
            if n < 1:
                return None
        return n

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape for an input shape; a clear error names the nearest valid sizes."""
        out = []
        for n in shape:
            m = self.output_size(int(n))
            if m is None:
                lo, hi = self.nearest_valid_input_sizes(int(n))
                raise ValueError(
                    f"input size {n} is not valid for this {self.padding}-padding U-Net of depth "
                    f"{self.depth}; nearest valid sizes: {lo} and {hi}")
            out.append(m)
        return tuple(out)

    def nearest_valid_input_sizes(self, n: int) -> tuple[int | None, int]:
        """The largest valid input size <= n (None if there is none) and the smallest >= n."""
        lo = next((k for k in range(n, 0, -1) if self.output_size(k) is not None), None)
        hi = next(k for k in itertools.count(max(n, 1)) if self.output_size(k) is not None)
        return lo, hi

    def input_size_for_output(self, m: int) -> int:
        """Smallest valid input size whose output (without the halo trim) is >= m."""
        if self.padding == "same":
            n = max(m + 2 * self.halo, self.period)
            return -(-n // self.period) * self.period
        start = m + 2 * self.halo
        return next(k for k in itertools.count(start) if (self.output_size(k) or 0) >= m)

    def network_output_size(self, m: int) -> int:
        """Length of the region a tile computes when it must cover ``m`` output pixels."""
        n = self.input_size_for_output(m)
        return self.output_size(n) if self.padding == "valid" else n - 2 * self.halo


@dataclass(frozen=True)
class AxisSpan:
    """One tile along one axis: where it writes, what it computes, what it reads."""

    write_start: int  # image coordinates, the region this tile owns
    write_stop: int
    compute_start: int  # image coordinate of the first pixel the network output covers

    def crop(self) -> slice:
        """The part of the network output that is written."""
        return slice(self.write_start - self.compute_start, self.write_stop - self.compute_start)


@dataclass(frozen=True)
class Tile:
    """A tile: product of one span per spatial axis."""

    index: int
    spans: tuple[AxisSpan, ...]
    input_shape: tuple[int, ...]
    halo: int

    @property
    def write_slices(self) -> tuple[slice, ...]:
        return tuple(slice(s.write_start, s.write_stop) for s in self.spans)

    @property
    def crop_slices(self) -> tuple[slice, ...]:
        return tuple(s.crop() for s in self.spans)

    def read_plan(self, image_shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[np.ndarray | None, ...]]:
        """Slices to read from the image, and per axis the indices into that block that
        give the mirrored network input (``None`` where the block is used as it is).

        The mirror is taken about the *image* border, repeating periodically where the
        context exceeds the image (a 5-pixel-thin image still gives a full tile).
        """
        slices, takes = [], []
        for span, size, n in zip(self.spans, self.input_shape, image_shape):
            start = span.compute_start - self.halo
            index = mirror_index(np.arange(start, start + size), n)
            lo, hi = int(index.min()), int(index.max()) + 1
            slices.append(slice(lo, hi))
            inside = start >= 0 and start + size <= n
            takes.append(None if inside else index - lo)
        return tuple(slices), tuple(takes)


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer coordinates into ``[0, n)`` by reflection about the image borders
    (without repeating the edge pixel: ``-1 -> 1``, ``n -> n - 2``), periodically."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def round_tile_shape(tile_shape: tuple[int, ...], geometry: UNetGeometry) -> tuple[int, ...]:
    """Round an output tile shape up to a multiple of the pooling period."""
    p = geometry.period
    return tuple(max(p, -(-int(t) // p) * p) for t in tile_shape)


def _axis_spans(n: int, step: int, compute: int, period: int) -> list[AxisSpan]:
    """Spans along one axis: writes partition [0, n); compute starts are multiples of period."""
    spans = []
    start = 0
    while start < n:
        stop = min(start + step, n)
        compute_start = start
        if compute_start + compute < stop:  # cannot happen: compute >= step
            raise AssertionError("tile computes less than it writes")
        if stop == n and start > 0:
            # move the last tile back so it computes as little beyond the image as possible
            back = max(0, n - compute)
            compute_start = max(start - (start - back) // period * period, 0)
        spans.append(AxisSpan(start, stop, compute_start))
        start = stop
    return spans


def plan_tiles(image_shape: tuple[int, ...], geometry: UNetGeometry,
               tile_shape: tuple[int, ...]) -> list[Tile]:
    """The tiles whose written regions partition ``image_shape`` exactly.

    ``tile_shape`` is the output region a tile owns (rounded up to the pooling period,
    and shrunk to the image where the image is smaller). All tiles share one network
    input shape, so they can be batched.
    """
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != geometry.ndim or len(tile_shape) != geometry.ndim:
        raise ValueError(f"expected {geometry.ndim}-D image and tile shapes, got image {image_shape} "
                         f"and tile {tuple(tile_shape)}")
    if min(image_shape) < 1:
        raise ValueError(f"image shape {image_shape} is empty")
    step = round_tile_shape(tuple(min(t, n) for t, n in zip(tile_shape, image_shape)), geometry)
    inputs = tuple(geometry.input_size_for_output(s) for s in step)
    computes = tuple(geometry.network_output_size(s) for s in step)
    per_axis = [_axis_spans(n, s, c, geometry.period)
                for n, s, c in zip(image_shape, step, computes)]
    return [Tile(i, spans, inputs, geometry.halo)
            for i, spans in enumerate(itertools.product(*per_axis))]


def tile_grid_shape(tiles: list[Tile]) -> tuple[int, ...]:
    """Number of tiles along each axis."""
    if not tiles:
        return ()
    return tuple(len({t.spans[a].write_start for t in tiles}) for a in range(len(tiles[0].spans)))


def mirror_pad_whole(image: np.ndarray, geometry: UNetGeometry) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The whole image mirror-padded to one valid network input, and the crop of the output.

    Used for whole-image inference, the reference the tiled result must equal.
    """
    widths, crops = [], []
    for n in image.shape[-geometry.ndim:]:
        size = geometry.input_size_for_output(n)
        widths.append((geometry.halo, size - n - geometry.halo))
        crops.append(slice(0, n))
    lead = [(0, 0)] * (image.ndim - geometry.ndim)
    return np.pad(image, lead + widths, mode="reflect"), tuple(crops)


def compute_fraction(tiles: list[Tile], image_shape: tuple[int, ...]) -> float:
    """Output voxels divided by voxels the network processes (input side)."""
    if not tiles:
        return 0.0
    return math.prod(image_shape) / (len(tiles) * math.prod(tiles[0].input_shape))


def split_tile(tile: Tile, geometry: UNetGeometry) -> list[Tile]:
    """Smaller tiles whose written regions partition ``tile``'s (used after out-of-memory).

    Each axis longer than one pooling period is cut in two at a multiple of the period,
    so the pieces stay aligned and the result stays exact.
    """
    p = geometry.period
    per_axis, steps = [], []
    for span in tile.spans:
        length = span.write_stop - span.write_start
        if length <= p:
            per_axis.append([(span.write_start, span.write_stop)])
            steps.append(length)
            continue
        cut = span.write_start + -(-length // (2 * p)) * p
        per_axis.append([(span.write_start, cut), (cut, span.write_stop)])
        steps.append(max(cut - span.write_start, span.write_stop - cut))
    if all(len(parts) == 1 for parts in per_axis):
        return [tile]
    steps = [max(p, -(-s // p) * p) for s in steps]
    inputs = tuple(geometry.input_size_for_output(s) for s in steps)
    return [Tile(tile.index, tuple(AxisSpan(a, b, a) for a, b in parts), inputs, geometry.halo)
            for parts in itertools.product(*per_axis)]
