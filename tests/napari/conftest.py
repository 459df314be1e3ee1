"""Fixtures for the plugin tests: a real headless viewer (pytest-xvfb starts Xvfb) and small data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'napari-tiled-unet[napari]')")

from tiled_unet.synthetic import sample  # noqa: E402

PLUGIN = "napari-tiled-unet"


@pytest.fixture(scope="session")
def crop2d():
    """128x128 crop of the built-in 2D sample: (image, true labels)."""
    image, labels = sample("nuclei-2d")
    return np.ascontiguousarray(image[:128, :128]), np.ascontiguousarray(labels[:128, :128])


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def wait_for_worker(qtbot):
    """Wait until a widget's worker has finished (returned, errored or was cancelled)."""

    def wait(widget, timeout=60_000):
        qtbot.waitUntil(lambda: widget.worker is not None and not widget.worker.is_running and
                        widget._run.enabled, timeout=timeout)

    return wait
