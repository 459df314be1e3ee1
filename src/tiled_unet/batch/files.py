"""Segment many files in one run: the model is loaded once, a failing file does not stop the others.

Inputs: TIFF files, zarr arrays, OME-Zarr images, folders of them (``recursive`` for
sub-folders) and glob patterns. Outputs, in the ``output`` folder (sub-folders mirrored):
``<stem>_labels.tif`` for a TIFF, ``<name>_labels.zarr`` for a zarr input
(``output_format`` to choose), or, with ``into_ome_labels``, ``labels/<label_name>`` inside
an OME-Zarr image. Each output is written under a temporary name and moved into place when
complete; an existing output is skipped (``overwrite=True`` redoes it); a zarr output
resumes a killed run (:mod:`tiled_unet.resume`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

from ..config import InferenceConfig, config_or_options
from ..engine.distributed import connect
from ..events import run_to_end
from ..io.arrays import TIFF_SUFFIXES
from ..io.layout import guess_spatial_ndim
from ..io.paths import file_stem, is_zarr
from ..weights import builtin_models, resolve_model
from .jobs import run_file
from .resume import Notice

__all__ = ["BatchConfig", "FileResult", "FileStarted", "Notice", "find_inputs", "format_summary", "segment_files",
           "segment_files_iter"]

FORMATS = ("tif", "zarr")


@dataclass(frozen=True)
class BatchConfig:
    """What :func:`segment_files` does with the files (the engine's options are those of
    :func:`tiled_unet.predict`, or its ``config=`` :class:`~tiled_unet.InferenceConfig`).

    ``recursive``: search sub-folders; ``overwrite``: redo existing outputs; ``probabilities``:
    keep them as ``<name>_probabilities.*``; ``into_ome_labels``: write ``labels/<label_name>``
    inside an OME-Zarr input; ``output_format``: "tif", "zarr" or None (by input); ``instances``:
    an InstanceConfig or dict of overrides; ``block_shape``: labelling blocks; ``axes`` /
    ``voxel_size`` (spatial axes, micrometres): override what the files say.
    """

    recursive: bool = False
    overwrite: bool = False
    probabilities: bool = False
    into_ome_labels: bool = False
    label_name: str = "tiled-unet"
    output_format: str | None = None
    instances: Any = None
    block_shape: tuple[int, ...] | None = None
    axes: str | None = None
    voxel_size: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.output_format is not None and self.output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {FORMATS} or None, got {self.output_format!r}")
        for name in ("recursive", "overwrite", "probabilities", "into_ome_labels"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}"
                                + ("; segment_files names kept probabilities itself: give probabilities=True"
                                   if name == "probabilities" else ""))


BATCH_OPTIONS = frozenset(f.name for f in dataclasses.fields(BatchConfig))


@dataclass(frozen=True)
class FileStarted:
    """Yielded when file ``index`` (0-based) of ``total`` starts."""

    index: int
    total: int
    input: str


@dataclass(frozen=True)
class FileResult:
    """The outcome of one input: ``status`` is ``"done"``, ``"skipped (exists)"`` or ``"failed"``
    (``message`` says why); ``cells`` is the number of cells found."""

    input: str
    output: str | None
    status: str
    cells: int | None = None
    seconds: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass(frozen=True)
class _Job:
    path: Path
    base: Path | None  # the folder it was found in (its sub-folders are mirrored)
    error: str | None = None


def _scan(folder: Path, recursive: bool, skip: Path | None) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip):
            continue
        if is_zarr(entry) or (entry.is_file() and entry.suffix.lower() in TIFF_SUFFIXES):
            found.append(entry)
        elif entry.is_dir() and recursive:
            found += _scan(entry, recursive, skip)
    return found


def _without_own_outputs(found: list[Path], base: Path, output: Path) -> list[Path]:
    """``found`` less the files this run writes for the others (``<name>_labels.*`` and
    ``<name>_probabilities.*`` in the output folder): ``segment DIR -o DIR`` run twice does
    not segment its own outputs."""
    outputs = set()
    for p in found:
        sub, stem = p.parent.relative_to(base), file_stem(p)
        for kind in ("labels", "probabilities"):
            for suffix in ("tif", "zarr"):
                outputs.add((output / sub / f"{stem}_{kind}.{suffix}").resolve())
    return [p for p in found if p.resolve() not in outputs]


def find_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False,
                output: str | os.PathLike | None = None) -> list[_Job]:
    """The images named by ``inputs`` (files, zarr stores, folders, glob patterns), in order;
    a name that finds nothing becomes a failed job that says so."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    skip = Path(output).resolve() if output is not None else None
    jobs: list[_Job] = []
    for item in inputs:
        path = Path(item)
        if path.exists():
            if path.is_dir() and not is_zarr(path):
                found = _scan(path, recursive, skip)
                if skip is not None:
                    found = _without_own_outputs(found, path, skip)
                jobs += [_Job(p, path) for p in found] or [_Job(path, None, "folder holds no TIFF or zarr "
                                                                "images" + ("" if recursive else
                                                                            " (use --recursive for sub-folders)"))]
            else:
                jobs.append(_Job(path, None))
        elif glob.has_magic(os.fspath(item)):
            matches = [Path(m) for m in sorted(glob.glob(os.fspath(item), recursive=True))]
            matches = [m for m in matches if is_zarr(m) or m.suffix.lower() in TIFF_SUFFIXES]
            jobs += [_Job(m, None) for m in matches] or [_Job(path, None, "no TIFF or zarr image matches "
                                                               "this pattern")]
        else:
            jobs.append(_Job(path, None, "no such file or folder"))
    return jobs


