"""``tiled-unet segment INPUT... -o OUTPUT``: instance labels of many files, resumable, on a cluster.

Exit status: 0 when every file was segmented (or skipped because its output exists),
1 when any file failed, 2 for a usage error (nothing was run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..batch.files import (
    FileResult,
    FileStarted,
    ModelChoice,
    Notice,
    find_inputs,
    format_summary,
    job_format,
    segment_files,
    single_output,
)
from ..events import run_to_end
from ..io.arrays import open_image
from ..io.lock import output_lock
from ..io.paths import claim_output
from ..io.tiff import write_label_tiff
from ..pipeline import LabelProgress, segment_iter
from ..synthetic.nuclei import sample
from .guard import JobRefused, check_job, input_label
from .options import (
    default_model,
    engine_kwargs,
    engine_options,
    instance_overrides,
    output_axes,
)


class _Printer:
    """Plain-text progress on stderr: overall file count and the current file's bar."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.name, self.head, self.last = "", "", ""
        self.live = getattr(self.stream, "isatty", lambda: False)()  # bars only on a terminal

    def _line(self, text: str) -> None:
        if self.live and text != self.last:
            print(f"\r{text:<100.100}", end="", file=self.stream, flush=True)
            self.last = text

    def _end(self) -> None:
        if self.last:
            print(f"\r{'':<100}\r", end="", file=self.stream)
            self.last = ""

    def __call__(self, event) -> None:

        if isinstance(event, FileStarted):
            self.head, self.name = f"[{event.index + 1}/{event.total}]", Path(event.input).name
            self._line(f"{self.head} {self.name}")
        elif isinstance(event, Notice):
            self._end()
            print(f"{self.head} {self.name}: {event.text}", file=self.stream)
        elif isinstance(event, LabelProgress):
            self._line(f"{self.head} {self.name} {_bar(event.fraction)} {event.stage} {event.done}/{event.total}")
        elif isinstance(event, FileResult):
            self._end()
            detail = event.message if not event.ok else (f"{event.cells} cells" if event.cells is not None else "")
            print(f"{self.head} {Path(event.input).name}: {event.status.upper() if not event.ok else event.status}"
                  f"{': ' + detail if detail else ''}", file=self.stream, flush=True)
        elif getattr(event, "note", ""):
            self._end()
            print(f"{self.head} {self.name}: {event.note}".strip(), file=self.stream)
        elif hasattr(event, "frame"):
            frame = f" frame {event.frame + 1}/{event.frames}" if event.frames > 1 else ""
            self._line(f"{self.head} {self.name} {_bar(event.fraction)} tile {event.done}/{event.total}{frame}")


def _bar(fraction: float, width: int = 24) -> str:
    filled = int(width * fraction)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def cmd_segment(args: argparse.Namespace) -> int:

    if args.sample:
        if args.inputs:
            raise ValueError("give either INPUT paths or --sample NAME, not both")
        return _segment_sample(args)
    if not args.inputs:
        raise ValueError("give INPUT paths (files, folders, glob patterns) or --sample NAME")
    if args.output is None and not args.into_ome_labels:
        raise ValueError("give -o OUTPUT (a folder, or a .tif/.zarr path for a single input), or "
                         "--into-ome-labels to write into OME-Zarr images")

    options = engine_kwargs(args)
    model = args.model if args.model and len(args.model) > 1 else (args.model[0] if args.model else None)
    _check_jobs(args, model, options)
    start = time.perf_counter()
    results = segment_files(args.inputs, args.output, model, recursive=args.recursive,
                            overwrite=args.overwrite, probabilities=args.probabilities,
                            into_ome_labels=args.into_ome_labels, label_name=args.label_name,
                            output_format=args.format, scheduler=args.scheduler, axes=args.axes,
                            voxel_size=args.voxel_size,
                            instances=instance_overrides(args),
                            block_shape=tuple(args.block_shape) if args.block_shape else None,
                            progress=_Printer(), **options)
    print(format_summary(results))
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0 if all(r.ok for r in results) else 1


def _check_jobs(args: argparse.Namespace, model: Any, options: dict) -> None:
    """:func:`~.guard.check_job` for every input before the first starts (inputs that cannot be
    opened or read are left to the batch, which reports them per file)."""
    models = ModelChoice(model)
    jobs = find_inputs(args.inputs, args.recursive, args.output)
    out = Path(args.output) if args.output is not None else None
    single = single_output(jobs, out)
    for job in jobs:
        if job.error:
            continue
        try:
            source = open_image(job.path)
            net = models.choose(args.axes, source.shape)
            tiff_out = job_format(job.path, out, single, args.format) == "tif"
            check_job(source, net, axes=args.axes, in_memory=tiff_out, yes=args.yes, options=options,
                      what=input_label(job.path))
        except JobRefused:
            raise
        except Exception:  # noqa: BLE001 - reported by the batch for this file
            continue


