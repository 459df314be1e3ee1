"""Synthetic fluorescent nuclei (2D and 3D) with instance labels.

:func:`render_nuclei` imitates DAPI/Hoechst widefield and confocal images: the number,
size, shape, clumping, texture and brightness of nuclei, the optics (blur, haze, uneven
illumination) and the camera (photon and read noise, gain, offset) are drawn at random
per image from the ranges of a :class:`NucleiConfig`. Built-in nuclei models are trained
on it. Only numpy and scipy are used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .shapes import Shape, clean_labels, paint, random_shape

Range = tuple[float, float]


@dataclass(frozen=True)
class NucleiConfig:
    """Ranges from which :func:`render_nuclei` draws the properties of one image.

    Each ``(low, high)`` pair is sampled uniformly once per image (``radius`` and
    ``photons`` log-uniformly); intensities are relative to a typical nucleus (1.0).
    Lengths are in pixels along the last axis.
    """

    count: int | None = None  #: number of nuclei to place (then ``density`` is ignored)
    density: Range = (0.05, 0.5)  #: fraction of the area (volume) covered by nuclei
    radius: Range = (4.0, 22.0)  #: median nucleus radius (at most a third of the smallest image side)
    radius_spread: Range = (0.08, 0.3)  #: log-normal spread of radii around the median
    aspect: Range = (1.15, 2.0)  #: largest axis ratio of a nucleus
    irregularity: Range = (0.02, 0.12)  #: relative amplitude of the boundary wobble
    irregular_fraction: Range = (0.0, 0.15)  #: fraction of kidney-shaped, strongly irregular nuclei
    cluster_fraction: Range = (0.0, 0.5)  #: fraction of nuclei in clumps of touching nuclei
    cluster_size: tuple[int, int] = (2, 6)  #: nuclei per clump
    overlap: Range = (0.0, 0.15)  #: overlap a free nucleus may have with others (then they touch)
    mitotic_fraction: Range = (0.0, 0.06)  #: small, bright mitotic and apoptotic nuclei
    brightness_spread: Range = (0.1, 0.45)  #: log-normal spread of nucleus brightness
    dim_fraction: Range = (0.0, 0.15)  #: nuclei at 20-45 % of the usual brightness
    texture: Range = (0.05, 0.35)  #: amplitude of the chromatin texture
    texture_scale: Range = (0.7, 2.0)  #: size of chromatin grains
    chromocenter_chance: float = 0.3  #: probability of bright chromatin foci in an image
    nucleoli: Range = (0.0, 3.0)  #: mean number of dark nucleoli per nucleus
    nucleolus_depth: Range = (0.15, 0.5)
    rim_chance: float = 0.25  #: probability of a brighter nuclear rim in an image
    rim: Range = (0.1, 0.4)
    dome: Range = (0.0, 0.6)  #: 2D: nuclei brighter at the centre, ``(1 - 0.85 f^2)^dome``
    defocus_fraction: Range = (0.0, 0.15)  #: 2D: nuclei partly out of the focal plane
    psf_sigma: Range = (0.6, 1.8)  #: lateral Gaussian PSF
    axial_ratio: Range = (2.0, 3.5)  #: 3D: axial / lateral PSF width
    haze: Range = (0.0, 0.25)  #: out-of-focus light, relative to in-focus
    haze_scale: Range = (1.0, 3.0)  #: width of the haze in median radii
    background: Range = (0.01, 0.12)  #: background fluorescence
    illumination: Range = (0.0, 0.5)  #: depth of uneven illumination / vignetting
    attenuation: Range = (0.0, 0.6)  #: 3D: signal loss from the first to the last plane
    debris: Range = (0.0, 1.5e-4)  #: bright spots in the background, per pixel
    photons: Range = (20.0, 3000.0)  #: photo-electrons at the peak of a typical nucleus
    read_noise: Range = (1.0, 6.0)  #: electrons (rms)
    gain: Range = (0.5, 4.0)  #: ADU per electron (lowered to stay well below 65535)
    offset: Range = (0.0, 500.0)  #: camera offset in ADU
    saturation_chance: float = 0.1  #: probability that the brightest nuclei saturate the camera
    min_size: int = 10  #: smallest nucleus kept, in pixels

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("count", "min_size", "chromocenter_chance", "rim_chance", "saturation_chance"):
                continue
            if not (isinstance(value, tuple) and len(value) == 2
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
                raise ValueError(f"NucleiConfig.{f.name}: expected a (low, high) pair of numbers, got {value!r}")
            if not 0 <= value[0] <= value[1]:
                raise ValueError(f"NucleiConfig.{f.name}: expected 0 <= low <= high, got {value!r}")
        for name in ("radius", "photons", "texture_scale", "haze_scale", "aspect"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"NucleiConfig.{name}: expected positive values, got {getattr(self, name)!r}")
        if self.aspect[0] < 1:
            raise ValueError(f"NucleiConfig.aspect: expected axis ratios >= 1, got {self.aspect!r}")
        for name in ("density", "irregular_fraction", "cluster_fraction", "overlap", "mitotic_fraction",
                     "dim_fraction", "defocus_fraction", "illumination", "attenuation", "debris"):
            if getattr(self, name)[1] > 1:
                raise ValueError(f"NucleiConfig.{name}: expected fractions in [0, 1], got {getattr(self, name)!r}")
        if not (isinstance(self.cluster_size[0], int) and isinstance(self.cluster_size[1], int)
                and 2 <= self.cluster_size[0] <= self.cluster_size[1]):
            raise ValueError("NucleiConfig.cluster_size: expected integers 2 <= low <= high, "
                             f"got {self.cluster_size!r}")
        for name in ("chromocenter_chance", "rim_chance", "saturation_chance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"NucleiConfig.{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
            raise ValueError(f"NucleiConfig.count: expected None or an integer >= 0, got {self.count!r}")
        if not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"NucleiConfig.min_size: expected an integer >= 1, got {self.min_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NucleiConfig:
        if not isinstance(data, dict):
            raise ValueError(f"NucleiConfig: expected a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"NucleiConfig: unknown keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) not in (2, 3) or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape: expected 2 or 3 positive integers, got {shape!r}")
    return tuple(int(n) for n in shape)


def _scale(spacing: tuple[float, ...] | None, ndim: int) -> np.ndarray:
    """Pixel size of each axis relative to the last axis."""
    if spacing is None:
        return np.ones(ndim)
    spacing = np.asarray(spacing, float)
    if spacing.shape != (ndim,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing: expected {ndim} positive numbers (one per axis), got {spacing.tolist()!r}")
    return spacing / spacing[-1]


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng: expected a numpy Generator, an integer seed or None, got {type(rng).__name__}")


class _Draw:
    """Per-image draws from the ranges of a config."""

    def __init__(self, config: NucleiConfig, rng: np.random.Generator):
        self.config, self.rng = config, rng

    def __call__(self, name: str, log: bool = False) -> float:
        lo, hi = getattr(self.config, name)
        if log:
            return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        return float(self.rng.uniform(lo, hi))


def _place_nuclei(grid: tuple[int, ...], scale: np.ndarray, config: NucleiConfig, draw: _Draw,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], float]:
    """Labels, owner levels and per-label properties (index = label) of randomly placed nuclei."""
    ndim = len(grid)
    median = min(draw("radius", log=True), max(float(np.min(np.asarray(grid) * scale)) / 3, config.radius[0]))
    spread, max_aspect = draw("radius_spread"), draw("aspect")
    wobble, overlap = draw("irregularity"), draw("overlap")
    p_irregular, p_mitotic = draw("irregular_fraction"), draw("mitotic_fraction")
    physical = float(np.prod(np.asarray(grid) * scale))
    unit = math.pi * median**2 if ndim == 2 else 4 / 3 * math.pi * median**3
    area = unit * math.exp(ndim * spread**2)
    if config.count is not None:
        target = config.count
    else:
        target = int(rng.poisson(draw("density") * physical / area))
    target = min(target, int(4 * physical / max(unit, 1.0)) + 1)
    clustered = int(round(target * draw("cluster_fraction")))

    labels = np.zeros(grid, np.uint32)
    best = np.full(grid, np.inf, np.float32)
    props: dict[str, list[float]] = {"kind": [0.0], "bright": [0.0]}
    min_pixels = max(config.min_size, 4)
    low, high = np.full(ndim, -0.3 * median) / scale, np.asarray(grid) - 1 + 0.3 * median / scale

    def new_shape(centre: np.ndarray, kind: int) -> Shape:
        if kind == 1:  # mitotic: a small bright bar (metaphase plate)
            return random_shape(rng, centre, max(median * rng.uniform(0.4, 0.6), 2.5),
                                rng.uniform(1.6, 3.0), 0.03)
        if kind == 2:  # apoptotic: a small round bright body
            return random_shape(rng, centre, max(median * rng.uniform(0.3, 0.45), 2.5), 1.1, 0.05)
        radius = median * math.exp(rng.normal(0, spread))
        if rng.random() < p_irregular:
            return random_shape(rng, centre, radius, rng.uniform(1.3, 2.0), rng.uniform(0.08, 0.2),
                                bend=rng.uniform(0.3, 0.7) * rng.choice([-1, 1]))
        return random_shape(rng, centre, radius, rng.uniform(1.0, max_aspect), wobble * rng.uniform(0.5, 1.5))

    def add(shape: Shape, kind: int, **options) -> bool:
        label = len(props["kind"])
        if not paint(labels, best, shape, label, scale, min_pixels=min_pixels, **options):
            return False
        bright = math.exp(rng.normal(0, 1))  # scaled by the brightness spread later
        props["kind"].append(float(kind))
        props["bright"].append(bright)
        return True

    placed = 0
    sizes = config.cluster_size
    while placed < clustered:  # clumps of touching nuclei, sharing long borders
        k = min(int(rng.integers(sizes[0], sizes[1] + 1)), max(clustered - placed, 2))
        members: list[Shape] = []
        first = len(props["kind"])
        for _ in range(3 * k):
            if len(members) == k:
                break
            if not members:
                shape = new_shape(rng.uniform(low, high), 0)
            else:
                parent = members[rng.integers(len(members))]
                direction = rng.normal(size=ndim)
                direction /= np.linalg.norm(direction)
                radius_guess = median * math.exp(rng.normal(0, spread))
                # touching and squeezed together, overlapping at most a third: the seam between
                # two nuclei stays where a human annotator would draw it
                dist = rng.uniform(0.72, 0.95) * (parent.radii.mean() + radius_guess)
                shape = new_shape(parent.centre + dist * direction / scale, 0)
            friends = np.arange(first, len(props["kind"]), dtype=np.uint32)
            if add(shape, 0, max_overlap=overlap if not members else 0.35, friends=friends):
                members.append(shape)
        placed += max(len(members), 1)

    attempts = 0
    while placed < target and attempts < 3 * target:  # free nuclei; a few mitotic and apoptotic
        attempts += 1
        centre = rng.uniform(low, high)
        index = tuple(np.clip(np.round(centre).astype(int), 0, np.asarray(grid) - 1))
        if labels[index] and overlap < 0.3:
            continue
        kind = 0 if rng.random() >= p_mitotic else int(rng.integers(1, 3))
        placed += add(new_shape(centre, kind), kind, max_overlap=overlap)
    return labels, best, {k: np.asarray(v) for k, v in props.items()}, median


def _splat(mask: np.ndarray, count: int, sigma: np.ndarray, rng: np.random.Generator,
           amplitude: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Gaussian blobs of peak ``amplitude`` at ``count`` random pixels of ``mask``."""
    field = np.zeros(mask.shape, np.float32)
    where = np.flatnonzero(mask)
    if count <= 0 or where.size == 0:
        return field
    picks = rng.choice(where, size=min(count, where.size), replace=False)
    norm = float((2 * np.pi) ** (mask.ndim / 2) * np.prod(sigma))
    field.ravel()[picks] = rng.uniform(*amplitude, size=picks.size) * norm
    return ndi.gaussian_filter(field, sigma, truncate=3.0)


