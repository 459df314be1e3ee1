"""Nothing lost, nothing silently wrong: runs killed at random moments, lost or corrupt chunks,
two runs on one output. Every rerun ends identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from tiled_unet.batch.files import Notice, segment_files, segment_files_iter
from tiled_unet.batch.resume import read_record, tile_chunk_files
from tiled_unet.cli.main import main
from tiled_unet.config import InferenceConfig
from tiled_unet.engine.plan import tile_plan, tile_region
from tiled_unet.io.arrays import open_image
from tiled_unet.io.lock import OutputLockedError, acquire, lock_path, output_lock, release
from tiled_unet.io.tiff import read_tiff_meta, write_tiff
from tiled_unet.synthetic import sample
from tiled_unet.weights import resolve_model

M2 = "nuclei-2d"
TILES = 36  # 192x192 in tiles of 32x32
OPTIONS = {"device": "cpu", "precision": "float32", "tile_shape": (32, 32)}
ENGINE = ["--model", M2, "--device", "cpu", "--precision", "float32", "--tile-shape", "32,32", "--probabilities"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: float sums in the same order as in-process


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process inference on one thread, as in the subprocesses (OMP_NUM_THREADS=1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same 192x192 image as a zarr array and as an ImageJ TIFF with a voxel size."""
    image = sample("nuclei-2d")[0][:192, :192]
    folder = tmp_path_factory.mktemp("inputs")
    zarr.open_array(str(folder / "cells.zarr"), mode="w", shape=image.shape, chunks=(96, 96),
                    dtype=image.dtype)[:] = image
    write_tiff(folder / "cells.tif", image, "YX", {"Y": 0.5, "X": 0.5}, kind="imagej")
    return {"zarr": folder / "cells.zarr", "tif": folder / "cells.tif"}