def _segment_sample(args: argparse.Namespace) -> int:

    if args.output is None:
        raise ValueError("give -o OUTPUT (.tif or .zarr) for the sample's labels")
    image = sample(args.sample)[0]
    model = args.model[0] if args.model else default_model(image, args.sample, args.axes)
    output = Path(args.output)
    to_tiff = output.suffix.lower() in (".tif", ".tiff")
    claim_output(output, args.overwrite, [getattr(args, "input", None)], replace_hint="pass --overwrite to replace it")
    start = time.perf_counter()
    printer = _Printer()
    with output_lock(output) as lock:
        if lock.notice:
            print(lock.notice, file=sys.stderr)
        gen = segment_iter(image, model, out=None if to_tiff else output, instances=instance_overrides(args),
                           overwrite=args.overwrite, **engine_kwargs(args))
        labels = run_to_end(gen, printer)
        printer._end()
        if to_tiff:  # a label TIFF like those of other inputs (ImageJ, uint16 below 65,536 cells)
            write_label_tiff(output, labels, output_axes(image, model, None).replace("C", ""))
    print(f"wrote {output}: instance labels, shape {tuple(labels.shape)}, {int(labels[...].max())} cells, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def add_segment_parser(sub) -> None:

    g = sub.add_parser("segment", help="instance labels of images, folders and patterns (one ID per cell)",
                       description="Instance labels (0 = background, 1..N = cells) of each input. Exit "
                       "status: 0 all done or skipped, 1 some file failed, 2 usage error.")
    g.add_argument("inputs", nargs="*", metavar="INPUT", help="TIFF files, zarr arrays, OME-Zarr images, "
                   "folders of them, or glob patterns (quote them)")
    g.add_argument("-o", "--output", help="output folder (<stem>_labels.tif / <name>_labels.zarr), or for "
                   "one input a .tif or .zarr path")
    g.add_argument("--sample", choices=["nuclei-2d", "nuclei-3d"], help="segment a built-in synthetic sample")
    g.add_argument("--recursive", action="store_true", help="also look in sub-folders (mirrored in -o)")
    g.add_argument("--format", choices=["tif", "zarr"], help="output format (default: TIFF for TIFF "
                   "inputs, zarr for zarr inputs; zarr outputs are resumable)")
    g.add_argument("--into-ome-labels", action="store_true", help="write an OME-Zarr input's labels INTO "
                   "it, as labels/NAME (adds a group, changes no existing array)")
    g.add_argument("--label-name", default="tiled-unet", help="name of the labels group (default: %(default)s)")
    g.add_argument("--probabilities", action="store_true", help="also keep the class probabilities "
                   "(<stem>_probabilities.tif / .zarr next to the labels)")
    g.add_argument("--overwrite", action="store_true", help="redo outputs that exist (default: skip them)")
    g.add_argument("--scheduler", help="dask.distributed scheduler address (tcp://HOST:8786): run zarr jobs "
                   "on that cluster; or a local dask scheduler name for the labelling")
    g.add_argument("--model", action="append", help="built-in model name or .safetensors file; give one 2-D "
                   "and one 3-D model to choose per file (default: nuclei-2d / nuclei-3d)")
    engine_options(g)
    g.add_argument("--axes", help="axes of every input, e.g. ZYX, TCYX (default: from the file's "
                   "metadata, else inferred)")
    g.add_argument("--voxel-size", type=float, nargs="+", metavar="S", help="voxel size of the spatial axes "
                   "in micrometres, e.g. 2.0 0.5 0.5 (default: from the file's metadata)")
    g.add_argument("--diameter", default="auto", help="typical cell diameter in pixels, or micrometres when "
                   "the voxel size is known: the image is rescaled so that its cells have a size the model "
                   "was trained at; 'auto' (default) estimates it, 'off' uses the image as it is")
    g.add_argument("--block-shape", type=int, nargs="+", metavar="N", help="blocks of the zarr labelling")
    i = g.add_argument_group("instances (default: the model's stored parameters)")
    i.add_argument("--foreground-threshold", type=float, help="1 - p(background) >= this is foreground")
    i.add_argument("--seed-threshold", type=float, help="p(interior) >= this makes seeds")
    i.add_argument("--seed-low-threshold", type=float, help="seeds from p(interior) >= this, split at "
                   "--seed-threshold only into pieces of at least max(--min-seed-size, --min-size) pixels (0: off)")
    i.add_argument("--min-seed-size", type=int, help="smaller seeds are dropped (pixels)")
    i.add_argument("--max-growth", type=int, help="seeds grow at most this many pixels")
    i.add_argument("--min-size", type=int, help="smaller cells are removed (pixels)")
    i.add_argument("--no-fill-holes", action="store_true", help="keep holes inside cells")
    i.add_argument("--drop-unseeded", action="store_true", help="drop foreground regions without a seed")
    g.set_defaults(func=cmd_segment)
