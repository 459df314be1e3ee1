"""TIFF axes and voxel size: read them from ImageJ / OME / resolution tags, write them to label TIFFs.

Voxel sizes are in micrometres. Axes use tiled-unet's letters: ``Y``, ``X``, ``Z`` spatial,
``C`` channels (TIFF samples ``S`` included), any other letter an extra axis (``T``, ...).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import numpy as np

# length units as written by ImageJ, OME and others -> micrometres
UNITS = {"m": 1e6, "mm": 1e3, "cm": 1e4, "um": 1.0, "\u03bcm": 1.0, "\u00b5m": 1.0, "micron": 1.0,
         "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "pm": 1e-6}
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


def _unit_factor(unit: str | None) -> float | None:
    if not unit:
        return None
    return UNITS.get(str(unit).strip().replace("\\u00B5", "µ").lower())


def _resolution(page, unit_factor: float | None) -> dict[str, float]:
    """Pixel sizes from the X/YResolution tags (pixels per unit) where a length unit is known."""
    sizes = {}
    tags = page.tags
    res_unit = tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 2
    factor = {2: 25400.0, 3: 10000.0}.get(res_unit) if unit_factor is None else unit_factor
    if factor is None:
        return sizes
    for axis, name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = tags.get(name)
        if tag is None:
            continue
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if num and den and num / den > 0 and not (num == den and unit_factor is None and res_unit == 2):
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
        factor = _unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
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
    import tifffile

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
                factor = _unit_factor(meta.get("unit"))
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


def write_label_tiff(path: str | os.PathLike, labels: np.ndarray, axes: str,
                     voxel_size: dict[str, float] | None = None) -> str:
    """Write instance labels with ``axes`` and ``voxel_size`` (micrometres); returns the kind.

    An ImageJ hyperstack (uint16, spacing, unit, resolution) when the axes and the number
    of cells allow it; else an OME-TIFF (uint32, PhysicalSize*) when the axes are OME's,
    else a plain TIFF that records its axes.
    """
    import tifffile

    labels = np.asarray(labels)
    sizes = voxel_size or {}
    resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"]) if "X" in sizes and "Y" in sizes else None
    ordered = all(a in IMAGEJ_ORDER for a in axes) and list(axes) == sorted(axes, key=IMAGEJ_ORDER.index)
    if ordered and (labels.size == 0 or int(labels.max()) < 2**16):
        metadata: dict = {"axes": axes}
        if sizes:
            metadata["unit"] = "um"
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        tifffile.imwrite(os.fspath(path), labels.astype(np.uint16), imagej=True, resolution=resolution,
                         metadata=metadata)
        return "imagej"
    if ordered:
        metadata = {"axes": axes}
        for axis in "XYZ":
            if axis in sizes:
                metadata[f"PhysicalSize{axis}"] = sizes[axis]
                metadata[f"PhysicalSize{axis}Unit"] = "µm"
        tifffile.imwrite(os.fspath(path), labels, ome=True, metadata=metadata)
        return "ome"
    tifffile.imwrite(os.fspath(path), labels, metadata={"axes": axes})
    return "plain"
