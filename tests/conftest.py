"""Shared fixtures: small seeded networks, random images and the whole-image reference."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from helpers import build_net, predict_cpu, reference_probabilities

# pytest-xdist workers share the cores: more torch threads than cores makes every run crawl
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(scope="session")
def make_net():
    return build_net


@pytest.fixture(scope="session")
def reference():
    return reference_probabilities


@pytest.fixture(scope="session")
def run():
    return predict_cpu


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def net2d():
    """2D valid-padding U-Net, depth 2 (period 4, halo 20)."""
    return build_net(seed=1)


@pytest.fixture(scope="session")
def net3d():
    """3D valid-padding U-Net, depth 1 (period 2, halo 8)."""
    return build_net(seed=2, ndim=3, depth=1, base_channels=2)


@pytest.fixture
def image2d(rng):
    return (rng.random((45, 61)) * 4000).astype(np.uint16)


@pytest.fixture
def image3d(rng):
    return (rng.random((9, 21, 17)) * 1000).astype(np.float32)
