"""U-Net weight maps and the weighted cross-entropy, against hand-computed and brute-force values."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from tiled_unet.training.loss import (BORDER_CUTOFF, border_weights, class_balance_weights, weight_map,
                             weighted_cross_entropy)
from tiled_unet.synthetic import nuclei


def brute_force_border(labels: np.ndarray, w0: float, sigma: float, spacing=None) -> np.ndarray:
    """Full-image distance transforms of every cell, two smallest per pixel."""
    cells = [c for c in np.unique(labels) if c != 0]
    distances = np.sort(np.stack([ndi.distance_transform_edt(labels != c, sampling=spacing) for c in cells]), 0)
    return w0 * np.exp(-(distances[0] + distances[1]) ** 2 / (2 * sigma**2))


def blob_labels(shape, seed: int, smooth: float = 2.0) -> np.ndarray:
    """Random connected blobs (some touching after a dilation), labelled 1..N."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), smooth)
    labels, _ = ndi.label(field > 0.5 * field.std())
    return ndi.grey_dilation(labels, size=(3,) * len(shape))


# ---------------------------------------------------------------- class balance

def test_class_balance_by_hand():
    targets = np.array([[0, 0, 0, 1], [1, 2, 255, 0]], np.uint8)
    # 7 annotated pixels: 4 background, 2 interior, 1 boundary; 3 classes present
    expected = np.array([[7 / 12, 7 / 12, 7 / 12, 7 / 6], [7 / 6, 7 / 3, 0, 7 / 12]], np.float32)
    weights = class_balance_weights(targets, 3)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert math.isclose(weights.sum(), 7.0, rel_tol=1e-6)  # mean 1 over annotated pixels


def test_class_balance_absent_class_and_two_classes():
    targets = np.array([0, 0, 0, 2, 255], np.int64)  # class 1 absent from 3 classes
    np.testing.assert_allclose(class_balance_weights(targets, 3), [4 / 6, 4 / 6, 4 / 6, 2.0, 0.0], rtol=1e-6)
    binary = np.array([[0, 1, 1, 1]], np.uint8)
    np.testing.assert_allclose(class_balance_weights(binary, 2), [[2.0, 2 / 3, 2 / 3, 2 / 3]], rtol=1e-6)
    np.testing.assert_array_equal(class_balance_weights(np.full((2, 2), 255, np.uint8), 3), 0)
    for dtype in (np.uint64, np.int16, np.uint16):
        np.testing.assert_allclose(class_balance_weights(targets.astype(dtype), 3),
                                   class_balance_weights(targets, 3))


@pytest.mark.parametrize("targets, num_classes, error", [
    (np.array([0, 3]), 3, ValueError),
    (np.array([0, -1]), 3, ValueError),
    (np.array([0.0, 1.0]), 3, TypeError),
    (np.array([0, 1]), 0, ValueError),
    (np.array([0, 1]), 2.0, TypeError),
    (np.array([0, 256]), 3, ValueError),
    (np.array([0, 254]), 3, ValueError),
])
def test_class_balance_errors(targets, num_classes, error):
    with pytest.raises(error, match="targets|num_classes"):
        class_balance_weights(targets, num_classes)


# ---------------------------------------------------------------- border term

# cell 1 at columns 0-1, cell 2 at columns 6-7; d1 + d2 per column, counted by hand
ROW = np.array([1, 1, 0, 0, 0, 0, 2, 2, 0, 0])
ROW_SUMS = np.array([6, 5, 5, 5, 5, 5, 5, 6, 8, 10], float)


def test_border_weights_by_hand():
    weights = border_weights(ROW[None], w0=10.0, sigma=5.0)
    assert weights.shape == (1, 10) and weights.dtype == np.float32
    np.testing.assert_allclose(weights[0], 10.0 * np.exp(-ROW_SUMS**2 / 50.0), rtol=1e-5)


def test_touching_cells_peak_at_the_contact():
    row = np.array([[1, 1, 1, 2, 2, 2]])
    # inside cell 1 at column 2 the nearest pixel of cell 2 is 1 px away
    expected = 3.0 * np.exp(-np.array([3, 2, 1, 1, 2, 3]) ** 2 / (2 * 4.0))
    np.testing.assert_allclose(border_weights(row, w0=3.0, sigma=2.0)[0], expected, rtol=1e-5)


