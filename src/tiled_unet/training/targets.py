"""Training targets for instance segmentation: background / cell interior / cell boundary.

Touching cells share no background, so a foreground mask alone cannot separate them.
Like the separating gaps of the U-Net paper, every cell gets a *boundary* band: the
pixels of the cell within ``boundary_width`` pixels (city-block distance) of a pixel
that does not belong to it (background or another cell). Two touching cells are then
separated by a boundary band ``2 * boundary_width`` pixels wide, and their interiors
(the seeds of :mod:`tiled_unet.instances`) never touch.

The paper's own scheme is also available (:func:`gap_targets`, classes ``TWO_CLASS_NAMES``):
two classes, where the pixels of a cell within ``boundary_width`` of *another* cell become
background, a separating gap between touching cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
IGNORE = 255
CLASS_NAMES = ("background", "interior", "boundary")
TWO_CLASS_NAMES = ("background", "cell")


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Instance labels as an integer array (0 = background), with a clear error otherwise."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"{name} must be an integer label image (0 = background, 1..N = cells), "
                             f"got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must not contain negative values, got minimum {labels.min()}")
    return labels


def cell_boundaries(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of cells within ``width`` px (city-block) of a pixel with a different label.

    The image edge is not a boundary (a cell cut by the border keeps its interior there).
    """
    if width < 1:
        raise ValueError(f"boundary width must be >= 1 pixel, got {width}")
    ball = ndi.iterate_structure(ndi.generate_binary_structure(labels.ndim, 1), width)
    lo = ndi.grey_erosion(labels, footprint=ball, mode="nearest")
    hi = ndi.grey_dilation(labels, footprint=ball, mode="nearest")
    return (labels > 0) & (lo != hi)


def instance_targets(labels: np.ndarray, boundary_width: int = 2,
                     ignore: np.ndarray | None = None) -> np.ndarray:
    """uint8 targets from instance labels: 0 background, 1 interior, 2 boundary, 255 ignore.

    ``ignore``: a boolean mask of unannotated pixels (they contribute nothing to the loss).
    """
    labels = check_labels(labels)
    targets = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    targets[cell_boundaries(labels, boundary_width)] = BOUNDARY
    return _mark_ignored(targets, ignore)


def _mark_ignored(targets: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """``targets`` with the pixels of the boolean mask ``ignore`` (if any) set to IGNORE."""
    if ignore is not None:
        ignore = np.asarray(ignore, bool)
        if ignore.shape != targets.shape:
            raise ValueError(f"ignore mask has shape {ignore.shape}, labels have {targets.shape}")
        targets[ignore] = IGNORE
    return targets


def cell_contacts(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of cells within ``width`` px (city-block) of a pixel of another cell (not background)."""
    if width < 1:
        raise ValueError(f"gap width must be >= 1 pixel, got {width}")
    labels = check_labels(labels)
    ball = ndi.iterate_structure(ndi.generate_binary_structure(labels.ndim, 1), width)
    cells = labels > 0
    lowest_other = ndi.grey_erosion(np.where(cells, labels, np.iinfo(labels.dtype).max), footprint=ball,
                                    mode="nearest")
    highest = ndi.grey_dilation(labels, footprint=ball, mode="nearest")
    return cells & ((lowest_other < labels) | (highest > labels))


def gap_targets(labels: np.ndarray, gap_width: int = 2, ignore: np.ndarray | None = None) -> np.ndarray:
    """uint8 two-class targets as in the U-Net paper: 0 background (with gaps), 1 cell, 255 ignore.

    Where cells touch, their pixels within ``gap_width`` of the other cell become background.
    """
    labels = check_labels(labels)
    targets = ((labels > 0) & ~cell_contacts(labels, gap_width)).astype(np.uint8)
    return _mark_ignored(targets, ignore)


def trainable(class_names) -> bool:
    """Whether training can make targets for a model with these classes (either scheme above)."""
    return tuple(c.lower() for c in class_names) in (CLASS_NAMES, TWO_CLASS_NAMES)


def targets_for(class_names, labels: np.ndarray, width: int, ignore: np.ndarray | None = None) -> np.ndarray:
    """The targets of a model with these classes: :func:`instance_targets` or :func:`gap_targets`."""
    if not trainable(class_names):
        raise ValueError(f"training needs a model with the classes {CLASS_NAMES} or {TWO_CLASS_NAMES}, "
                         f"got {tuple(class_names)}; start from a new model (tiled_unet.train.new_model)")
    if tuple(c.lower() for c in class_names) == CLASS_NAMES:
        return instance_targets(labels, width, ignore)
    return gap_targets(labels, width, ignore)
