"""Training settings (:class:`TrainConfig`) and progress events (:class:`TrainProgress`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import _check, _from_dict
from .augment import AugmentConfig
from .datasets import WORKER_TYPES

#: which weights training returns: the epoch with the best validation AP, or the last completed epoch
KEEP_CHOICES = ("best", "last")
#: where training patches are cut, resampled and augmented: CPU (numpy/scipy, in workers) or the training device
AUGMENT_PLACES = ("cpu", "device")


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`tiled_unet.train` (see the README for each one)."""

    epochs: int = 30
    steps_per_epoch: int = 50
    batch_size: int = 4
    patch_shape: tuple[int, ...] = ()
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    weight_decay: float = 1e-5
    w0: float = 10.0
    sigma: float = 5.0
    boundary_width: int = 2
    foreground_fraction: float = 0.7
    validation_fraction: float = 0.2
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    ignore_label: int | None = None
    tune_instances: bool = True
    #: validation data with fewer cells than this keep the starting model's instance parameters
    #: (one cell then moves AP@0.5 by more than 0.02: a grid search on them picks noise)
    min_tuning_cells: int = 50
    workers: int = 0
    worker_type: str = "threads"
    keep: str = "best"
    augment_on: str = "cpu"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "boundary_width", "patience"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        _check(isinstance(self.min_tuning_cells, int) and self.min_tuning_cells >= 0,
               f"min_tuning_cells must be an integer >= 0, got {self.min_tuning_cells!r}")
        _check(isinstance(self.workers, int) and self.workers >= 0,
               f"workers must be an integer >= 0, got {self.workers!r}")
        _check(self.worker_type in WORKER_TYPES,
               f"worker_type must be 'threads' or 'processes', got {self.worker_type!r}")
        _check(self.keep in KEEP_CHOICES, f"keep must be 'best' or 'last', got {self.keep!r}")
        _check(self.augment_on in AUGMENT_PLACES, f"augment_on must be 'cpu' or 'device', got {self.augment_on!r}")
        _check(self.augment_on == "cpu" or self.workers == 0,
               f"workers={self.workers} sample patches on the CPU, but augment_on='device' makes them on the "
               f"training device: set workers=0 (or augment_on='cpu')")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        _check(self.schedule in ("cosine", "constant"),
               f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _check(self.w0 >= 0 and self.sigma > 0, f"need w0 >= 0 and sigma > 0, got w0={self.w0}, sigma={self.sigma}")
        _check(0 <= self.foreground_fraction <= 1, f"foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        _check(0 <= self.validation_fraction < 1, f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        _check(all(int(p) >= 1 for p in self.patch_shape), f"patch_shape must hold positive sizes, got {self.patch_shape}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"] = self.augment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        aug = AugmentConfig.from_dict(data.pop("augment", {}))
        return _from_dict(cls, {**data, "augment": aug})


@dataclass(frozen=True)
class TrainProgress:
    """A training event: ``kind`` is ``"step"`` (after each optimiser step) or ``"epoch"``."""

    kind: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    val_ap: float | None = None
    best_ap: float | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    val_loss: float | None = None

    @property
    def fraction(self) -> float:
        return (self.epoch - 1 + self.step / self.steps) / self.epochs
