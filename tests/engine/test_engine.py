"""The engine: progress, cancellation, out-of-memory recovery, automatic tiles, precision."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from helpers import CPU, build_net

import tiled_unet
from tiled_unet import InferenceConfig, TileProgress, UNet, predict_iter
from tiled_unet.engine.devices import (
    activation_bytes,
    cpu_supports_bf16,
    resolve_precision,
)
from tiled_unet.engine.tiling import plan_tiles
from tiled_unet.events import run_to_end


class RecordingNet(UNet):
    """A U-Net that records its input shapes and runs out of memory above set limits.

    The engine runs a copy (:meth:`UNet.fused_for_inference`): the copy shares the record and limits.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.record = SimpleNamespace(calls=[], max_voxels=None, max_batch=None)  # voxels: of one tile

    calls = property(lambda self: self.record.calls)
    max_voxels = property(lambda self: self.record.max_voxels,
                          lambda self, value: setattr(self.record, "max_voxels", value))
    max_batch = property(lambda self: self.record.max_batch,
                         lambda self, value: setattr(self.record, "max_batch", value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if self.max_voxels is not None and math.prod(x.shape[2:]) > self.max_voxels:
            raise torch.OutOfMemoryError("simulated: tile too large")
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("simulated: batch too large")
        return super().forward(x)

    def fused_for_inference(self) -> "RecordingNet":
        fused = super().fused_for_inference()
        fused.record = self.record
        return fused


def recording_net(max_voxels=None, max_batch=None, **config) -> RecordingNet:
    net = build_net(seed=1, net_class=RecordingNet, **config)
    net.max_voxels, net.max_batch = max_voxels, max_batch
    return net


def test_progress_one_event_per_batch(run, net2d, image2d):
    tiles = plan_tiles(image2d.shape, net2d.geometry, (16, 16))
    assert len(tiles) == 12
    for batch_size, expected in [(1, list(range(1, 13))), (5, [5, 10, 12]), (12, [12]), (50, [12])]:
        events = []
        run(image2d, net2d, tile_shape=(16, 16), batch_size=batch_size, progress=events.append)
        assert all(isinstance(e, TileProgress) for e in events)
        assert [e.done for e in events] == expected
        assert {e.total for e in events} == {12}
        assert events[-1].fraction == 1.0
        assert all(a.fraction < b.fraction for a, b in zip(events, events[1:]))


def test_predict_iter_returns_the_result(run, net2d, image2d):
    gen = predict_iter(image2d, net2d, tile_shape=(16, 16), **CPU)
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(gen))
    assert len(events) == 12
    np.testing.assert_array_equal(stop.value.value, run(image2d, net2d, tile_shape=(16, 16)))


def test_closing_the_generator_cancels(tmp_path, image2d):
    net = recording_net()
    out = tmp_path / "probs.zarr"
    gen = predict_iter(image2d, net, tile_shape=(8, 8), out=out, prefetch=0, **CPU)
    first = next(gen)
    assert first.done == 1 and first.total == 48
    gen.close()
    gen.close()  # closing twice is harmless
    assert len(net.calls) == 1
    assert list(tmp_path.iterdir()) == []  # a zarr output is written under a temporary name until whole
    with pytest.raises(StopIteration):
        next(gen)


def test_cancel_leaves_an_earlier_output_as_it_was(tmp_path, run, image2d):
    net = recording_net()
    out = tmp_path / "probs.zarr"
    earlier = run(image2d * 0.5, net, tile_shape=(16, 16), out=out)[...]
    gen = predict_iter(image2d, net, tile_shape=(16, 16), out=out, batch_size=2, overwrite=True, **CPU)
    for _ in range(3):
        next(gen)
    gen.close()
    array = zarr.open_array(str(out), mode="r")
    assert array.attrs["complete"] is True
    np.testing.assert_array_equal(array[...], earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probs.zarr"]
    result = run(image2d, net, tile_shape=(16, 16), out=out, overwrite=True)
    assert result.attrs["complete"] is True
    np.testing.assert_array_equal(result[...], run(image2d, net, tile_shape=(16, 16)))


def test_exception_in_progress_callback_stops_the_run(tmp_path, run, net2d, image2d):
    def stop(event):
        if event.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(image2d, net2d, tile_shape=(16, 16), out=tmp_path / "p.zarr", progress=stop)
    assert list(tmp_path.iterdir()) == []  # nothing half-written under the output's name


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_tile_out_of_memory_splits_the_tile(run, image2d, padding):
    """A tile that does not fit is cut in aligned pieces: the result is unchanged."""
    net = recording_net(padding=padding)
    expected = run(image2d, net, tile_shape=(64, 64))
    (big,) = set(net.calls)
    net.calls.clear()
    net.max_voxels = math.prod(big[2:]) - 1
    result = run(image2d, net, tile_shape=(64, 64))
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)  # other tile sizes: rounding only
    assert net.calls[0] == big  # failed once, then ran as pieces
    pieces = net.calls[1:]
    assert len(pieces) >= 2 and all(math.prod(s[2:]) <= net.max_voxels for s in pieces)


def test_tile_out_of_memory_splits_repeatedly(run, image2d, reference):
    net = recording_net()
    expected = run(image2d, net, tile_shape=(64, 64))
    net.max_voxels = 56 * 56  # fits tiles that write at most 16 x 16 pixels
    result = run(image2d, net, tile_shape=(64, 64))
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    assert max(math.prod(s[2:]) for s in net.calls[-4:]) <= 56 * 56
    net.max_voxels = None
    assert np.abs(result - reference(image2d, net)).max() < 1e-5


def test_out_of_memory_on_the_smallest_tile_is_raised(run, image2d):
    net = recording_net(max_voxels=100)
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        run(image2d, net, tile_shape=(16, 16))


def test_batch_out_of_memory_halves_the_batch(run, image2d):
    net = recording_net()
    expected = run(image2d, net, tile_shape=(16, 16))
    net.calls.clear()
    net.max_batch = 1
    result = run(image2d, net, tile_shape=(16, 16), batch_size=4)
    np.testing.assert_array_equal(result, expected)
    batches = [s[0] for s in net.calls]
    assert batches[:3] == [4, 2, 1]
    assert sum(b for b in batches if b <= 1) == 12
    net.calls.clear()
    net.max_batch = 2
    run(image2d, net, tile_shape=(16, 16), batch_size=4)
    assert [s[0] for s in net.calls][:3] == [4, 2, 2]


def test_auto_tile_shape_with_small_budget(run, image2d, reference):
    net = build_net(seed=3)
    geometry = net.geometry
    budget = activation_bytes(net.config, (geometry.input_size_for_output(16),) * 2)
    events = []
    result = run(image2d, net, memory_budget=budget, progress=events.append)
    assert events[-1].total > 1
    whole = []
    run(image2d, net, memory_budget=2**30, progress=whole.append)
    assert whole[-1].total == 1
    assert np.abs(result - reference(image2d, net)).max() < 1e-5
    assert events[-1].total == len(plan_tiles(image2d.shape, geometry, (16, 16)))


def test_auto_tile_shape_budget_is_shared_by_the_batch(run, image2d):
    net = build_net(seed=3)
    budget = activation_bytes(net.config, (net.geometry.input_size_for_output(16),) * 2)
    single, batched = [], []
    run(image2d, net, memory_budget=4 * budget, progress=single.append)
    run(image2d, net, memory_budget=4 * budget, batch_size=4, progress=batched.append)
    assert batched[-1].total > single[-1].total


def test_memory_budget_too_small(run, net2d, image2d):
    with pytest.raises(ValueError, match="smallest tile needs about .* MiB.*raise memory_budget"):
        run(image2d, net2d, memory_budget=10_000)
    with pytest.raises(ValueError, match="memory budget must be positive"):
        run(image2d, net2d, memory_budget=-1)


def test_auto_tile_shape_3d(run, net3d, image3d, reference):
    events = []
    budget = activation_bytes(net3d.config, (net3d.geometry.input_size_for_output(6),) * 3)
    result = run(image3d, net3d, memory_budget=budget, progress=events.append)
    assert events[-1].total > 1
    assert np.abs(result - reference(image3d, net3d)).max() < 1e-5


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) is None
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else None)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 kernels")
@pytest.mark.parametrize("net_key", ["2d", "3d"])
def test_bfloat16_is_close_to_float32(run, net2d, net3d, image2d, image3d, net_key):
    net, image, tile = (net2d, image2d, (16, 16)) if net_key == "2d" else (net3d, image3d, (4, 8, 8))
    full = run(image, net, tile_shape=tile)
    half = run(image, net, tile_shape=tile, precision="bfloat16")
    assert half.dtype == np.float32
    diff = np.abs(half - full).max()
    assert 0 < diff < 0.05
    auto = run(image, net, tile_shape=tile, precision="auto")
    np.testing.assert_array_equal(auto, half)


