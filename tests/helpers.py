"""Helpers shared by the tests: small seeded networks and the whole-image reference.

Imported as ``helpers`` (the ``tests`` folder is on the path); not named ``conftest`` so that
no other folder's conftest can shadow it.
"""

from __future__ import annotations

import numpy as np
import torch

from tiled_unet import UNet, UNetConfig, predict
from tiled_unet.engine.predict import whole_image_probabilities

CPU = {"device": "cpu", "precision": "float32"}

def build_net(seed: int = 0, net_class: type[UNet] = UNet, **config) -> UNet:
    """A small U-Net in eval mode whose weights depend only on ``seed`` and ``config``."""
    options = {"ndim": 2, "depth": 2, "base_channels": 4, **config}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return net_class(UNetConfig(**options)).eval()


def percentile_normalize(image_cs: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """``(x - p_low) / (p_high - p_low)`` per channel of a ``(C, *spatial)`` array (float32).

    A channel whose two percentiles coincide is only shifted (scale 1), as a division by
    zero has no meaningful result.
    """
    values = image_cs.astype(np.float64).reshape(image_cs.shape[0], -1)
    lo, hi = np.percentile(values, [low, high], axis=1)
    scale = np.where(hi - lo > 0, hi - lo, 1.0)
    shape = (-1,) + (1,) * (image_cs.ndim - 1)
    return ((image_cs - lo.reshape(shape)) / scale.reshape(shape)).astype(np.float32)


def reference_probabilities(image: np.ndarray, net: UNet) -> np.ndarray:
    """Whole-image probabilities of a single-frame image, normalised independently of the engine.

    ``image`` is ``(*spatial)`` for a one-channel model or ``(C, *spatial)`` otherwise.
    """
    image_cs = image[None] if image.ndim == net.config.ndim else image
    return whole_image_probabilities(percentile_normalize(image_cs), net)


def predict_cpu(image, net, **options):
    """``tiled_unet.predict`` on the CPU in float32 (the default precision may be bf16)."""
    return predict(image, net, **{**CPU, **options})


def two_level_probabilities() -> np.ndarray:
    """Three-class probabilities (40, 80): left a textured cell (a p(interior) 0.5 region with two
    small 0.9 spots), right two touching cells (one 0.5 region with two large 0.9 cores)."""
    interior = np.zeros((40, 80), np.float32)
    interior[5:35, 5:35] = 0.5
    interior[10:13, 10:13] = interior[25:28, 25:28] = 0.9
    interior[5:35, 45:75] = 0.5
    interior[8:32, 47:58] = interior[8:32, 62:73] = 0.9
    background = (interior == 0).astype(np.float32)
    return np.stack([background, interior * (1 - background), (1 - interior) * (1 - background)]).astype(np.float32)