def test_spacing_scales_distances_along_its_axis():
    column = ROW[:, None]
    np.testing.assert_allclose(border_weights(column, spacing=(2.0, 1.0))[:, 0],
                               10.0 * np.exp(-(2 * ROW_SUMS) ** 2 / 50.0), rtol=1e-5)
    # the spacing of an axis along which nothing changes has no effect
    np.testing.assert_allclose(border_weights(column, spacing=(1.0, 7.0))[:, 0],
                               10.0 * np.exp(-ROW_SUMS**2 / 50.0), rtol=1e-5)
    # sigma in physical units: halving the voxel size and sigma together changes nothing
    np.testing.assert_allclose(border_weights(column, sigma=2.5, spacing=(0.5, 0.5)),
                               border_weights(column, sigma=5.0), rtol=1e-5)


def test_fewer_than_two_cells_give_zero():
    single = np.zeros((20, 20), np.int32)
    single[5:9, 5:9] = 3
    np.testing.assert_array_equal(border_weights(single), 0)
    np.testing.assert_array_equal(border_weights(np.zeros((4, 5), np.uint8)), 0)
    assert border_weights(np.zeros((0, 5), np.uint8)).shape == (0, 5)


@pytest.mark.parametrize("seed, sigma, spacing", [(0, 5.0, None), (1, 3.0, (1.0, 2.5)), (2, 8.0, (0.7, 0.7))])
def test_cutoff_equals_brute_force_2d(seed, sigma, spacing):
    _, labels = nuclei((72, 80), count=14, radius=(4.0, 9.0), seed=seed)
    expected = brute_force_border(labels, 10.0, sigma, spacing)
    np.testing.assert_allclose(border_weights(labels, 10.0, sigma, spacing), expected, atol=BORDER_CUTOFF * 10.0)


def test_cutoff_equals_brute_force_3d_anisotropic():
    labels = blob_labels((12, 40, 44), seed=3)
    assert len(np.unique(labels)) > 5
    spacing = (2.0, 0.5, 0.5)
    expected = brute_force_border(labels, 7.0, 2.0, spacing)
    assert np.abs(expected - brute_force_border(labels, 7.0, 2.0)).max() > 1  # spacing matters here
    np.testing.assert_allclose(border_weights(labels, 7.0, 2.0, spacing), expected, atol=BORDER_CUTOFF * 7.0)


def test_label_values_do_not_matter():
    _, labels = nuclei((48, 48), count=8, seed=4)
    sparse = np.where(labels > 0, labels.astype(np.int64) * 1_000_003 + 7, 0)
    np.testing.assert_allclose(border_weights(sparse), border_weights(labels), rtol=1e-6)


def test_ignore_pixels_get_zero():
    _, labels = nuclei((40, 40), count=6, seed=5)
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :13] = True
    full = border_weights(labels)
    masked = border_weights(labels, ignore=ignore)
    np.testing.assert_array_equal(masked[ignore], 0)
    np.testing.assert_array_equal(masked[~ignore], full[~ignore])
    assert full[ignore].max() > 0


def test_many_cells_are_fast():
    labels = blob_labels((512, 512), seed=6, smooth=3.0)
    assert labels.max() > 100
    start = time.perf_counter()
    border_weights(labels)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("kwargs, error", [
    ({"w0": -1.0}, ValueError), ({"sigma": 0.0}, ValueError), ({"sigma": float("nan")}, ValueError),
    ({"spacing": (1.0,)}, ValueError), ({"spacing": (1.0, -2.0)}, ValueError), ({"spacing": "ab"}, TypeError),
    ({"ignore": np.zeros((3, 3), bool)}, ValueError), ({"ignore": np.zeros((4, 4))}, TypeError),
])
def test_border_weights_errors(kwargs, error):
    with pytest.raises(error):
        border_weights(np.eye(4, dtype=np.uint8), **kwargs)


# ---------------------------------------------------------------- weight map

