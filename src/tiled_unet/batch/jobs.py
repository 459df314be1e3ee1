"""One file of a batch run: a TIFF in memory, or a resumable zarr job; outputs moved into place whole."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ..io.arrays import TIFF_SUFFIXES, open_image, scale_attrs
from ..io.layout import parse_layout
from ..io.lock import output_lock
from ..io.omezarr import label_path, read_ome_image, write_ome_labels
from ..io.paths import claim_output, file_stem, is_zarr, partial_path, probabilities_path, put_in_place, remove
from ..io.tiff import read_tiff_meta, write_label_tiff, write_tiff
from ..pipeline import (
    resolve_instance_config,
    resolved_scale,
    segment_in_memory,
    segment_iter,
)
from .resume import Notice, segment_zarr_iter

SKIPPED = "skipped (exists)"


def _axes_for(axes: str | None, shape: tuple[int, ...], ndim: int) -> str | None:
    """Axes the file states, if they fit the model (else the shape decides)."""
    if axes is None or len(axes) != len(shape):
        return None
    return axes if "YX" in axes and (ndim == 2 or "Z" in axes) else None


def _check_ndim(shape: tuple[int, ...], where: Path) -> None:
    if len(shape) < 2:
        raise ValueError(f"{where} is a {len(shape)}-D image (shape {shape}); expected a 2-D or 3-D image "
                         f"(optionally with channels or time)")


def run_file(path: Path, target: Path | None, fmt: str, models: Any, *, overwrite: bool,
             probabilities: bool, into_ome_labels: bool, label_name: str, scheduler: Any, client: Any,
             instances: Any, block_shape: Any, options: dict, axes: str | None = None,
             voxel_size: Any = None) -> Generator[Any, None, tuple]:
    """Segment one image; returns ``(output, status, cells, message)``. The whole job holds the
    output's lock (:mod:`tiled_unet.io.lock`): a second run on the same output fails at once."""

    ome = read_ome_image(path) if is_zarr(path) and path.is_dir() else None
    if into_ome_labels and ome is not None:
        if not label_name or "/" in label_name or label_name.startswith("."):
            raise ValueError(f"label name {label_name!r} must be a plain name such as 'cells'")
        final = label_path(ome, label_name)
        locked = path.parent / f"{path.name}.labels-{label_name}"
        partial = partial_path(locked)
    elif target is None:
        raise ValueError(f"{path} is not an OME-Zarr image (no multiscales metadata) so it has no labels "
                         f"group to write into; give an output folder with -o")
    else:
        final, locked, partial = target, target, partial_path(target)
        claim_output(final, True, [path])  # never the input, whatever overwrite says; existing: skipped below
    with output_lock(locked) as lock:
        if lock.notice:
            yield Notice(lock.notice)
        if final.exists() and not overwrite:
            for stale in _own_partials(partial, final):  # left by a run stopped after its output was in place
                remove(stale)
            return os.fspath(final), SKIPPED, None, ""
        return (yield from _job(path, final, partial, ome, fmt, models, overwrite=overwrite,
                                probabilities=probabilities, into_ome_labels=into_ome_labels,
                                label_name=label_name, scheduler=scheduler, client=client, instances=instances,
                                block_shape=block_shape, options=options, axes=axes, voxel_size=voxel_size))


def _own_partials(partial: Path, final: Path) -> list[Path]:
    """The temporary outputs of this job (``.<name>.partial``) that exist: never anything else."""
    probs = (probabilities_path(final, "tif"), probabilities_path(final, "zarr"))
    names = [partial] + [partial_path(p) for p in probs] + [_ours(p) for p in probs]
    return [p for p in names if os.path.lexists(p)]


def _ours(keep: Path) -> Path:
    """Marks probabilities this job put in place before its labels (a kill in between: the rerun
    may replace them, they are not the user's)."""
    return keep.with_name(f".{keep.name}.ours")


def _place_probabilities(keep: Path, write) -> None:
    """Put the probabilities at ``keep`` via ``write()``, marked as ours until the labels are in place."""
    _ours(keep).write_text("written by tiled-unet before its labels; removed once they are in place\n")
    write()


