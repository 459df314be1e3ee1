"""Validation during training: which epoch to keep, and the instance thresholds tuned at the end.

Epochs are compared by AP@0.5 on the validation images when they hold at least
``min_cells`` cells. With fewer (the strip of one annotated crop holds about a dozen), one
cell moves AP@0.5 by more than 0.02 and the choice would follow noise; the epochs are then
compared by the weighted cross-entropy of the validation pixels (the training loss, on tens
of thousands of pixels), and the instance thresholds are not tuned.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import InstanceConfig
from ..engine.predict import predict
from ..instances.memory import instances_from_probabilities
from ..metrics import match
from ..model import UNet
from .datasets import Example
from .loss import weighted_cross_entropy

SEED_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
FOREGROUND_THRESHOLDS = (0.4, 0.5, 0.6)


def validation_probabilities(net: UNet, pairs: list, device: torch.device,
                             precision: str = "float32") -> list[np.ndarray]:
    """Class probabilities ``(K, *spatial)`` of each image of ``pairs`` (whole-image inference)."""
    axes = "C" + ("YX" if net.config.ndim == 2 else "ZYX")
    return [predict(raw, net, device=str(device), axes=axes, precision=precision, diameter="off") for raw, _ in pairs]


def mean_ap(probs: list[np.ndarray], pairs: list, config: InstanceConfig, class_names: Sequence[str]) -> float:
    """Mean AP@0.5 over the images of ``pairs`` of the instances made from ``probs`` with ``config``."""
    return float(np.mean([match(instances_from_probabilities(p, config, class_names), labels, 0.5).ap
                          for p, (_, labels) in zip(probs, pairs)]))


def count_cells(pairs: list) -> int:
    return sum(int(np.count_nonzero(np.unique(labels))) for _, labels in pairs)


@dataclass
class Validation:
    """The validation images: ``pairs`` of (raw image, labels with unannotated pixels 0), their
    prepared ``examples`` (targets and weight maps), and ``min_cells`` for comparing by AP."""

    pairs: list
    examples: list[Example]
    min_cells: int

    def __post_init__(self) -> None:
        self.cells = count_cells(self.pairs)

    @property
    def by_loss(self) -> bool:
        """Whether epochs are compared by the validation loss (too few cells for AP@0.5)."""
        return self.cells < self.min_cells

    def measure(self, net: UNet, device: torch.device) -> tuple[float | None, float | None]:
        """``(AP@0.5, weighted cross-entropy)`` of ``net`` on the validation images (None, None without any)."""
        if not self.pairs:
            return None, None
        probs = validation_probabilities(net, self.pairs, device)
        ap = mean_ap(probs, self.pairs, net.model_config.instances, net.model_config.class_names)
        total = pixels = 0.0
        for p, example in zip(probs, self.examples):
            logits = torch.from_numpy(np.log(np.clip(p, 1e-7, 1.0)).astype(np.float32))[None]
            annotated = float(np.count_nonzero(example.targets != 255))
            if annotated:
                loss = weighted_cross_entropy(logits, torch.from_numpy(example.targets.astype(np.int64))[None],
                                              torch.from_numpy(example.weights)[None])
                total, pixels = total + float(loss) * annotated, pixels + annotated
        return ap, (total / pixels if pixels else None)

    def score(self, ap: float | None, loss: float | None) -> float | None:
        """The figure epochs are compared by (higher is better)."""
        if self.by_loss:
            return None if loss is None else -loss
        return ap


def tune_instance_thresholds(net: UNet, pairs: list, device: torch.device | str = "cpu",
                             grid: dict[str, Sequence[Any]] | None = None,
                             precision: str = "float32") -> tuple[InstanceConfig, float]:
    """The instance parameters with the best mean AP@0.5 on ``pairs`` of (image ``(C, *spatial)``,
    labels), by grid search over ``grid`` ({InstanceConfig field: values}; default: the seed and
    foreground thresholds, and for a model with a two-level seed rule its low threshold or none);
    combinations that are not a valid InstanceConfig (a low seed threshold not below the seed
    threshold) are skipped; other instance parameters stay the model's."""
    current = net.model_config.instances
    if grid is None:
        grid = {"seed_threshold": SEED_THRESHOLDS, "foreground_threshold": FOREGROUND_THRESHOLDS}
        if current.seed_low_threshold:
            grid["seed_low_threshold"] = (0.0, current.seed_low_threshold)
    probs = validation_probabilities(net, pairs, torch.device(device), precision)
    names = net.model_config.class_names
    best = (-1.0, current)
    for values in itertools.product(*grid.values()):
        try:
            config = dataclasses.replace(current, **dict(zip(grid, values)))
        except ValueError:
            continue
        ap = mean_ap(probs, pairs, config, names)
        if ap > best[0]:
            best = (ap, config)
    return best[1], best[0]


def tune_instances(net: UNet, val_pairs: list, device: torch.device, min_cells: int) -> dict[str, Any]:
    """Tune ``net``'s instance thresholds on ``val_pairs`` (at least ``min_cells`` cells, else they
    are kept); returns the record stored as the training summary's ``tuned_instances``."""
    cells = count_cells(val_pairs)
    if cells < min_cells:
        return {"skipped": f"the validation data hold {cells} cells, fewer than min_tuning_cells={min_cells}, so "
                           f"the starting model's instance parameters are kept; annotate more cells (or more "
                           f"images) to have them tuned"}
    instances, tuned_ap = tune_instance_thresholds(net, val_pairs, device)
    net.model_config = dataclasses.replace(net.model_config, instances=instances)
    return {"seed_threshold": instances.seed_threshold, "seed_low_threshold": instances.seed_low_threshold,
            "foreground_threshold": instances.foreground_threshold, "val_ap50": tuned_ap}
