"""The Segment widget's estimate: FLOPs as torch counts them, tiles as the engine plans them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tiled_unet
from tiled_unet.engine import estimate as _estimate
from tiled_unet._napari._segment_widget import SegmentWidget
from tiled_unet.engine.devices import forward_flops


@pytest.mark.parametrize("name, shape", [("nuclei-2d", (1, 1, 220, 220)), ("placeholder-3d", (1, 1, 44, 60, 60))])
def test_flops_match_torch_counter(name, shape):
    net = tiled_unet.load_model(name)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(shape))
    assert forward_flops(net.config, shape[2:]) == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_estimate_follows_tile_size_and_measured_speed(monkeypatch):
    monkeypatch.setattr(_estimate, "MEASURED_FLOPS", {})
    net = tiled_unet.load_model("nuclei-2d")
    small = _estimate.estimate((512, 512), 2, net, tile_shape=(128, 128), device="cpu")
    large = _estimate.estimate((512, 512), 2, net, tile_shape=(256, 256), device="cpu", in_memory=False)
    assert (small.tiles, large.tiles) == (16, 4) and small.frames == 2
    assert small.tile_bytes < large.tile_bytes and large.result_bytes == 0 and small.result_bytes > 512 * 512 * 2 * 12
    assert small.flops > large.flops > 0 and not small.measured
    _estimate.record_speed("cpu", small.flops, 2.0)
    again = _estimate.estimate((512, 512), 2, net, tile_shape=(128, 128), device="cpu")
    assert again.measured and again.seconds == pytest.approx(2.0) and "measured" in again.text()


def test_estimate_label_updates(make_napari_viewer, crop2d):
    viewer = make_napari_viewer()
    viewer.add_image(np.tile(crop2d[0], (2, 2)), name="cells")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model.value = "nuclei-2d"
    widget._tile.value = 64
    assert widget._estimate.value.startswith("Estimate: 16 tile(s)")
    widget._tile.value = 128
    assert widget._estimate.value.startswith("Estimate: 4 tile(s)")
    widget._axes.value = "YXZ"
    assert widget._estimate.value.startswith("no estimate: axes")


def test_estimate_of_a_large_bf16_cpu_job_names_openvino(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(_estimate, "MEASURED_FLOPS", {})
    net = tiled_unet.load_model("nuclei-2d")
    large = _estimate.estimate((4096, 4096), 1, net, device="cpu", precision="bfloat16")
    small = _estimate.estimate((256, 256), 1, net, device="cpu", precision="bfloat16")
    exact = _estimate.estimate((4096, 4096), 1, net, device="cpu", precision="float32")
    assert (large.backend, small.backend, exact.backend) == ("openvino", "torch", "torch")
    assert "OpenVINO" in large.text() and "OpenVINO" not in small.text()
    assert large.seconds < exact.seconds  # faster, its compilation included
