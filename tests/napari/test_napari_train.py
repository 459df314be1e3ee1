"""The Train widget in a real viewer: a short training writes a model that segments; cancel keeps the best."""

from __future__ import annotations

import numpy as np
import pytest

import tiled_unet
from tiled_unet._napari._segment_widget import SegmentWidget
from tiled_unet._napari._train_widget import NEW_MODEL, TrainWidget, training_labels
from tiled_unet.training.loop import TrainProgress


def _widget(viewer, crop2d, tmp_path, epochs):
    image, truth = crop2d
    viewer.add_image(image, name="cells")
    viewer.add_labels(truth, name="painted")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    row = widget._pairs[0]
    row[0].value, row[1].value = viewer.layers["cells"], viewer.layers["painted"]
    widget._init.value = NEW_MODEL
    widget._epochs.value, widget._steps.value, widget._batch.value = epochs, 2, 2
    widget._patch.value, widget._device.value = 16, "cpu"
    widget._out.value = tmp_path / "mine.safetensors"
    return widget


def test_short_training_writes_a_model_the_segment_widget_offers(viewer, crop2d, tmp_path, wait_for_worker):
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment)
    widget = _widget(viewer, crop2d, tmp_path, epochs=1)
    widget._workers.value = 2
    widget.run()
    wait_for_worker(widget, timeout=120_000)
    assert widget._status.value.startswith("done"), widget._status.value
    path = tmp_path / "mine.safetensors"
    assert path.is_file()
    kinds = [e.kind for e in widget.events]
    assert kinds == ["step", "step", "epoch"] and all(isinstance(e, TrainProgress) for e in widget.events)
    assert "validation AP@0.5" in widget._history.value
    assert "instance thresholds not tuned: the validation data hold" in widget._status.value  # a small crop
    assert str(path) in [value for value in segment._model.choices]
    labels = tiled_unet.segment(crop2d[0], str(path), device="cpu")
    assert labels.shape == crop2d[0].shape and labels.dtype == np.uint32
    assert tiled_unet.load_model(path).model_config.name == "custom"
    assert tiled_unet.load_model(path).model_config.training["config"]["workers"] == 2


def test_patches_made_on_the_device(viewer, crop2d, tmp_path, wait_for_worker):
    widget = _widget(viewer, crop2d, tmp_path, epochs=1)
    widget._workers.value = 2
    widget._augment_on.value = "device"
    assert widget._workers.value == 0 and not widget._workers.enabled
    widget.run()
    wait_for_worker(widget, timeout=120_000)
    assert widget._status.value.startswith("done"), widget._status.value
    config = tiled_unet.load_model(tmp_path / "mine.safetensors").model_config.training["config"]
    assert config["augment_on"] == "device" and config["workers"] == 0
    widget._augment_on.value = "cpu"
    assert widget._workers.enabled


def test_cancel_keeps_the_best_model_so_far(viewer, crop2d, tmp_path, wait_for_worker, qtbot):
    widget = _widget(viewer, crop2d, tmp_path, epochs=50)
    widget.run()
    qtbot.waitUntil(lambda: any(e.kind == "epoch" for e in widget.events), timeout=120_000)
    widget.cancel()
    wait_for_worker(widget, timeout=60_000)
    assert widget._status.value.startswith("cancelled: the best model so far"), widget._status.value
    assert len(widget.events) <= 6
    assert tiled_unet.load_model(tmp_path / "mine.safetensors").model_config.training["epochs_run"] >= 1


def test_weight_map_preview(viewer, crop2d, tmp_path, qtbot):
    widget = _widget(viewer, crop2d, tmp_path, epochs=1)
    widget.preview_weights()
    qtbot.waitUntil(lambda: "painted weight map" in viewer.layers, timeout=30_000)
    weights = viewer.layers["painted weight map"].data
    assert weights.shape == crop2d[1].shape and weights.max() > 10  # w0 = 10 between touching cells


def test_ignore_convention():
    painted = np.array([[0, 1, 1], [2, 2, 0], [3, 0, 1]], np.uint16)
    labels, ignore = training_labels(painted, True, 1)
    assert ignore == 4
    np.testing.assert_array_equal(labels, [[4, 0, 0], [2, 2, 4], [3, 4, 0]])
    assert training_labels(painted, False, 1)[1] is None
    with pytest.raises(ValueError, match="no pixel has the background label 7"):
        training_labels(painted, True, 7)


def test_two_class_model_is_offered_and_previewed_with_gap_targets(viewer, crop2d, tmp_path, qtbot):
    from tiled_unet._napari._models import REGISTRY
    from tiled_unet.training.loss import weight_map
    from tiled_unet.training.targets import gap_targets, instance_targets
    from tiled_unet.training.loop import new_model
    from tiled_unet.weights import save_model

    path = save_model(new_model(2, depth=2, base_channels=4, targets="gaps", name="gaps"),
                      tmp_path / "gaps.safetensors")
    REGISTRY.add(path)
    widget = _widget(viewer, crop2d, tmp_path, epochs=1)
    assert str(path) in [value for value in widget._init.choices]
    widget._init.value = str(path)
    widget.preview_weights()
    qtbot.waitUntil(lambda: "painted weight map" in viewer.layers, timeout=30_000)
    weights = viewer.layers["painted weight map"].data
    truth = crop2d[1]
    expected = weight_map(truth, gap_targets(truth, 2), 2, w0=widget._w0.value, sigma=widget._sigma.value)
    three_class = weight_map(truth, instance_targets(truth, 2), 3, w0=widget._w0.value, sigma=widget._sigma.value)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert not np.allclose(weights, three_class)


def test_the_starting_model_file_is_never_replaced_even_with_overwrite(viewer, crop2d, tmp_path):
    from tiled_unet._napari._models import REGISTRY
    from tiled_unet.training.loop import new_model
    from tiled_unet.weights import save_model

    start = tmp_path / "start.safetensors"
    save_model(new_model(2, depth=2, base_channels=4), start)
    before = start.read_bytes()
    value = REGISTRY.add(start)
    widget = _widget(viewer, crop2d, tmp_path, epochs=1)
    widget._init.value = value
    widget._out.value = start
    widget._overwrite.value = True
    widget.run()
    assert widget.worker is None
    assert "is, contains or lies inside the input" in widget._status.value, widget._status.value
    assert start.read_bytes() == before
