"""Settings as frozen dataclasses, and the progress events of long-running work.

Every config validates itself on construction and round-trips through plain
JSON-compatible dicts (``to_dict`` / ``from_dict``), which is how model files
store them.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

Padding = Literal["valid", "same"]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def config_or_options(cls, config: Any, options: dict[str, Any], where: str):
    """``config`` (an instance of ``cls``) or ``cls(**options)``; giving both is an error, never a silent drop."""
    if config is None:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            close = {u: difflib.get_close_matches(u, names, 1) for u in unknown}
            hints = "; ".join(f"{u!r}: did you mean {m[0]!r}?" for u, m in close.items() if m)
            raise TypeError(f"{where}() got unknown option(s) {', '.join(map(repr, unknown))}"
                            f"{' (' + hints + ')' if hints else ''}; its options are {', '.join(sorted(names))}")
        return cls(**options)
    if not isinstance(config, cls):
        raise TypeError(f"{where}: config must be a {cls.__name__}, got {type(config).__name__}")
    if options:
        raise TypeError(f"{where}: give either config= or the options {sorted(options)}, not both "
                        f"(for both, use dataclasses.replace(config, ...))")
    return config


def _from_dict(cls, data: dict[str, Any]):
    """Build ``cls`` from a dict, naming unknown keys instead of ignoring them."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"{cls.__name__}: unknown keys {unknown}; expected a subset of {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net (Ronneberger et al., 2015).

    ``depth`` is the number of 2x max-poolings; ``base_channels`` doubles at each
    level. ``padding="valid"`` is the paper's unpadded convolution (output smaller
    than input), ``"same"`` keeps the spatial size. ``bilinear_init`` initialises
    the 2x2 transposed convolutions to (bi/tri)linear interpolation as FCN does.
    """

    ndim: int = 2
    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: Padding = "valid"
    batch_norm: bool = False
    dropout: float = 0.0
    bilinear_init: bool = False

    def __post_init__(self) -> None:
        _check(self.ndim in (2, 3), f"ndim must be 2 or 3, got {self.ndim!r}")
        _check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels!r}")
        _check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes!r}")
        _check(0 <= self.depth <= 8, f"depth must be in 0..8, got {self.depth!r}")
        _check(self.base_channels >= 1, f"base_channels must be >= 1, got {self.base_channels!r}")
        _check(self.padding in ("valid", "same"), f"padding must be 'valid' or 'same', got {self.padding!r}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class NormalizationConfig:
    """How raw intensities become network input; stored with the model.

    ``"percentile"``: ``(x - p_low) / (p_high - p_low)`` with percentiles of the
    image (per channel). For arrays larger than ``max_samples`` elements the
    percentiles come from a deterministic subsample: whole chunks/planes spread
    evenly through the array (see :func:`tiled_unet.normalize.intensity_range`).
    ``"fixed"``: ``(x - offset) / scale`` with the given numbers.
    ``"none"``: the values are used as they are (cast to float32).
    """

    mode: Literal["percentile", "fixed", "none"] = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0
    max_samples: int = 1 << 22

    def __post_init__(self) -> None:
        _check(self.mode in ("percentile", "fixed", "none"),
               f"normalization mode must be 'percentile', 'fixed' or 'none', got {self.mode!r}")
        _check(0.0 <= self.low < self.high <= 100.0,
               f"percentiles must satisfy 0 <= low < high <= 100, got low={self.low}, high={self.high}")
        _check(self.scale != 0, "normalization scale must not be 0")
        _check(self.max_samples >= 1000, f"max_samples must be >= 1000, got {self.max_samples}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class InstanceConfig:
    """How class probabilities become instance labels (see :mod:`tiled_unet.instances`).

    Foreground: ``1 - p(background) >= foreground_threshold``. Seeds: connected regions
    of ``p(interior) >= seed_threshold`` with at least ``min_seed_size`` pixels. With
    ``seed_low_threshold`` (0: off), seeds are the regions of ``p(interior) >=
    seed_low_threshold`` instead, and such a region is split into its regions at
    ``seed_threshold`` only where it holds two or more of at least ``max(min_seed_size,
    min_size)`` pixels (a textured cell stays one seed, touching cells part). Seeds grow
    through the foreground one pixel layer per step for at most ``max_growth`` steps
    (a watershed on the geodesic distance to the seeds). Foreground regions that no
    seed reaches become cells of their own when ``keep_unseeded``. Cells smaller than
    ``min_size`` pixels are removed; background enclosed by one cell is filled when
    ``fill_holes``.
    """

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.6
    seed_low_threshold: float = 0.0
    min_seed_size: int = 8
    max_growth: int = 6
    min_size: int = 16
    keep_unseeded: bool = True
    fill_holes: bool = True

    def __post_init__(self) -> None:
        for name in ("foreground_threshold", "seed_threshold"):
            value = getattr(self, name)
            _check(0.0 < value < 1.0, f"{name} must be between 0 and 1 (exclusive), got {value!r}")
        low = self.seed_low_threshold
        _check(isinstance(low, (int, float)) and not isinstance(low, bool)
               and (low == 0 or 0.0 < low < self.seed_threshold),
               f"seed_low_threshold must be 0 (off) or between 0 and seed_threshold "
               f"({self.seed_threshold}), got {low!r}")
        for name in ("min_seed_size", "max_growth", "min_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                   f"{name} must be an integer >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ModelConfig:
    """Everything a model file says about a network besides its weights."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    class_names: tuple[str, ...] = ()
    name: str = "unnamed"
    description: str = ""
    voxel_size: tuple[float, ...] = ()
    axes: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    #: median diameter of the training cells in pixels of the model's grid (0: not known);
    #: see :mod:`tiled_unet.cellsize`
    diameter: float = 0.0
    #: 10th and 90th percentile of the training cells' diameters (empty: not known); images whose
    #: cells lie in this range are not rescaled
    diameter_range: tuple[float, ...] = ()
    #: where cells outside ``diameter_range`` are brought: ``"range"`` (its nearest end) or
    #: ``"median"`` (``diameter``; for models unreliable near the ends of their range)
    rescale_to: str = "range"

    def __post_init__(self) -> None:
        if self.class_names:
            _check(len(self.class_names) == self.unet.num_classes,
                   f"class_names has {len(self.class_names)} entries but the U-Net has "
                   f"{self.unet.num_classes} classes")
        if self.voxel_size:
            _check(len(self.voxel_size) == self.unet.ndim and all(float(v) > 0 for v in self.voxel_size),
                   f"voxel_size must hold {self.unet.ndim} positive sizes, got {self.voxel_size!r}")
        _check(isinstance(self.diameter, (int, float)) and self.diameter >= 0,
               f"diameter must be a number >= 0 (0: not known), got {self.diameter!r}")
        _check(len(self.diameter_range) in (0, 2) and all(d > 0 for d in self.diameter_range),
               f"diameter_range must be empty or (low, high), got {self.diameter_range!r}")
        _check(self.rescale_to in ("range", "median"),
               f"rescale_to must be 'range' or 'median', got {self.rescale_to!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "unet": self.unet.to_dict(),
            "normalization": self.normalization.to_dict(),
            "instances": self.instances.to_dict(),
            "class_names": list(self.class_names),
            "name": self.name,
            "description": self.description,
            "voxel_size": list(self.voxel_size),
            "axes": self.axes,
            "training": dict(self.training),
            "diameter": float(self.diameter),
            "diameter_range": [float(d) for d in self.diameter_range],
            "rescale_to": self.rescale_to,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        unet = UNetConfig.from_dict(data.pop("unet", {}))
        norm = NormalizationConfig.from_dict(data.pop("normalization", {}))
        inst = InstanceConfig.from_dict(data.pop("instances", {}))
        return _from_dict(cls, {**data, "unet": unet, "normalization": norm, "instances": inst})


@dataclass(frozen=True)
class TileProgress:
    """Yielded by the inference engine after each batch of tiles is written."""

    done: int
    total: int
    frame: int = 0
    frames: int = 1
    note: str = ""  # a one-off message, e.g. the OpenVINO compile time

    @property
    def fraction(self) -> float:
        per_frame = self.done / self.total if self.total else 1.0
        return (self.frame + per_frame) / self.frames


@dataclass(frozen=True)
class LabelProgress:
    """Yielded while labelling: ``done`` of ``total`` blocks (or frames) of one ``stage``."""

    done: int
    total: int
    stage: str = "labels"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class InferenceConfig:
    """Options of :func:`tiled_unet.predict` (see the README for each one)."""

    tile_shape: str | tuple[int, ...] = "auto"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 1
    halo: int | None = None
    memory_budget: int | None = None
    channels_last: bool | str = "auto"
    prefetch: int = 2
    output_dtype: str = "float32"
    backend: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.tile_shape, str):
            _check(self.tile_shape == "auto", f"tile_shape must be 'auto' or a tuple of ints, got {self.tile_shape!r}")
        else:
            _check(all(int(t) >= 1 for t in self.tile_shape),
                   f"tile_shape must hold positive sizes, got {self.tile_shape!r}")
        _check(int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size!r}")
        _check(self.halo is None or int(self.halo) >= 0, f"halo must be >= 0 or None, got {self.halo!r}")
        _check(self.channels_last in (True, False, "auto"),
               f"channels_last must be True, False or 'auto', got {self.channels_last!r}")
        _check(int(self.prefetch) >= 0, f"prefetch must be >= 0, got {self.prefetch!r}")
        _check(self.backend in ("auto", "torch", "openvino"),
               f"backend must be 'auto', 'torch' or 'openvino', got {self.backend!r}")
        _check(self.output_dtype in ("float32", "float16"),
               f"output_dtype must be 'float32' or 'float16', got {self.output_dtype!r}")
