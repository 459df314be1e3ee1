"""Screenshots of the two widgets after a run, for the README.

Run under a display (Xvfb on a server):  xvfb-run -a python scripts/screenshots.py
Writes docs/images/segment-widget.png and docs/images/train-widget.png.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-tiled-unet"
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def wait(widget, timeout: float = 600.0) -> None:
    """Process Qt events until the widget's worker is done."""
    start = time.monotonic()
    while widget.worker is None or widget.worker.is_running or not widget._run.enabled:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - start > timeout:
            raise TimeoutError("the widget's run did not finish")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    viewer.open_sample(PLUGIN, "nuclei-2d")
    image = viewer.layers["nuclei 2D"]
    viewer.layers["nuclei 2D ground truth"].visible = False

    seg_dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells (U-Net)")
    seg._image.value = image
    seg._model.value = "nuclei-2d"
    seg._tile.value = 128
    seg.run()
    wait(seg)
    viewer.layers.selection.active = viewer.layers["nuclei 2D labels"]
    viewer.reset_view()
    viewer.screenshot(str(IMAGES / "segment-widget.png"), canvas_only=False, flash=False)

    seg_dock.close()
    train_dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train U-Net")
    row = train._pairs[0]
    row[0].value, row[1].value = image, viewer.layers["nuclei 2D ground truth"]
    train._init.value = "nuclei-2d"
    train._epochs.value, train._steps.value, train._batch.value, train._patch.value = 3, 10, 2, 64
    train._device.value = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        train._out.value = Path(tmp) / "my-nuclei.safetensors"
        train.preview_weights()
        wait(train)
        train.run()
        wait(train)
        for layer in viewer.layers:
            layer.visible = layer.name in ("nuclei 2D", "nuclei 2D ground truth weight map")
        viewer.reset_view()
        viewer.screenshot(str(IMAGES / "train-widget.png"), canvas_only=False, flash=False)
    viewer.close()
    print(f"wrote {IMAGES / 'segment-widget.png'} and {IMAGES / 'train-widget.png'}")


if __name__ == "__main__":
    main()