def test_output_dtype_float16(run, net2d, image2d):
    full = run(image2d, net2d, tile_shape=(16, 16))
    half = run(image2d, net2d, tile_shape=(16, 16), output_dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, full, atol=1e-3)


def test_train_mode_network_runs_in_eval_mode_and_is_restored(run, image2d):
    """Dropout would make tiles disagree; inference runs in eval mode, then the mode is restored."""
    net = build_net(seed=4, dropout=0.5, batch_norm=True).train()
    first = run(image2d, net, tile_shape=(16, 16))
    assert net.training
    np.testing.assert_array_equal(first, run(image2d, net.eval(), tile_shape=(16, 16)))
    assert not net.training


def test_single_class_model_gives_sigmoid(run, image2d):
    net = build_net(seed=6, num_classes=1)
    result = run(image2d, net, tile_shape=(16, 16))
    assert result.shape == (1,) + image2d.shape
    assert ((result > 0) & (result < 1)).all()
    assert result.std() > 1e-3


def test_builtin_placeholder_models(run, image2d, image3d):
    assert run(image2d, "placeholder-2d").shape == (2,) + image2d.shape
    assert run(image3d, "placeholder-3d").shape == (2,) + image3d.shape



def test_config_and_its_fields_together_are_refused():
    image = np.zeros((40, 40), np.float32)
    cfg = InferenceConfig(device="cpu", tile_shape=(16, 16))
    with pytest.raises(TypeError, match=r"either config= or the options \['device'\], not both"):
        tiled_unet.predict(image, "placeholder-2d", config=cfg, device="cuda")
    with pytest.raises(TypeError, match="not both"):
        run_to_end(tiled_unet.predict_iter(image, "placeholder-2d", config=cfg, batch_size=2), None)
    by_config = tiled_unet.predict(image, "placeholder-2d", config=cfg)
    np.testing.assert_array_equal(by_config, tiled_unet.predict(image, "placeholder-2d", device="cpu",
                                                                tile_shape=(16, 16)))