def _coarse_blur(image: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """A wide Gaussian blur computed on a subsampled grid and interpolated back."""
    step = np.maximum(1, np.floor(sigma / 2.5)).astype(int)
    small = ndi.uniform_filter(image, step)[tuple(slice(None, None, s) for s in step)]
    small = ndi.gaussian_filter(small, sigma / step, mode="reflect")
    return ndi.zoom(small, np.asarray(image.shape) / np.asarray(small.shape), order=1, mode="nearest",
                    grid_mode=True)[tuple(slice(0, n) for n in image.shape)]


def _illumination(grid: tuple[int, ...], strength: float, attenuation: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field: vignetting, low-frequency waves and (3D) loss with depth."""
    ndim = len(grid)
    axes = [np.linspace(0.0, 1.0, n, dtype=np.float32).reshape([-1 if a == i else 1 for a in range(ndim)])
            for i, n in enumerate(grid)]
    plane = axes[-2:]
    centre = rng.uniform(0.2, 0.8, size=2)
    r2 = sum((x - c) ** 2 for x, c in zip(plane, centre)) / 0.5
    vignette = rng.uniform(0, 1)
    field = 1.0 - strength * vignette * np.minimum(r2, 1.0)
    for _ in range(3):
        k = rng.normal(size=2) * 0.8
        field = field * (1.0 + strength * (1 - vignette) * 0.3 * np.cos(
            2 * np.pi * (k[0] * plane[0] + k[1] * plane[1]) + rng.uniform(0, 2 * np.pi)))
    if ndim == 3:
        field = field * (1.0 - attenuation * axes[0])
    return np.broadcast_to(field, grid).astype(np.float32)


def render_nuclei(shape: tuple[int, ...], config: NucleiConfig | None = None,
                  rng: np.random.Generator | int | None = None,
                  spacing: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A realistic fluorescence image of nuclei (uint16) and its instance labels (uint32).

    ``shape`` is ``(Y, X)`` or ``(Z, Y, X)``. ``rng`` is a generator or a seed (``None``:
    fresh randomness). ``spacing`` is the pixel size per axis, e.g. ``(2.0, 0.5, 0.5)``;
    nuclei are then round in physical space (flatter in pixels along the coarse axis).
    Labels are ``1..N`` with ``0`` for background; each nucleus is one connected component
    of at least ``config.min_size`` pixels, and a pixel belongs to the nucleus that owns it
    before the optical blur (touching nuclei have no background between them).
    """
    grid = _check_shape(shape)
    ndim = len(grid)
    scale = _scale(spacing, ndim)
    config = NucleiConfig() if config is None else config
    if not isinstance(config, NucleiConfig):
        raise ValueError(f"config: expected a NucleiConfig or None, got {type(config).__name__}")
    rng = _as_rng(rng)
    draw = _Draw(config, rng)

    raw, best, props, median = _place_nuclei(grid, scale, config, draw, rng)
    labels, old = clean_labels(raw, config.min_size)
    n = old.size
    kind = np.concatenate([[0], props["kind"][old]]).astype(int)
    regular = kind == 0
    bright = np.exp(draw("brightness_spread") * np.concatenate([[0.0], np.log(props["bright"][old])]))
    dim = rng.random(n + 1) < draw("dim_fraction")
    bright[dim & regular] *= rng.uniform(0.2, 0.45, size=n + 1)[dim & regular]
    bright[~regular] *= rng.uniform(1.8, 3.5, size=n + 1)[~regular]
    bright[0] = 0.0
    texture_amp = draw("texture") * rng.uniform(0.5, 1.5, size=n + 1)
    texture_amp[~regular] *= 0.3

    inside = labels > 0
    f = np.where(inside, np.minimum(best, 1.0), 1.0).astype(np.float32)
    lateral = 1.0 / scale  # one physical pixel, per axis
    signal = bright.astype(np.float32)[labels]
    if ndim == 2:
        signal *= (1.0 - 0.85 * f * f) ** np.float32(draw("dome"))
    grain = draw("texture_scale")
    noise = rng.normal(size=grid).astype(np.float32)
    texture = ndi.gaussian_filter(noise, grain * lateral)
    texture = 0.7 * texture / (texture.std() + 1e-6)
    coarse = ndi.gaussian_filter(noise, 3 * grain * lateral)
    texture += 0.7 * coarse / (coarse.std() + 1e-6)
    signal *= np.maximum(1.0 + texture_amp.astype(np.float32)[labels] * texture, 0.2)
    if rng.random() < config.rim_chance:
        edge = np.clip((f - 0.65) / 0.35, 0, 1)
        signal *= 1.0 + draw("rim") * edge * edge * (3 - 2 * edge)
    cores = inside & regular[labels] & (f < 0.55)
    count = int(rng.poisson(draw("nucleoli") * n))
    sigma_nucleolus = median * rng.uniform(0.12, 0.22) * lateral
    dark = _splat(cores, count, sigma_nucleolus, rng, config.nucleolus_depth)
    signal *= np.maximum(1.0 - dark, 0.3)
    if rng.random() < config.chromocenter_chance:
        foci = _splat(inside & regular[labels], int(rng.poisson(rng.uniform(2, 8) * n)),
                      rng.uniform(0.6, 1.3) * lateral, rng, (0.4, 1.2))
        signal += foci * bright.astype(np.float32)[labels]
    spots = int(rng.poisson(draw("debris") * labels.size))
    signal += _splat(~inside, spots, rng.uniform(0.5, 1.2) * lateral, rng, (0.3, 3.0))

    psf = draw("psf_sigma") * lateral
    if ndim == 3:
        psf[0] *= draw("axial_ratio")
    defocus = draw("defocus_fraction") if ndim == 2 else 0.0
    if defocus > 0 and n:
        weight = (rng.random(n + 1) < defocus) * rng.uniform(0.4, 1.0, size=n + 1)
        weight[0] = 0.0
        blurry = _coarse_blur(signal, np.full(ndim, median * 0.35) * lateral)
        mix = ndi.gaussian_filter(weight.astype(np.float32)[labels], median * 0.3 * lateral)
        signal = signal + mix * (blurry - signal)
    image = ndi.gaussian_filter(signal, psf)
    haze = draw("haze")
    if haze > 0:
        image += haze * _coarse_blur(signal, draw("haze_scale") * median * lateral)
    image += draw("background")
    image *= _illumination(grid, draw("illumination"), draw("attenuation"), rng)

    photons, read_noise = draw("photons", log=True), draw("read_noise")
    gain = min(draw("gain"), 30000.0 / photons)
    electrons = rng.poisson(np.maximum(image, 0) * photons).astype(np.float32)
    adu = electrons * gain + draw("offset") + rng.normal(0, read_noise * gain, size=grid).astype(np.float32)
    if n and rng.random() < config.saturation_chance:
        adu = np.minimum(adu, np.percentile(adu[inside], rng.uniform(90, 99.5)))
    return np.clip(np.round(adu), 0, 65535).astype(np.uint16), labels


def nuclei(shape: tuple[int, ...] = (256, 256), count: int = 40, radius: tuple[float, float] = (6.0, 12.0),
           seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` nuclei with radii mostly within ``radius``: image (uint16) and labels (uint32).

    A :func:`render_nuclei` image whose photon count gives a relative shot noise of about
    ``noise`` at a typical nucleus (``noise=0``: almost noise-free). Fewer than ``count``
    nuclei appear when they do not fit, or fall mostly outside the image.
    """
    lo, hi = float(radius[0]), float(radius[1])
    if not 0 < lo <= hi:
        raise ValueError(f"radius: expected 0 < low <= high, got {radius!r}")
    if noise < 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    middle = math.sqrt(lo * hi)
    photons = 1e5 if noise == 0 else min(1.0 / noise**2, 1e5)
    config = NucleiConfig(count=int(count), radius=(middle, middle),
                          radius_spread=(math.log(hi / lo) / 4,) * 2,
                          photons=(photons, photons), read_noise=(0.0, 2.0) if noise else (0.0, 0.0))
    return render_nuclei(shape, config, rng=seed)


def sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Built-in samples: ``"nuclei-2d"`` (256x256) and ``"nuclei-3d"`` (32x128x128)."""
    if name == "nuclei-2d":
        return nuclei((256, 256), count=60, radius=(7.0, 13.0), seed=1)
    if name == "nuclei-3d":
        return nuclei((32, 128, 128), count=40, radius=(5.0, 10.0), seed=2)
    raise ValueError(f"unknown sample {name!r}; expected 'nuclei-2d' or 'nuclei-3d'")
