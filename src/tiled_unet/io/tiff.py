"""TIFF axes and voxel size: read them from ImageJ / OME / resolution tags; the one TIFF writer.

Voxel sizes are in micrometres. Axes use tiled-unet's letters: ``Y``, ``X``, ``Z`` spatial,
``C`` channels (TIFF samples ``S`` included), any other letter an extra axis (``T``, ...).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .paths import partial_path
from .units import unit_factor

GENERIC = set("QI")  # tifffile's names for axes whose meaning the file does not say
IMAGEJ_ORDER = "TZCYXS"


@dataclass(frozen=True)
class TiffMeta:
    """What a TIFF says about itself: ``axes`` (None: unknown, infer from the shape), the
    voxel size per spatial axis in micrometres (``{}``: unknown), and its ``kind``
    (``"imagej"``, ``"ome"`` or ``"plain"``)."""

    shape: tuple[int, ...]
    dtype: str
    axes: str | None
    voxel_size: dict[str, float] = field(default_factory=dict)
    kind: str = "plain"


def _resolution(page, unit_size: float | None) -> dict[str, float]:
    """Pixel sizes from the X/YResolution tags (pixels per unit) where a length unit is known:
    ``unit_size`` micrometres (ImageJ's unit), else the ResolutionUnit tag's inch or centimetre."""
    sizes = {}
    tags = page.tags
    res_unit = tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 2
    factor = {2: 25400.0, 3: 10000.0}.get(res_unit) if unit_size is None else unit_size
    if factor is None:
        return sizes
    for axis, name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = tags.get(name)
        if tag is None:
            continue
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if num and den and num / den > 0 and not (num == den and unit_size is None and res_unit == 2):
            sizes[axis] = factor * den / num
    return sizes


def _ome_sizes(xml: str) -> dict[str, float]:
    root = ElementTree.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    sizes = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        factor = unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and factor is not None and float(value) > 0:
            sizes[axis] = float(value) * factor
    return sizes


def model_axes(tiff_axes: str) -> str | None:
    """tifffile's axes as tiled-unet axes (``S`` -> ``C``); None when some axis is generic
    (``Q``/``I``: let the shape decide) or a name repeats."""
    axes = tiff_axes.upper().replace("S", "C")
    if GENERIC & set(axes) or len(set(axes)) != len(axes) or axes.count("C") > 1:
        return None
    return axes


def read_tiff_meta(path: str | os.PathLike) -> TiffMeta:
    """Axes and voxel size of a TIFF's first series; raises ValueError for unreadable files."""
    try:
        with tifffile.TiffFile(os.fspath(path)) as tif:
            if not tif.series or not tif.pages:
                raise ValueError(f"cannot read {os.fspath(path)} as a TIFF: it holds no image "
                                 f"(corrupt or truncated?)")
            series = tif.series[0]
            page = series.pages[0] if series.pages else tif.pages[0]
            kind, sizes = "plain", {}
            if tif.is_imagej:
                kind = "imagej"
                meta = tif.imagej_metadata or {}
                factor = unit_factor(meta.get("unit"))
                if factor is not None:
                    sizes = _resolution(page, factor)
                    if "spacing" in meta and float(meta["spacing"]) > 0:
                        sizes["Z"] = float(meta["spacing"]) * factor
            elif tif.is_ome and tif.ome_metadata:
                kind = "ome"
                sizes = _ome_sizes(tif.ome_metadata)
            else:
                sizes = _resolution(page, None)
            axes = model_axes(series.axes)
            if kind == "plain":  # tifffile guesses samples from a size of 3 or 4: trust only what is written
                written = (tif.shaped_metadata or [{}])[0].get("axes") if tif.is_shaped else None
                rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and "S" in series.axes
                axes = model_axes(written) if written else axes if rgb else None
            return TiffMeta(tuple(series.shape), str(series.dtype), axes, sizes, kind)
    except (tifffile.TiffFileError, OSError, ElementTree.ParseError, KeyError, IndexError) as err:
        raise ValueError(f"cannot read {os.fspath(path)} as a TIFF (corrupt or not a TIFF?): {err}") from err


def write_tiff(path: str | os.PathLike, array: Any, axes: str, voxel_size: dict[str, float] | None = None,
               kind: str = "plain") -> None:
    """Write ``array`` with ``axes`` and ``voxel_size`` (micrometres) as a TIFF of ``kind``: ``"imagej"``
    (unit, spacing, resolution), ``"ome"`` (PhysicalSize*) or ``"plain"`` (axes; X/Y as resolution).

    Written to ``.<name>.partial`` in the same folder and renamed into place, so a failed or stopped
    write never leaves a partial file under ``path`` nor touches the file already there.
    """
    path = Path(path)
    sizes = voxel_size or {}
    planar = {"X", "Y"} <= set(sizes)
    metadata: dict = {"axes": axes}
    options: dict = {"metadata": metadata}
    if kind != "imagej" and "S" not in axes:  # a trailing axis of 3 or 4 is a class or Z axis, not RGB
        options["photometric"] = "minisblack"
    if kind == "imagej":
        if sizes:
            metadata["unit"] = "um"
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        options.update(imagej=True, resolution=(1.0 / sizes["X"], 1.0 / sizes["Y"]) if planar else None)
    elif kind == "ome":
        for axis in "XYZ":
            if axis in sizes:
                metadata[f"PhysicalSize{axis}"] = sizes[axis]
                metadata[f"PhysicalSize{axis}Unit"] = "µm"
        options["ome"] = True
    else:  # tifffile makes an OME-TIFF of a *.ome.tif name: the final name decides, not the temporary one
        options["ome"] = Path(path.name.lower()).suffixes[-2:-1] == [".ome"]
        if planar:  # pixels per centimetre
            options.update(resolution=(1e4 / sizes["X"], 1e4 / sizes["Y"]), resolutionunit="CENTIMETER")
    partial = partial_path(path)
    try:
        tifffile.imwrite(partial, np.asarray(array), **options)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_label_tiff(path: str | os.PathLike, labels: np.ndarray, axes: str,
                     voxel_size: dict[str, float] | None = None) -> str:
    """Write instance labels with ``axes`` and ``voxel_size`` (micrometres); returns the kind.

    An ImageJ hyperstack (uint16, spacing, unit, resolution) when the axes and the number
    of cells allow it; else an OME-TIFF (uint32, PhysicalSize*) when the axes are OME's,
    else a plain TIFF that records its axes.
    """
    labels = np.asarray(labels)
    ordered = all(a in IMAGEJ_ORDER for a in axes) and list(axes) == sorted(axes, key=IMAGEJ_ORDER.index)
    if ordered and (labels.size == 0 or int(labels.max()) < 2**16):
        kind, labels = "imagej", labels.astype(np.uint16)
    else:
        kind = "ome" if ordered else "plain"
    write_tiff(path, labels, axes, voxel_size, kind)
    return kind
