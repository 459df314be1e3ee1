"""Checks before a command starts work: inputs with no data written, results too large for memory,
jobs that will take hours (which ask, or need ``--yes``)."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import psutil

from ..engine.estimate import estimate
from ..io.arrays import open_image
from ..io.layout import parse_layout

#: jobs estimated longer than this ask first (or need --yes)
LONG_JOB_SECONDS = 3600.0


class JobRefused(ValueError):
    """A job not started: what was found and how to start it anyway."""


def unwritten(source: Any) -> bool:
    """True for a zarr array none of whose chunks has been written (it reads as fill values)."""
    count = getattr(source, "nchunks_initialized", None)
    try:
        return count is not None and int(count() if callable(count) else count) == 0
    except Exception:  # noqa: BLE001 - stores that cannot list their keys
        return False


def check_job(image: Any, net: Any, *, axes: str | None, in_memory: bool, yes: bool,
              options: dict[str, Any], what: str) -> None:
    """Refuse or confirm a job before it starts: ``what`` names the input in messages."""
    source = open_image(image)
    if unwritten(source) and not yes:
        raise JobRefused(f"{what} has no data written (none of its chunks exists, so it reads as "
                         f"{getattr(source, 'fill_value', 0)} everywhere); pass --yes to segment it anyway")
    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    frames = math.prod(layout.lead_shape)
    est = estimate(layout.spatial_shape, frames, net, tile_shape=options.get("tile_shape", "auto"),
                   device=options.get("device", "auto"), in_memory=in_memory,
                   batch_size=options.get("batch_size", 1), halo=options.get("halo"),
                   precision=options.get("precision", "auto"), backend=options.get("backend", "auto"))
    free = psutil.virtual_memory().available
    if in_memory and est.result_bytes > free:
        raise JobRefused(f"{what}: the result would take about {est.result_bytes / 2**30:.1f} GiB of memory "
                         f"to write a TIFF, more than the {free / 2**30:.1f} GiB available; write a zarr output "
                         f"(-o out.zarr), which is written tile by tile")
    if est.seconds > LONG_JOB_SECONDS and not yes:
        question = f"{what}: {est.text()}"
        if sys.stdin is not None and sys.stdin.isatty():
            answer = input(f"{question}\nStart it? [y/N] ").strip().lower()
            if answer in ("y", "yes"):
                return
            raise JobRefused("not started")
        raise JobRefused(f"{question} This is a long job: pass --yes to start it without asking")


def input_label(image: Any) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
