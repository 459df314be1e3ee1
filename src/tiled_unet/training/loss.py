"""U-Net weight maps and the pixel-wise weighted cross-entropy (Ronneberger et al., 2015).

The weight of a pixel ``x`` is

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies (:func:`class_balance_weights`); the second
term (:func:`border_weights`) is large where two cells come close, so that the
network learns the thin gaps and boundaries between touching cells. ``d1`` and
``d2`` are the distances to the nearest and second nearest cell. Targets use
255 for unannotated pixels, which get weight 0 and contribute nothing to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from .targets import IGNORE, check_labels

#: the border term is below ``BORDER_CUTOFF * w0`` where ``d1 + d2`` exceeds the cutoff distance
BORDER_CUTOFF = 1e-4


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an integer, got {type(num_classes).__name__}")
    if not 1 <= num_classes < IGNORE:
        raise ValueError(f"num_classes must be in 1..{IGNORE - 1}, got {num_classes}")
    return int(num_classes)


def _value_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """How often each value 0..255 occurs in ``targets``, after checking they are classes or ignore."""
    targets = np.asarray(targets)
    if targets.dtype == bool or targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array (class indices, {IGNORE} = ignore), "
                        f"got dtype {targets.dtype}")
    flat = targets.ravel()
    if flat.size and (flat.min() < 0 or flat.max() > IGNORE):
        outside = np.unique(flat[(flat < 0) | (flat > IGNORE)])
        raise ValueError(f"targets must hold classes 0..{num_classes - 1} or {IGNORE} (ignore), "
                         f"got values {outside[:10].tolist()}")
    counts = np.bincount(flat.astype(np.intp, copy=False), minlength=IGNORE + 1)
    bad = np.flatnonzero(counts[num_classes:IGNORE]) + num_classes
    if bad.size:
        raise ValueError(f"targets must hold classes 0..{num_classes - 1} or {IGNORE} (ignore), "
                         f"got values {bad[:10].tolist()}")
    return counts


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(f"spacing must be a sequence of {ndim} numbers (voxel size per axis), "
                        f"got {spacing!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per axis ({ndim}), got {len(values)}: {spacing!r}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite, got {spacing!r}")
    return values


def _check_border_parameters(w0: float, sigma: float) -> tuple[float, float]:
    w0, sigma = float(w0), float(sigma)
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(f"w0 must be a finite number >= 0, got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return w0, sigma


def class_balance_weights(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel weights ``w_c`` that give every present class the same total weight.

    With ``n`` annotated pixels (targets != 255), ``n_k`` pixels of class ``k`` and
    ``K'`` classes present (``n_k > 0``), a pixel of class ``k`` gets
    ``w_c = n / (K' * n_k)``. Each present class then sums to ``n / K'`` and the mean
    weight over annotated pixels is 1. Ignore pixels get 0.
    """
    num_classes = _check_num_classes(num_classes)
    counts = _value_counts(targets, num_classes)[:num_classes]
    present = counts > 0
    lookup = np.zeros(IGNORE + 1, np.float64)
    if present.any():
        lookup[:num_classes][present] = counts.sum() / (present.sum() * counts[present])
    return lookup.astype(np.float32)[targets]


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Labels whose cells can be found by ``ndi.find_objects`` without a huge index list."""
    if labels.size and int(labels.max()) > labels.size:
        values, inverse = np.unique(labels, return_inverse=True)
        labels = inverse.reshape(labels.shape) + (1 if values[0] != 0 else 0)
    return labels.astype(np.intp, copy=False)


def border_weights(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                   spacing: Sequence[float] | None = None, ignore: np.ndarray | None = None) -> np.ndarray:
    """The separation term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` for every pixel (float32).

    ``d_i(x)`` is the Euclidean distance from ``x`` to the nearest pixel of cell ``i``
    (0 inside it); ``d1 <= d2`` are the two smallest over all cells. Inside cell A
    next to cell B the term is ``w0 * exp(-d_B^2 / (2 sigma^2))``. With fewer than two
    cells it is 0. ``spacing`` (voxel size per axis) makes distances physical; ``sigma``
    is then in the same unit. ``ignore`` (boolean mask) sets pixels to 0.

    Only distances up to ``cutoff = sigma * sqrt(2 ln(1 / BORDER_CUTOFF))`` matter, so
    each cell's distance transform is computed in its bounding box grown by the cutoff.
    The result equals the full computation wherever ``d1 + d2 <= cutoff`` and differs by
    less than ``BORDER_CUTOFF * w0`` elsewhere.
    """
    labels = check_labels(labels)
    w0, sigma = _check_border_parameters(w0, sigma)
    spacing = _check_spacing(spacing, labels.ndim)
    if ignore is not None:
        ignore = np.asarray(ignore)
        if ignore.dtype != bool:
            raise TypeError(f"ignore must be a boolean mask, got dtype {ignore.dtype}")
        if ignore.shape != labels.shape:
            raise ValueError(f"ignore mask has shape {ignore.shape}, labels have {labels.shape}")
    weights = np.zeros(labels.shape, np.float32)
    if w0 == 0 or labels.size == 0:
        return weights
    labels = _sequential(labels)
    objects = ndi.find_objects(labels)
    if sum(box is not None for box in objects) < 2:
        return weights

    cutoff = sigma * math.sqrt(2 * math.log(1 / BORDER_CUTOFF))
    grow = [math.ceil(cutoff / s) for s in spacing]
    nearest = np.full(labels.shape, np.inf, np.float32)
    second = np.full(labels.shape, np.inf, np.float32)
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        crop = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, labels.shape))
        distance = ndi.distance_transform_edt(labels[crop] != index, sampling=spacing).astype(np.float32)
        near, sec = nearest[crop], second[crop]  # views: updated in place
        np.minimum(sec, np.maximum(near, distance), out=sec)
        np.minimum(near, distance, out=near)

    total = nearest + second
    np.multiply(total, total, out=total)
    np.exp(total * np.float32(-1.0 / (2 * sigma * sigma)), out=weights)
    weights *= np.float32(w0)
    if ignore is not None:
        weights[ignore] = 0
    return weights


def weight_map(labels: np.ndarray, targets: np.ndarray, num_classes: int, w0: float = 10.0,
               sigma: float = 5.0, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The U-Net loss weights ``w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` (float32).

    ``labels`` are the instance labels the ``targets`` were made from (same shape);
    pixels with ``targets == 255`` get 0. ``w0 = 0`` gives pure class balancing.
    """
    labels = check_labels(labels)
    targets = np.asarray(targets)
    if targets.shape != labels.shape:
        raise ValueError(f"targets have shape {targets.shape}, labels have {labels.shape}")
    weights = class_balance_weights(targets, num_classes)
    ignore = targets == IGNORE
    weights += border_weights(labels, w0, sigma, spacing, ignore=ignore)
    return weights


def _as_tensor(value, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value).to(device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.to(device)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           weights: torch.Tensor | None) -> torch.Tensor:
    """Pixel-wise weighted cross-entropy, averaged over the annotated pixels.

    ``logits``: (N, K, *S); ``targets``: (N, *S) class indices, 255 = ignore;
    ``weights``: (N, *S), or None for weight 1. Returns
    ``sum(w * ce) / number of annotated pixels`` over the whole batch, computed in
    float32 (also under autocast). With no annotated pixel the result is a zero
    connected to ``logits`` (``backward`` works and gives zero gradients).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim < 3:
        raise ValueError(f"logits must have shape (N, K, *spatial), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    targets = _as_tensor(targets, "targets", logits.device)
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != expected:
        raise ValueError(f"targets must have shape {expected} for logits {tuple(logits.shape)}, "
                         f"got {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
    if weights is None:
        weights = torch.ones(expected, dtype=torch.float32, device=logits.device)
    weights = _as_tensor(weights, "weights", logits.device)
    if tuple(weights.shape) != expected:
        raise ValueError(f"weights must have shape {expected} for logits {tuple(logits.shape)}, "
                         f"got {tuple(weights.shape)}")

    num_classes = logits.shape[1]
    targets = targets.long()
    annotated = targets != IGNORE
    if bool(((targets < 0) | (targets >= num_classes))[annotated].any()):
        raise ValueError(f"targets must hold classes 0..{num_classes - 1} or {IGNORE} (ignore)")
    safe_targets = torch.where(annotated, targets, torch.zeros_like(targets))
    log_probs = torch.log_softmax(logits.float(), dim=1)
    pixel_loss = -log_probs.gather(1, safe_targets.unsqueeze(1)).squeeze(1)
    zero = torch.zeros((), dtype=torch.float32, device=logits.device)
    weights = torch.where(annotated, weights.float(), zero)
    total = torch.where(annotated, weights * pixel_loss, zero).sum()
    return total / annotated.sum().clamp(min=1)
