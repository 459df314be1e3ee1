"""Labels of a probability zarr array of any size, with or without extra axes, streaming progress.

:func:`label_zarr_iter` is the one labelling stage of every zarr path (in one process,
resumable, on a cluster): ``(classes, *spatial)`` goes to :func:`labels_blockwise` whole;
``(*extra, classes, *spatial)`` (e.g. T) is labelled frame by frame through a view (never
copied whole) and each frame's labels copied into one array chunk by chunk.
"""

from __future__ import annotations

import itertools
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from ..config import InstanceConfig, LabelProgress
from ..io.arrays import create_zarr_output, discard_zarr_output, publish_zarr_output
from .blockwise import labels_blockwise


class LabellingCancelled(Exception):
    """Raised inside :func:`labels_blockwise` (at its next progress report) when its generator is closed."""


_FINISHED = object()


def stream_progress(function: Callable, *args, **kwargs) -> Generator[LabelProgress, None, Any]:
    """Run ``function(*args, progress=..., **kwargs)`` in a thread and yield its progress as it comes.

    Returns what ``function`` returns and raises what it raises. Closing the generator (a cancel)
    makes the next progress report raise :class:`LabellingCancelled`, which stops the function
    cleanly, and waits for it to end.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    cancelled = threading.Event()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int, stage: str) -> None:
        if cancelled.is_set():
            raise LabellingCancelled("labelling cancelled")
        events.put(LabelProgress(done, total, stage))

    def work() -> None:
        try:
            outcome["value"] = function(*args, progress=progress, **kwargs)
        except BaseException as error:  # handed to the generator's thread below
            outcome["error"] = error
        finally:
            events.put(_FINISHED)

    thread = threading.Thread(target=work, name="tiled-unet-labels", daemon=True)
    thread.start()
    try:
        while True:
            try:  # a timeout keeps the wait interruptible (Ctrl-C) on every platform
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event is _FINISHED:
                break
            yield event
    finally:
        cancelled.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class FrameView:
    """One frame of a ``(*lead, classes, *spatial)`` array, read region by region (never copied whole)."""

    def __init__(self, array: Any, frame: tuple[int, ...]):
        self.array, self.frame = array, frame
        self.shape = tuple(array.shape[len(frame):])
        self.chunks = tuple(array.chunks[len(frame):])
        self.dtype, self.ndim = array.dtype, len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.array[self.frame + (index if isinstance(index, tuple) else (index,))]


def copy_by_chunks(source: Any, target: Any, frame: tuple[int, ...] = ()) -> None:
    """``target[frame] = source`` one chunk of ``source`` at a time (memory bounded by the chunk)."""
    chunks = tuple(source.chunks)
    for corner in itertools.product(*(range(0, n, c) for n, c in zip(source.shape, chunks))):
        region = tuple(slice(i, min(i + c, n)) for i, c, n in zip(corner, chunks, source.shape))
        target[frame + region] = source[region]


def label_zarr_iter(probs: Any, out: Path, config: InstanceConfig, class_names: tuple[str, ...], *,
                    ndim: int, block_shape: tuple[int, ...] | None = None, overwrite: bool = False,
                    scheduler: Any = None, workdir: str | Path | None = None) -> Generator[LabelProgress, None, Any]:
    """Labels of finished probabilities ``probs`` (a zarr array ``(*lead, classes, *spatial)``,
    ``ndim`` spatial axes) into a new zarr array ``out``; yields progress, returns the array.
    ``workdir``: where temporary volumes go (default: a temporary folder next to ``out``)."""
    lead, spatial = tuple(probs.shape[:-ndim - 1]), tuple(probs.shape[-ndim:])
    out = Path(out)
    scratch = Path(workdir) if workdir is not None else Path(
        tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if not lead:
            return (yield from stream_progress(labels_blockwise, probs, out, config=config, class_names=class_names,
                                               block_shape=block_shape, overwrite=overwrite, scheduler=scheduler,
                                               tmpdir=scratch))
        target = None
        for frame in itertools.product(*(range(n) for n in lead)):
            frame_labels = yield from stream_progress(
                labels_blockwise, FrameView(probs, frame), scratch / "frame_labels.zarr", config=config,
                class_names=class_names, block_shape=block_shape, overwrite=True, scheduler=scheduler,
                tmpdir=scratch)
            if target is None:
                target = create_zarr_output(out, lead + spatial, (1,) * len(lead) + tuple(frame_labels.chunks),
                                            frame_labels.dtype, overwrite)
            elif np.dtype(frame_labels.dtype).itemsize > np.dtype(target.dtype).itemsize:
                raise OverflowError(f"frame {frame} has more cells than the {target.dtype} labels of the "
                                    f"first frame can hold; segment the frames one by one")
            copy_by_chunks(frame_labels, target, frame)
        return publish_zarr_output(target, out)
    except BaseException:  # failed or stopped: the output stays as it was, nothing temporary left
        discard_zarr_output(out)
        raise
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