def _command(source: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tiled_unet.cli.main", "segment", str(source), "-o", str(out), *ENGINE, *extra]


def _snapshot(out: Path, fmt: str) -> dict:
    """What a run leaves in ``out``: arrays and the metadata that matters."""
    if fmt == "zarr":
        found = {}
        for name in ("cells_labels.zarr", "cells_probabilities.zarr"):
            array = zarr.open_array(str(out / name), mode="r")
            found[name] = (array[...], dict(array.attrs), str(array.dtype), array.chunks)
        return found
    found = {}
    for name in ("cells_labels.tif", "cells_probabilities.tif"):
        meta = read_tiff_meta(out / name)
        found[name] = (tifffile.imread(out / name), meta.axes, meta.voxel_size, meta.kind, meta.dtype)
    return found


def _assert_same(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name, (array, *meta) in expected.items():
        assert np.array_equal(found[name][0], array), name
        assert list(found[name][1:]) == meta, name


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory):
    """Uninterrupted CLI runs of each input: (outputs, seconds)."""
    found = {}
    for fmt, source in inputs.items():
        out = tmp_path_factory.mktemp(f"reference-{fmt}")
        start = time.monotonic()
        subprocess.run(_command(source, out), env=ENV, check=True, capture_output=True, timeout=300)
        found[fmt] = (_snapshot(out, fmt), time.monotonic() - start)
        assert found[fmt][0][f"cells_labels.{fmt}"][0].max() > 10
    return found


def _kill_when(command: list[str], ready, timeout: float = 120) -> tuple[bool, str]:
    """Start ``command``, SIGKILL it once ``ready(seconds since start)`` is true; (killed, stderr)."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    try:
        while proc.poll() is None and not ready(time.monotonic() - start):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{command} neither finished nor got ready in {timeout} s")
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    return proc.returncode == -signal.SIGKILL, err


def _oldest_chunk(partial: Path) -> Path:
    """The first probability chunk stored (surely recorded: the record lags by a batch at most)."""
    chunks = [p for p in (partial / "probabilities.zarr" / "c").rglob("*") if p.is_file()]
    return min(chunks, key=lambda p: p.stat().st_mtime_ns)


def _lines(record: Path) -> int:
    return record.read_text().count("\n") if record.exists() else 0


def _zarr_kills(source: Path, out: Path, rng: random.Random, modes: list[str]) -> dict[str, int]:
    """One run per mode, killed at a random moment: ``"tiles"`` after a random number of tiles more
    (then, mostly, a recorded chunk is deleted), ``"labels"`` a random instant into labelling. The
    run after a deletion must say it recomputes that tile; returns the kills that landed, per mode."""
    record = out / ".cells_labels.zarr.partial" / "tiles.txt"
    landed, deleted = {"tiles": 0, "labels": 0}, False
    for mode in modes:
        if mode == "tiles":
            target = _lines(record) + rng.randint(1, 8)
            killed, err = _kill_when(_command(source, out), lambda _s, t=target: _lines(record) >= t)
            reached = killed and _lines(record) >= target
        else:
            delay, start, launched = rng.uniform(0.0, 0.1), {}, time.time_ns()

            def labelling(s, d=delay):  # labels.zarr made anew by this run: labelling has begun
                labels = record.parent / "labels.zarr"
                if "at" not in start and labels.exists() and labels.stat().st_ctime_ns >= launched:
                    start["at"] = s
                return "at" in start and s - start["at"] >= d

            killed, err = _kill_when(_command(source, out), labelling)
            reached = "at" in start
        if deleted and reached:
            assert "recorded tiles failed verification and are recomputed" in err and "chunks missing)" in err, err
        deleted = False
        if killed and reached and not (out / "cells_labels.zarr").exists():
            landed[mode] += 1
            if mode == "tiles" and rng.random() < 0.7:
                _oldest_chunk(record.parent).unlink()
                deleted = True
    return landed


def _tif_kills(source: Path, out: Path, rng: random.Random, kills: int, seconds: float) -> None:
    """``kills`` runs killed after a random part of an uninterrupted run's time."""
    for _ in range(kills):
        delay = rng.uniform(0.3, 1.0) * seconds
        _kill_when(_command(source, out), lambda s, d=delay: s >= d)


def _finish_and_compare(source: Path, out: Path, fmt: str, reference: dict) -> str:
    rerun = subprocess.run(_command(source, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same(_snapshot(out, fmt), reference)
    assert not list(out.glob(".*")), "partial outputs or locks left behind"
    return rerun.stderr


@pytest.mark.parametrize("fmt", ["zarr", "tif"])
def test_killed_runs_end_identical(fmt, inputs, references, tmp_path):
    out = tmp_path / "out"
    reference, seconds = references[fmt]
    rng = random.Random(7)
    if fmt == "zarr":
        landed = _zarr_kills(inputs[fmt], out, rng, ["tiles", "labels"])
        assert landed["tiles"] == 1
    else:
        _tif_kills(inputs[fmt], out, rng, kills=2, seconds=seconds)
    _finish_and_compare(inputs[fmt], out, fmt, reference)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "tif"])
@pytest.mark.parametrize("seed", range(10))
def test_killed_runs_end_identical_many(fmt, seed, inputs, references, tmp_path):
    out = tmp_path / "out"
    reference, seconds = references[fmt]
    rng = random.Random(seed)
    if fmt == "zarr":
        _zarr_kills(inputs[fmt], out, rng, [rng.choice(["tiles", "tiles", "labels"]) for _ in range(4)])
    else:
        _tif_kills(inputs[fmt], out, rng, kills=rng.randint(2, 4), seconds=seconds)
    _finish_and_compare(inputs[fmt], out, fmt, reference)


def test_lost_corrupt_changed_and_unchecked_tiles_are_recomputed(inputs, references, tmp_path):
    source, out = inputs["zarr"], tmp_path / "out"
    gen = segment_files_iter([source], out, M2, probabilities=True, **OPTIONS)
    tiles = 0
    for event in gen:
        tiles += hasattr(event, "frame")
        if tiles == 20:
            gen.close()
            break
    partial = out / ".cells_labels.zarr.partial"
    store = partial / "probabilities.zarr"
    record = read_record(partial / "tiles.txt")
    assert len(record) >= 15
    lost, corrupt, changed, unchecked = sorted(record)[:4]
    plan = tile_plan(open_image(source), resolve_model(M2), None, InferenceConfig(**OPTIONS))
    probs = zarr.open_array(str(store), mode="r+")
    for chunk in tile_chunk_files(store, probs, plan, *lost):
        chunk.unlink()
    for chunk in tile_chunk_files(store, probs, plan, *corrupt):
        chunk.write_bytes(b"\x00garbage" * 64)
    region = tile_region(plan, *changed)
    probs[region] = probs[region][...] * 0.5  # readable, but not what was recorded
    lines = (partial / "tiles.txt").read_text().splitlines()
    old = [line for line in lines if tuple(map(int, line.split()[:2])) == unchecked][0]
    lines = [" ".join(line.split()[:2]) if line == old else line for line in lines]  # an older run's line
    (partial / "tiles.txt").write_text("\n".join(lines) + "\n0 3")  # and a torn last line

    events = []
    (result,) = segment_files([source], out, M2, probabilities=True, progress=events.append, **OPTIONS)
    assert result.status == "done"
    assert [e.text for e in events if isinstance(e, Notice)] == [
        f"resuming: {len(record) - 4} of {TILES} tiles already done",
        f"4 of {len(record)} recorded tiles failed verification and are recomputed (1 checksum differs, "
        f"1 chunks missing, 1 chunks unreadable, 1 recorded without a checksum)"]
    assert sum(hasattr(e, "frame") for e in events) == TILES - len(record) + 4
    _assert_same(_snapshot(out, "zarr"), references["zarr"][0])


def test_record_lines(tmp_path):
    path = tmp_path / "tiles.txt"
    path.write_text("0 1 0000abcd\n0 2\n0 3 nothex!!\n0 1 000000ff\nrubbish\n1 4 12345678\n0 5 1234")
    assert read_record(path) == {(0, 1): 0xFF, (0, 2): None, (0, 3): None, (1, 4): 0x12345678}
    assert read_record(tmp_path / "missing.txt") == {}


def _write_lock(output: Path, pid: int, host: str | None = None) -> Path:
    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-12-03 12:00:01"}))
    return lock


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_second_run_on_a_locked_output_fails_and_writes_nothing(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock = _write_lock(out / "cells_labels.zarr", sleeper.pid)
        before = lock.read_text()
        assert main(["segment", str(inputs["zarr"]), "-o", str(out), *ENGINE]) == 1
        err = capsys.readouterr().err
        message = (f"output {out / 'cells_labels.zarr'} is being written by another run (pid {sleeper.pid} on "
                   f"host {socket.gethostname()}, since 2026-12-03 12:00:01); wait for it to finish, or delete "
                   f"{lock} if that run is gone")
        assert any(message in line for line in err.splitlines()), err
        assert [p.name for p in out.iterdir()] == [lock.name] and lock.read_text() == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_taken_over(inputs, references, tmp_path):
    out = tmp_path / "out"
    pid = _dead_pid()
    _write_lock(out / "cells_labels.zarr", pid)
    events = []
    (result,) = segment_files([inputs["zarr"]], out, M2, probabilities=True, progress=events.append, **OPTIONS)
    assert result.status == "done"
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [f"took over the stale lock {lock_path(out / 'cells_labels.zarr')} of a run that is gone "
                       f"(pid {pid} on host {socket.gethostname()}, since 2026-12-03 12:00:01)"]
    _assert_same(_snapshot(out, "zarr"), references["zarr"][0])
    assert not list(out.glob(".*"))


def test_lock_released_however_the_run_ends(tmp_path):
    output = tmp_path / "sub" / "x_labels.zarr"
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error):
            with output_lock(output) as lock:
                info = json.loads(lock.path.read_text())
                assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
                with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} on host"):
                    acquire(output)  # this process is alive: a second run in it is refused too
                raise error
        assert not lock.path.exists()