def test_weight_map_is_class_balance_plus_border():
    _, labels = nuclei((40, 44), count=7, seed=7)
    targets = np.where(labels > 0, 1, 0).astype(np.uint8)
    targets[30:, :] = 255
    weights = weight_map(labels, targets, 2, w0=10.0, sigma=4.0)
    annotated = targets != 255
    expected = class_balance_weights(targets, 2) + brute_force_border(labels, 10.0, 4.0)
    np.testing.assert_allclose(weights[annotated], expected[annotated], atol=1e-3)
    np.testing.assert_array_equal(weights[~annotated], 0)
    np.testing.assert_array_equal(weight_map(labels, targets, 2, w0=0.0), class_balance_weights(targets, 2))


def test_weight_map_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        weight_map(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), 3)


# ---------------------------------------------------------------- weighted cross-entropy

def _batch(shape=(2, 3, 6, 7), seed=0, ignore_fraction=0.3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator) * 3
    spatial = (shape[0], *shape[2:])
    targets = torch.randint(0, shape[1], spatial, generator=generator, dtype=torch.uint8)
    targets[torch.rand(spatial, generator=generator) < ignore_fraction] = 255
    weights = torch.rand(spatial, generator=generator) * 5
    return logits, targets, weights


def _reference(logits, targets, weights):
    per_pixel = F.cross_entropy(logits, targets.long(), reduction="none", ignore_index=255)
    annotated = targets != 255
    return (per_pixel * weights)[annotated].sum() / annotated.sum()


@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (1, 2, 3, 4, 5), (3, 4, 9)])
def test_loss_equals_weighted_torch_cross_entropy(shape):
    logits, targets, weights = _batch(shape)
    logits.requires_grad_(True)
    loss = weighted_cross_entropy(logits, targets, weights)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    (grad,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().clone().requires_grad_(True)
    reference = _reference(reference_logits, targets, weights)
    (reference_grad,) = torch.autograd.grad(reference, reference_logits)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)
    assert grad.abs().sum() > 0


def test_ignored_pixels_do_not_matter():
    logits, targets, weights = _batch()
    ignored = (targets == 255).unsqueeze(1).expand_as(logits)
    changed_logits = torch.where(ignored, logits + 100 * torch.randn_like(logits), logits)
    changed_weights = torch.where(targets == 255, torch.full_like(weights, float("nan")), weights)
    loss = weighted_cross_entropy(logits, targets, weights)
    torch.testing.assert_close(weighted_cross_entropy(changed_logits, targets, changed_weights), loss)
    logits.requires_grad_(True)
    weighted_cross_entropy(logits, targets, weights).backward()
    assert logits.grad[ignored].abs().max() == 0
    assert logits.grad[~ignored].abs().max() > 0


def test_unweighted_loss_and_numpy_inputs():
    logits, targets, _ = _batch()
    expected = F.cross_entropy(logits, targets.long(), ignore_index=255)  # mean over annotated pixels
    torch.testing.assert_close(weighted_cross_entropy(logits, targets, None), expected)
    torch.testing.assert_close(weighted_cross_entropy(logits, targets.numpy(), np.ones(targets.shape, np.float32)),
                               expected)


def test_nothing_annotated_gives_a_differentiable_zero():
    logits, targets, weights = _batch()
    targets[:] = 255
    logits.requires_grad_(True)
    loss = weighted_cross_entropy(logits, targets, weights)
    assert loss.item() == 0 and loss.grad_fn is not None
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_loss_under_autocast_is_float32():
    logits, targets, weights = _batch()
    low = logits.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = weighted_cross_entropy(low, targets, weights)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, _reference(low.float(), targets, weights))


@pytest.mark.parametrize("change, error, match", [
    (lambda lg, t, w: (lg, t[:, :-1], w), ValueError, "targets must have shape"),
    (lambda lg, t, w: (lg, t, w[:1]), ValueError, "weights must have shape"),
    (lambda lg, t, w: (lg, t.float(), w), TypeError, "integer"),
    (lambda lg, t, w: (lg, torch.where(t == 255, 3, t), w), ValueError, "classes 0..2"),
    (lambda lg, t, w: (lg[0, 0], t, w), ValueError, "shape"),
    (lambda lg, t, w: (lg.numpy(), t, w), TypeError, "torch.Tensor"),
    (lambda lg, t, w: (lg, t, [1.0]), TypeError, "weights"),
])
def test_loss_errors(change, error, match):
    with pytest.raises(error, match=match):
        weighted_cross_entropy(*change(*_batch()))