class Recording:
    """A user's sink: keeps every write, returns how many at the end."""

    def __init__(self, shape):
        self.array, self.writes = np.zeros(shape, np.float32), []

    def write(self, index, values):
        self.writes.append(index)
        self.array[index] = values

    def finish(self):
        return len(self.writes)


def test_a_sink_object_receives_every_tile(net2d, image2d):
    expected = tiled_unet.predict(image2d, net2d, tile_shape=(16, 16), **CPU)
    sink = Recording(expected.shape)
    assert tiled_unet.predict(image2d, net2d, out=sink, tile_shape=(16, 16), **CPU) == 12
    assert len({tuple((s.start, s.stop) for s in index[1:]) for index in sink.writes}) == 12  # 12 regions
    np.testing.assert_array_equal(sink.array, expected)


def test_out_that_is_neither_array_nor_sink_is_refused(net2d, image2d):
    with pytest.raises(TypeError, match="a Sink"):
        tiled_unet.predict(image2d, net2d, out=[1, 2], **CPU)


def test_predict_leaves_the_given_model_as_it_was(image2d):
    net = build_net(seed=3, batch_norm=True)
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    tiled_unet.predict(image2d, net, tile_shape=(16, 16), **CPU)
    assert net.training
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(p.is_contiguous() for p in net.parameters())  # its memory format too