def test_lock_of_another_host_is_respected(tmp_path):
    output = tmp_path / "x_labels.tif"
    _write_lock(output, _dead_pid(), host="elsewhere.example")
    with pytest.raises(OutputLockedError, match="on host elsewhere.example"):
        acquire(output)
    lock_path(output).write_text("{")  # torn by a kill between creating and filling it
    with pytest.raises(OutputLockedError):
        acquire(output)  # a fresh unreadable lock may be a run just starting
    os.utime(lock_path(output), (time.time() - 3600, time.time() - 3600))
    lock = acquire(output)
    assert lock.taken_over == {}
    release(lock)
    assert not lock_path(output).exists()


def test_skipped_job_removes_only_its_own_stale_partials(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cells_labels.tif").write_bytes(b"done before")  # the finished output: skipped
    (out / ".cells_labels.tif.partial").write_bytes(b"left by a killed run")
    (out / ".cells_probabilities.tif.partial").write_bytes(b"left by a killed run")
    (out / ".cells_labels.zarr.partial").mkdir()
    (out / ".other_labels.tif.partial").write_bytes(b"another file's")
    (out / ".notes").write_text("not ours")
    (result,) = segment_files([inputs["tif"]], out, M2, **OPTIONS)
    assert result.status == "skipped (exists)"
    assert sorted(p.name for p in out.iterdir()) == [".cells_labels.zarr.partial", ".notes",
                                                     ".other_labels.tif.partial", "cells_labels.tif"]
    out_zarr = tmp_path / "out_zarr"
    out_zarr.mkdir()
    (out_zarr / "cells_labels.zarr").mkdir()
    (out_zarr / ".cells_labels.zarr.partial" / "probabilities.zarr").mkdir(parents=True)
    (result,) = segment_files([inputs["zarr"]], out_zarr, M2, **OPTIONS)
    assert result.status == "skipped (exists)"
    assert [p.name for p in out_zarr.iterdir()] == ["cells_labels.zarr"]