def single_output(jobs: list[_Job], out: Path | None) -> bool:
    """True when ``out`` names the one output file (.tif or .zarr) of a single input."""
    return (len(jobs) == 1 and jobs[0].base is None and out is not None
            and out.suffix.lower() in TIFF_SUFFIXES + (".zarr",))


def job_format(path: Path, out: Path | None, single: bool, output_format: str | None) -> str:
    """``"tif"`` or ``"zarr"``: the labels' format for input ``path``."""
    if single:
        return out.suffix.lower().lstrip(".").replace("tiff", "tif")
    return output_format or ("zarr" if is_zarr(path) else "tif")


def _target(job: _Job, output: Path | None, single: bool, fmt: str) -> Path:
    if single:
        return output
    if output is None:
        raise ValueError("give an output folder (-o) for inputs that are not OME-Zarr images written "
                         "into (--into-ome-labels)")
    sub = job.path.parent.relative_to(job.base) if job.base is not None else Path()
    return output / sub / f"{file_stem(job.path)}_labels.{fmt}"


class ModelChoice:
    """Models loaded once, chosen per file by its number of spatial axes."""

    def __init__(self, model: Any):
        self.given = [model] if not isinstance(model, (list, tuple)) or model is None else list(model)
        self.loaded: dict[int, Any] | None = None

    def _load(self) -> dict[int, Any]:

        if self.loaded is None:
            if self.given == [None]:
                names = [n for n in ("nuclei-2d", "nuclei-3d") if n in builtin_models()]
                self.loaded = {resolve_model(n).config.ndim: resolve_model(n) for n in names}
            else:
                self.loaded = {}
                for spec in self.given:
                    net = resolve_model(spec)
                    if net.config.ndim in self.loaded:
                        raise ValueError(f"two {net.config.ndim}-D models given; give at most one 2-D "
                                         f"and one 3-D model")
                    self.loaded[net.config.ndim] = net
        return self.loaded

    def choose(self, axes: str | None, shape: tuple[int, ...]) -> Any:
        models = self._load()
        if len(models) == 1:
            return next(iter(models.values()))
        ndim = guess_spatial_ndim(shape, axes)
        if ndim not in models:
            raise ValueError(f"the image looks {ndim}-D (shape {shape}) but no {ndim}-D model is available "
                             f"(built-in nuclei-{ndim}d is not installed); give one with --model")
        return models[ndim]