def _job(path: Path, final: Path, partial: Path, ome: Any, fmt: str, models: Any, *, overwrite: bool,
         probabilities: bool, into_ome_labels: bool, label_name: str, scheduler: Any, client: Any,
         instances: Any, block_shape: Any, options: dict, axes: str | None,
         voxel_size: Any) -> Generator[Any, None, tuple]:
    """The job of :func:`run_file` once its output is locked and not skipped."""
    keep = None
    if probabilities:  # a side output: the same rules as the labels, checked before any work
        keep = (probabilities_path(final, "tif" if fmt == "tif" else "zarr") if not (into_ome_labels and ome is not None)
                else path.parent / f"{file_stem(path)}_{label_name}_probabilities.zarr")
        claim_output(keep, overwrite or _ours(keep).exists(), [path], what="probabilities output",
                     replace_hint="pass --overwrite (overwrite=True) to replace it")
    given_axes = axes.upper() if axes else None
    if path.suffix.lower() in TIFF_SUFFIXES:

        meta = read_tiff_meta(path)
        axes, voxel = meta.axes, meta.voxel_size
    else:
        axes, voxel = (ome.axes, ome.voxel_size) if ome is not None else (None, {})
    source = open_image(path)
    shape = tuple(source.shape)
    _check_ndim(shape, path)
    net = models.choose(given_axes or axes, shape)
    tile = options.get("tile_shape")
    if isinstance(tile, tuple) and len(tile) == 1:  # one size for every spatial axis of this model
        options = {**options, "tile_shape": tile * net.config.ndim}
    axes = given_axes or _axes_for(axes, shape, net.config.ndim)
    if voxel_size is not None:
        if len(voxel_size) != net.config.ndim:
            raise ValueError(f"--voxel-size (voxel_size=) got {len(voxel_size)} values {tuple(voxel_size)} for a "
                             f"{net.config.ndim}-D image and model; give one per spatial axis "
                             f"({'Z Y X' if net.config.ndim == 3 else 'Y X'}), in micrometres")
        names = "ZYX" if len(voxel_size) == 3 else "YX"
        voxel = dict(zip(names, (float(v) for v in voxel_size)))
    final.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tif" and not (into_ome_labels and ome is not None):
        cells, message = yield from _tiff_job(source, final, net, axes, voxel, keep, instances, options)
        return os.fspath(final), "done", cells, message

    config = resolve_instance_config(net.model_config.instances, instances)
    spatial_voxel = _spatial(voxel, net.config.ndim)
    notes = []
    scaled = resolved_scale(path, net, axes, dict(options, voxel_size=spatial_voxel))
    if scaled["model_grid"]:  # resampled for the model: one zarr-to-zarr run (not resumable)
        partial.mkdir(parents=True, exist_ok=True)
        notes.append(f"resampled by {scale_note(scaled)} for the model (a rerun starts over)")
        gen = segment_iter(path, net, out=partial / "labels.zarr", probabilities=partial / "probabilities.zarr",
                           instances=config, overwrite=True, block_shape=block_shape, scheduler=scheduler,
                           axes=axes, **{k: v for k, v in scaled.items() if k != "model_grid"})
    else:
        gen = segment_zarr_iter(path, net, partial, instances=config, overwrite=overwrite, axes=axes,
                                block_shape=block_shape, scheduler=scheduler, client=client,
                                options={k: v for k, v in scaled.items()
                                         if k not in ("model_grid", "voxel_size", "diameter")})
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            labels = stop.value
            break
        if isinstance(event, Notice):
            notes.append(event.text)
        yield event
    cells = label_count(labels)
    labels.attrs.update(scale_attrs(labels.attrs.get("axes", ""), voxel))
    if keep is not None:  # first: the labels in place mark the file as done
        _place_probabilities(keep, lambda: put_in_place(partial / "probabilities.zarr", keep))
        notes.append(f"probabilities in {keep}")
    if into_ome_labels and ome is not None:

        write_ome_labels(ome, label_name, labels, partial, overwrite)
    else:
        put_in_place(partial / "labels.zarr", final)
    if keep is not None:
        _ours(keep).unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    return os.fspath(final), "done", cells, "; ".join(notes)


def _spatial(voxel: dict, ndim: int) -> tuple[float, ...] | None:
    axes = "ZYX"[-ndim:] if ndim == 3 else "YX"
    return tuple(voxel[a] for a in axes) if all(a in voxel for a in axes) else None


def scale_note(options: dict) -> str:
    """How a job was resampled, for its message."""
    diameter = options.get("diameter")
    return f"cell diameter {diameter:.1f}" if isinstance(diameter, float) else "voxel size"


def _tiff_job(source: Any, final: Path, net: Any, axes: str | None, voxel: dict, keep: Path | None,
              instances: Any, options: dict) -> Generator[Any, None, tuple[int, str]]:
    """In memory, from the opened input ``source``: probabilities (kept at ``keep`` unless None),
    labels per frame, label TIFF (same axes and voxel size)."""
    layout = parse_layout(source.shape, source.dtype, net.config, axes)
    config = resolve_instance_config(net.model_config.instances, instances)
    labels, probs = yield from segment_in_memory(source, net, config, layout.axes,
                                                 dict(options, voxel_size=_spatial(voxel, net.config.ndim)))
    sizes = {a: v for a, v in voxel.items() if a in layout.spatial_axes}
    message = ""
    if keep is not None:  # first: the labels in place mark the file as done
        same_grid = probs.shape[-net.config.ndim:] == labels.shape[-net.config.ndim:]
        _place_probabilities(keep, lambda: write_tiff(keep, np.asarray(probs, np.float32), layout.output_axes,
                                                      sizes if same_grid else None))
        message = f"probabilities in {keep}"
    write_label_tiff(final, labels, layout.output_axes.replace("C", ""), sizes)
    if keep is not None:
        _ours(keep).unlink(missing_ok=True)
    return label_count(labels), message


def label_count(labels: Any) -> int:
    """Number of cells: labels are consecutive, so the largest ID (read chunk by chunk)."""
    if isinstance(labels, np.ndarray):
        return int(labels.max()) if labels.size else 0
    import dask.array as da

    return int(da.from_zarr(labels).max().compute())
