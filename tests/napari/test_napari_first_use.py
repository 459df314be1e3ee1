"""A first run as a new user makes it: each sample, the Segment widget, Run without changing anything.

Also: the activity dock's progress bar moves, the model follows the image (2-D/3-D) also in a
reopened dock, every option has a tooltip, and the Train widget has one row per label.
"""

from __future__ import annotations

import pytest

from tiled_unet._napari._segment_widget import SegmentWidget
from tiled_unet._napari._train_widget import TrainWidget
from tiled_unet.pipeline import LabelProgress

PLUGIN = "napari-tiled-unet"
SEGMENT = "Segment cells (U-Net)"


def _open_segment_dock(viewer):
    return viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT)[1]


def _run_unchanged(viewer, widget, wait_for_worker, timeout=120_000):
    widget._run.clicked.emit()  # what pressing Run does
    wait_for_worker(widget, timeout=timeout)
    assert widget._status.value.startswith("done"), widget._status.value


@pytest.mark.parametrize("key, model, ndim", [("nuclei-2d", "nuclei-2d", 2), ("nuclei-3d", "nuclei-3d", 3)])
def test_each_sample_segments_with_the_defaults(viewer, key, model, ndim, wait_for_worker):
    viewer.open_sample(PLUGIN, key)
    image, truth = viewer.layers
    widget = _open_segment_dock(viewer)
    assert widget._image.value is image and widget._model.value == model
    assert widget._precision.value == "auto" and widget._axes.value == "ZYX"[-ndim:]
    camera = viewer.scene.camera
    camera.zoom, camera.center = 40.0, (0.0,) * len(camera.center)  # a view that cuts the image off
    _run_unchanged(viewer, widget, wait_for_worker)
    labels = viewer.layers[f"{image.name} labels"]
    cells, true_cells = int(labels.data.max()), int(truth.data.max())
    assert cells > 0 and abs(cells - true_cells) <= max(3, true_cells // 5)
    fitted = camera.zoom, tuple(camera.center)
    viewer.reset_view()
    assert fitted == (camera.zoom, tuple(camera.center)) and camera.zoom < 40.0


def test_untrained_placeholders_are_not_offered(viewer):
    widget = SegmentWidget(viewer)
    names = [value for value in widget._model.choices]
    assert names[:2] == ["nuclei-2d", "nuclei-3d"] and not any("placeholder" in n for n in names)


def test_model_follows_the_image_and_survives_reopening_the_dock(viewer):
    viewer.open_sample(PLUGIN, "nuclei-3d")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT)
    assert widget._model.value == "nuclei-3d" and widget._axes.value == "ZYX"
    viewer.window.remove_dock_widget(dock)
    reopened = _open_segment_dock(viewer)
    assert reopened is not widget and reopened._model.value == "nuclei-3d"
    widget = reopened
    viewer.open_sample(PLUGIN, "nuclei-2d")
    widget._image.value = viewer.layers["nuclei 2D"]
    assert widget._model.value == "nuclei-2d" and widget._axes.value == "YX"


def test_activity_progress_bar_rises_during_a_run(viewer, crop2d, wait_for_worker):
    import numpy as np

    layer = viewer.add_image(np.tile(crop2d[0], (2, 2)), name="cells")
    widget = _open_segment_dock(viewer)
    widget._tile.value = 64  # several tiles
    dialog = viewer.window._qt_window._activity_dialog
    values = []

    def record(event):
        bars = [b for b in _progress_objects() if b.desc.startswith("Segmenting cells")]
        if bars:
            values.append((dialog.get_pbar_from_prog(bars[0])._get_value(), isinstance(event, LabelProgress)))

    widget._run.clicked.emit()
    widget.worker.yielded.connect(record)  # after the widget's own handler, which moves the bar
    wait_for_worker(widget, timeout=120_000)
    assert layer.name == "cells" and widget._status.value.startswith("done")
    shown = [v for v, _ in values]
    assert shown == sorted(shown) and shown[-1] > shown[0] and shown[-1] >= 900
    assert any(labelling for _, labelling in values)  # label blocks move it too


def _progress_objects():
    from napari.utils.progress import progress

    return list(progress._all_instances)


@pytest.mark.parametrize("widget_class", [SegmentWidget, TrainWidget])
def test_every_option_has_a_tooltip(viewer, widget_class):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget)
    options = list(widget)
    if widget_class is TrainWidget:
        options += [w for row in widget._pairs for w in row]
    missing = [w.label or getattr(w, "text", "") for w in options
               if not isinstance(w, type(widget._pairs if widget_class is TrainWidget else widget))
               and not w.tooltip]
    assert not missing
    labels = [w.label for w in widget if w.label]
    assert len(labels) == len(set(labels)), labels