def segment_files_iter(inputs: Sequence[str | os.PathLike] | str | os.PathLike,
                       output: str | os.PathLike | None = None, model: Any = None, *,
                       batch: BatchConfig | None = None, scheduler: Any = None, client: Any = None,
                       **options: Any) -> Generator[Any, None, list[FileResult]]:
    """Segment every input; yields :class:`FileStarted`, the engine's progress events,
    :class:`Notice` and one :class:`FileResult` per file; returns the results.

    ``model``: a model (name, file or :class:`UNet`), a list of one 2-D and one 3-D model
    (each file gets the one matching its axes), or None (built-in nuclei-2d / nuclei-3d).
    ``batch``: a :class:`BatchConfig`, or its fields as keywords (not both).
    ``scheduler`` (or ``client``): a ``dask.distributed.Client`` or scheduler address runs the
    zarr jobs on that cluster; a dask scheduler name ("threads", ...) only labels with it.
    Other options: those of :func:`tiled_unet.predict` (``tile_shape``, ``device``, ...).
    """
    cfg = config_or_options(BatchConfig, batch, {k: v for k, v in options.items() if k in BATCH_OPTIONS},
                            "segment_files")
    predict_options = _engine_options({k: v for k, v in options.items() if k not in BATCH_OPTIONS})
    jobs = find_inputs(inputs, cfg.recursive, output)
    out = Path(output) if output is not None else None
    single = single_output(jobs, out)
    if out is not None and not single and out.suffix.lower() in TIFF_SUFFIXES:
        raise ValueError(f"-o {out} names a file, but there are {len(jobs)} inputs; give an output folder")
    models = ModelChoice(model)
    if client is not None:
        if scheduler is not None:
            raise ValueError("give either scheduler= or client=, not both")
        scheduler = client
    client, own_client = None, False
    if scheduler is not None and not (isinstance(scheduler, str) and "://" not in scheduler
                                      and ":" not in scheduler):

        own_client = isinstance(scheduler, str)  # connected here from an address: closed here
        client, scheduler = connect(scheduler), None
    try:
        return (yield from _run_jobs(jobs, out, single, models, cfg, scheduler, client, predict_options))
    finally:
        if own_client:
            client.close()


def _engine_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a ``config=`` :class:`InferenceConfig` spread into its fields (giving both
    the config and some of its fields is an error), as each job reads them by name."""
    inference = options.pop("config", None)
    if inference is None:
        return options
    fields = [f.name for f in dataclasses.fields(InferenceConfig)]
    config_or_options(InferenceConfig, inference, {k: options[k] for k in fields if k in options}, "segment_files")
    return {**options, **{name: getattr(inference, name) for name in fields}}


def _run_jobs(jobs, out, single, models, cfg: BatchConfig, scheduler, client, predict_options):

    results: list[FileResult] = []
    seen: dict[Path, Path] = {}
    for n, job in enumerate(jobs):
        start = time.perf_counter()
        target = None
        yield FileStarted(n, len(jobs), os.fspath(job.path))
        try:
            if job.error:
                raise ValueError(job.error)
            fmt = job_format(job.path, out, single, cfg.output_format)
            target = None if cfg.into_ome_labels and out is None and is_zarr(job.path) else _target(
                job, out, single, fmt)
            if target is not None:
                key = target.resolve()
                if key in seen:
                    raise ValueError(f"{seen[key]} already writes {target}; rename one of the inputs")
                seen[key] = job.path
            result = yield from run_file(job.path, target, fmt, models, overwrite=cfg.overwrite,
                                         probabilities=cfg.probabilities, into_ome_labels=cfg.into_ome_labels,
                                         label_name=cfg.label_name, scheduler=scheduler, client=client,
                                         instances=cfg.instances, block_shape=cfg.block_shape,
                                         options=predict_options, axes=cfg.axes, voxel_size=cfg.voxel_size)
            result = FileResult(os.fspath(job.path), result[0], result[1], result[2],
                                time.perf_counter() - start, result[3])
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as err:  # noqa: BLE001 - reported per file; the other files still run
            message = str(err) if isinstance(err, (ValueError, OSError, TypeError)) else \
                f"{type(err).__name__}: {err}"
            result = FileResult(os.fspath(job.path), None if target is None else os.fspath(target), "failed",
                                None, time.perf_counter() - start, message)
        results.append(result)
        yield result
    return results


def segment_files(inputs: Sequence[str | os.PathLike] | str | os.PathLike,
                  output: str | os.PathLike | None = None, model: Any = None, *,
                  progress: Callable[[Any], None] | None = None, **options: Any) -> list[FileResult]:
    """Run :func:`segment_files_iter` to the end; ``progress`` receives its events.
    Returns one :class:`FileResult` per input (check ``.ok``; failures do not raise)."""
    gen = segment_files_iter(inputs, output, model, **options)
    return run_to_end(gen, progress)


def format_summary(results: Sequence[FileResult]) -> str:
    """A plain-text table: file, status, cells, seconds, output or reason."""
    rows = [("file", "status", "cells", "time", "output / reason")]
    for r in results:
        rows.append((r.input, r.status, "" if r.cells is None else str(r.cells), f"{r.seconds:.1f} s",
                     r.message if r.status == "failed" else (r.output or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status.startswith("skipped") for r in results)
    failed = sum(r.status == "failed" for r in results)
    lines.append(f"{done} done, {skipped} skipped, {failed} failed")
    return "\n".join(lines)
