"""Synthetic fluorescent nuclei (2D and 3D) with their instance labels, for samples and tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def nuclei(shape: tuple[int, ...] = (256, 256), count: int = 40, radius: tuple[float, float] = (6.0, 12.0),
           seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A blurred, noisy image of ellipsoidal nuclei (uint16) and their labels (uint32).

    Nuclei get random centres, radii, orientations and brightness; overlapping ones
    touch (each pixel belongs to the nucleus whose scaled distance is smallest).
    """
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.uint32)
    brightness = np.zeros(count + 1, np.float32)
    for label in range(1, count + 1):
        centre = rng.uniform(0, shape).astype(np.float32)
        radii = rng.uniform(*radius, size=ndim).astype(np.float32)
        rotation, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
        offset = (grid - centre.reshape((ndim,) + (1,) * ndim)).reshape(ndim, -1)
        local = (rotation.T.astype(np.float32) @ offset) / radii[:, None]
        dist = np.sqrt((local**2).sum(0)).reshape(shape)
        inside = (dist < 1.0) & (dist < best)
        labels[inside] = label
        best[inside] = dist[inside]
        brightness[label] = rng.uniform(0.4, 1.0)
    texture = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.5)
    signal = brightness[labels] * (1.0 + 0.3 * texture / (texture.std() + 1e-6))
    signal = ndi.gaussian_filter(signal, 1.0)
    background = 0.05 + 0.05 * np.linspace(0, 1, shape[-1], dtype=np.float32)
    image = signal + background + rng.normal(scale=noise, size=shape).astype(np.float32)
    image = np.clip(image, 0, None) * 4000 + 100
    return image.astype(np.uint16), labels


def sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Built-in samples: ``"nuclei-2d"`` (256x256) and ``"nuclei-3d"`` (32x128x128)."""
    if name == "nuclei-2d":
        return nuclei((256, 256), count=60, radius=(7.0, 13.0), seed=1)
    if name == "nuclei-3d":
        return nuclei((32, 128, 128), count=40, radius=(5.0, 10.0), seed=2)
    raise ValueError(f"unknown sample {name!r}; expected 'nuclei-2d' or 'nuclei-3d'")
