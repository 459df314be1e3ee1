"""Touching cells are separated: probabilities derived from true labels, degraded, then labelled."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from tiled_unet.config import InstanceConfig
from tiled_unet.instances.memory import instances_from_probabilities
from tiled_unet.metrics import match
from tiled_unet.synthetic import touching_cells
from tiled_unet.training.targets import instance_targets


def degraded_probabilities(labels: np.ndarray, blur: float, noise: float, seed: int) -> np.ndarray:
    """One-hot background/interior/boundary targets, blurred, with Gaussian noise, renormalised."""
    targets = instance_targets(labels)
    onehot = np.stack([(targets == k).astype(np.float32) for k in range(3)])
    probs = np.stack([ndi.gaussian_filter(c, blur) for c in onehot])
    probs += np.random.default_rng(seed).normal(0, noise, probs.shape).astype(np.float32)
    probs = np.clip(probs, 1e-3, None)
    return probs / probs.sum(0)


@pytest.mark.parametrize("shape, clusters, volumes", [((320, 320), 12, 4), ((64, 128, 128), 5, 5)],
                         ids=["2d", "3d"])
def test_touching_cells_are_separated(shape, clusters, volumes):
    stats = []
    for seed in range(volumes):
        labels = touching_cells(shape, clusters, cells_per_cluster=(2, 6), seed=seed)
        probs = degraded_probabilities(labels, blur=1.5, noise=0.15, seed=seed)
        stats.append(match(instances_from_probabilities(probs, InstanceConfig()), labels, 0.5))
    cells = sum(s.n_true for s in stats)
    tp, fp, fn = (sum(getattr(s, k) for s in stats) for k in ("tp", "fp", "fn"))
    errors = sum(s.merges + s.splits for s in stats)
    assert cells >= 80
    assert tp / (tp + fp + fn) >= 0.95, (tp, fp, fn)
    assert errors < 0.02 * cells, (errors, cells)


def test_without_the_boundary_class_touching_cells_merge():
    """The same probabilities with the boundary class folded into the interior merge clumps,
    so the separation above comes from the boundary class."""
    labels = touching_cells((320, 320), 12, seed=0)
    probs = degraded_probabilities(labels, blur=1.5, noise=0.15, seed=0)
    folded = np.stack([probs[0], probs[1] + probs[2], np.zeros_like(probs[2])])
    stats = match(instances_from_probabilities(folded, InstanceConfig()), labels, 0.5)
    assert stats.merges > 0.3 * stats.n_true
