"""A zarr job killed at any moment (SIGKILL included) resumes and ends identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from tiled_unet.batch.files import FileResult, Notice, segment_files, segment_files_iter
from tiled_unet.batch.resume import read_record
from tiled_unet.synthetic import sample

M2 = "nuclei-2d"
OPTIONS = {"device": "cpu", "precision": "float32", "tile_shape": (32, 32)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process inference on one thread, as in the subprocess (OMP_NUM_THREADS=1): float sums over
    more threads may differ in the last bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A 384x384 zarr image: 144 tiles of 32x32."""
    image = np.tile(sample("nuclei-2d")[0], (2, 2))[:384, :384]
    path = tmp_path_factory.mktemp("input") / "big.zarr"
    zarr.open_array(str(path), mode="w", shape=image.shape, chunks=(128, 128), dtype=image.dtype)[:] = image
    return path


@pytest.fixture(scope="module")
def reference(volume, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    (result,) = segment_files([volume], out, M2, probabilities=True, **OPTIONS)
    assert result.status == "done"
    return (zarr.open_array(str(out / "big_labels.zarr"), mode="r")[...],
            zarr.open_array(str(out / "big_probabilities.zarr"), mode="r")[...])


def _same(out: Path, reference) -> None:
    labels = zarr.open_array(str(out / "big_labels.zarr"), mode="r")[...]
    probs = zarr.open_array(str(out / "big_probabilities.zarr"), mode="r")[...]
    assert np.array_equal(labels, reference[0]) and labels.max() > 10
    assert np.array_equal(probs, reference[1])
    assert not list(out.glob(".*"))


def test_sigkill_then_rerun_equals_uninterrupted(volume, reference, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tiled_unet.cli.main", "segment", str(volume), "-o", str(out), "--model", M2,
               "--probabilities", "--device", "cpu", "--precision", "float32", "--tile-shape", "32,32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    record = out / ".big_labels.zarr.partial" / "tiles.txt"
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(read_record(record)) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = read_record(record)
    assert 10 <= len(done) < 144 and not (out / "big_labels.zarr").exists()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of 144 tiles already done" in rerun.stderr
    _same(out, reference)


def test_closed_generator_resumes_and_changed_options_start_over(volume, reference, tmp_path):
    out = tmp_path / "out"

    def interrupt(after: int, **options) -> list[str]:
        gen = segment_files_iter([volume], out, M2, probabilities=True, **{**OPTIONS, **options})
        tiles, notices = 0, []
        for event in gen:
            tiles += hasattr(event, "frame")
            notices += [event.text] if isinstance(event, Notice) else []
            if tiles == after:
                gen.close()
                break
        return notices

    assert interrupt(20) == []
    partial = out / ".big_labels.zarr.partial"
    first = len(read_record(partial / "tiles.txt"))
    assert 15 <= first <= 20
    assert interrupt(5) == [f"resuming: {first} of 144 tiles already done"]
    assert len(read_record(partial / "tiles.txt")) > first
    # another tile plan: the earlier partial run is discarded
    assert interrupt(5, tile_shape=(64, 64))[0].startswith("starting over: the earlier partial run differs in")
    events = []
    results = segment_files([volume], out, M2, probabilities=True, progress=events.append, **OPTIONS)
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert len(notices) == 1
    assert notices[0].startswith("starting over: the earlier partial run differs in inference")
    assert results[0].status == "done"
    _same(out, reference)
    again = segment_files([volume], out, M2, probabilities=True, **OPTIONS)
    assert [r.status for r in again] == ["skipped (exists)"]
    assert isinstance(again[0], FileResult)
