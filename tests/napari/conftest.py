"""Fixtures for the plugin tests: a real headless viewer (pytest-xvfb starts Xvfb) and small data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'napari-tiled-unet[napari]')")

from tiled_unet.synthetic import sample  # noqa: E402

PLUGIN = "napari-tiled-unet"
SETUP_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup_test_system.sh"
QT_PROBE = "from qtpy.QtWidgets import QApplication; QApplication([])"


def qt_start_problem() -> str | None:
    """Why Qt cannot open a window here (missing system packages, no display), or None.

    Asks the set-up script which packages are missing, then starts a QApplication in a child
    process: where Qt would abort, only the child dies, and its message is kept.
    """
    if sys.platform.startswith("linux"):
        check = subprocess.run(["bash", str(SETUP_SCRIPT), "--check"], capture_output=True, text=True)
        if check.returncode:
            return check.stderr.strip()
    probe = subprocess.run([sys.executable, "-c", QT_PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode:
        return (f"Qt could not start a QApplication (exit status {probe.returncode}):\n"
                f"{probe.stderr.strip()[-3000:]}")
    return None


@pytest.fixture(scope="session", autouse=True)
def _qt_can_start():
    """Fail every napari test with the fix, before any test creates a QApplication (which aborts)."""
    problem = qt_start_problem()
    if problem:
        pytest.fail(f"napari tests cannot start Qt: run scripts/setup_test_system.sh "
                    f"(installs or names the system packages)\n{problem}", pytrace=False)


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
