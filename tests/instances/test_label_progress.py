"""Progress of blockwise labelling reaches ``segment_iter`` while it runs, and closing it cancels."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tiled_unet import segment
from tiled_unet.config import LabelProgress
from tiled_unet.instances.zarr_labels import LabellingCancelled, stream_progress
from tiled_unet.pipeline import segment_iter
from tiled_unet.synthetic import sample

M2 = "nuclei-2d"


def run(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_events_arrive_before_the_function_returns():
    released = threading.Event()
    seen = {}

    def work(progress):
        progress(0, 2, "masks")
        seen["released"] = released.wait(timeout=20)  # set by the consumer of the first event
        progress(1, 2, "masks")
        return 42

    gen = stream_progress(work)
    first = next(gen)
    released.set()
    events, value = run(gen)
    assert first == LabelProgress(0, 2, "masks") and events == [LabelProgress(1, 2, "masks")]
    assert seen["released"] and value == 42


def test_closing_cancels_at_the_next_report_and_waits():
    state = {"reports": 0, "ended": False, "stopped_by": None}

    def work(progress):
        try:
            for i in range(500):
                progress(i, 500, "growth")
                state["reports"] += 1
                time.sleep(0.01)
        except Exception as error:
            state["stopped_by"] = type(error)
            raise
        finally:
            time.sleep(0.2)  # cleanup that the generator must wait for
            state["ended"] = True

    gen = stream_progress(work)
    next(gen)
    gen.close()
    assert state["ended"] and state["reports"] < 500 and state["stopped_by"] is LabellingCancelled
    assert not any(t.name == "tiled-unet-labels" and t.is_alive() for t in threading.enumerate())


def test_errors_of_the_function_are_raised_by_the_generator():
    def work(progress):
        progress(0, 1, "masks")
        raise ValueError("bad block")

    gen = stream_progress(work)
    assert next(gen) == LabelProgress(0, 1, "masks")
    with pytest.raises(ValueError, match="bad block"):
        next(gen)


@pytest.fixture(scope="module")
def image():
    return sample("nuclei-2d")[0][:128, :160]


def test_segment_to_zarr_streams_label_progress(tmp_path, image):
    out = tmp_path / "labels.zarr"
    events, labels = run(segment_iter(image, M2, out=out, block_shape=(32, 40), device="cpu"))
    label_events = [e for e in events if isinstance(e, LabelProgress)]
    stages = list(dict.fromkeys(e.stage for e in label_events))
    assert stages[0] == "masks" and stages[-1] == "write"
    assert np.array_equal(labels[...], segment(image, M2, device="cpu"))
    assert labels.attrs["complete"] is True


def test_closing_segment_during_labelling_leaves_no_output_and_no_temporary_files(tmp_path, image):
    out = tmp_path / "labels.zarr"
    gen = segment_iter(image, M2, out=out, block_shape=(16, 20), device="cpu")
    for event in gen:
        if isinstance(event, LabelProgress) and event.stage == "growth":
            break
    gen.close()
    assert list(tmp_path.iterdir()) == []  # labels are written under a temporary name until whole
    again = segment(image, M2, out=out, overwrite=True, block_shape=(16, 20), device="cpu")
    assert again.attrs["complete"] is True
