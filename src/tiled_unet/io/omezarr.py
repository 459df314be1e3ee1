"""OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3): image axes and voxel size, and label images.

Writing labels into an image adds ``labels/<name>`` (one multiscale level, ``image-label``
metadata) and the name to ``labels``' list; the image's own arrays are never touched.
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from .paths import claim_output, put_in_place
from .units import unit_factor


@dataclass(frozen=True)
class OmeImage:
    """An OME-Zarr image group: ``axes`` in tiled-unet letters (None if unnamed), the voxel
    size of level 0 per spatial axis (micrometres), the NGFF ``version`` and zarr format."""

    path: Path
    axes: str | None
    voxel_size: dict[str, float]
    version: str
    zarr_format: int
    axes_meta: list[dict]
    scale: list[float] | None


def ome_attrs(attrs: dict) -> dict:
    """A zarr group's OME metadata: nested under ``"ome"`` (NGFF 0.5) or the attributes themselves (0.4)."""
    return attrs["ome"] if "ome" in attrs else attrs


def multiscales_of(group: Any, where: str | None = None) -> dict | None:
    """The first entry of a zarr group's OME-Zarr ``multiscales``. Without one: None, or with
    ``where`` (the group's path) a ValueError that names it and the arrays the group holds."""
    multiscales = ome_attrs(dict(group.attrs)).get("multiscales")
    if multiscales:
        return multiscales[0]
    if where is None:
        return None
    arrays = sorted(name for name, _ in group.arrays())
    raise ValueError(f"{where} is a zarr group without OME-Zarr 'multiscales' metadata; "
                     f"point to one of its arrays instead (found: {arrays or 'none'})")


def read_ome_image(path: str | os.PathLike) -> OmeImage | None:
    """The OME-Zarr image at ``path``, or None when it is no OME-Zarr image group."""
    path = Path(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr store at all: the caller says what it expected
        return None
    if isinstance(node, zarr.Array):
        return None
    ms = multiscales_of(node)
    if ms is None:
        return None
    attrs = dict(node.attrs)
    version = attrs["ome"].get("version", "0.5") if "ome" in attrs else ms.get("version", "0.4")
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in ms.get("axes", [])]
    names = [str(a.get("name", "")).upper()[:1] for a in axes_meta]
    axes = "".join(names) if names and len(set(names)) == len(names) and all(names) else None
    scale = None
    for transform in ms["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(s) for s in transform["scale"]]
    sizes = {}
    if axes and scale and len(scale) == len(axes):
        for letter, meta, s in zip(axes, axes_meta, scale):
            factor = unit_factor(meta.get("unit", "micrometer"))
            if letter in "ZYX" and factor is not None and s > 0:
                sizes[letter] = s * factor
    return OmeImage(path, axes, sizes, str(version), node.metadata.zarr_format, axes_meta, scale)


def label_path(image: OmeImage, name: str) -> Path:
    return image.path / "labels" / name


def write_ome_labels(image: OmeImage, name: str, labels: Any, scratch: Path, overwrite: bool) -> Path:
    """Copy ``labels`` (a zarr array, the image's axes without channels) into the image as
    ``labels/<name>``; built in ``scratch`` (same file system) and moved in whole."""
    target = label_path(image, name)
    claim_output(target, overwrite, what="labels")
    keep = [i for i, a in enumerate(image.axes or "") if a != "C"]
    axes_meta = [image.axes_meta[i] for i in keep] if image.axes else None
    scale = [image.scale[i] for i in keep] if image.scale and image.axes else None
    fmt = image.zarr_format
    build = scratch / name
    if build.exists():
        shutil.rmtree(build)
    group = zarr.open_group(str(build), mode="w", zarr_format=fmt)
    chunks = tuple(c if isinstance(c, int) else c[0] for c in labels.chunks)
    array = group.create_array("0", shape=labels.shape, chunks=chunks, dtype=labels.dtype,
                               fill_value=0, **({"dimension_names": [a["name"] for a in axes_meta]}
                                                if fmt == 3 and axes_meta else {}))
    for index in _chunk_slices(labels.shape, chunks):
        array[index] = labels[index]
    dataset = {"path": "0"}
    if scale:
        dataset["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    multiscale = {"name": name, "datasets": [dataset]}
    if axes_meta:
        multiscale["axes"] = axes_meta
    source = {"source": {"image": "../../"}}
    if fmt == 2:
        group.attrs.update({"image-label": {"version": image.version, **source},
                            "multiscales": [{"version": image.version, **multiscale}]})
    else:
        group.attrs.update({"ome": {"version": image.version, "image-label": source,
                                    "multiscales": [multiscale]}})
    labels_group = zarr.open_group(str(image.path / "labels"), mode="a", zarr_format=fmt)
    put_in_place(build, target)
    attrs = dict(labels_group.attrs)
    if fmt == 2:
        names = list(attrs.get("labels", []))
        labels_group.attrs["labels"] = names + [name] if name not in names else names
    else:
        ome = dict(attrs.get("ome", {"version": image.version}))
        names = list(ome.get("labels", []))
        ome["labels"] = names + [name] if name not in names else names
        labels_group.attrs["ome"] = ome
    return target


def _chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...]):
    for corner in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks))):
        yield tuple(slice(i, min(i + c, n)) for i, c, n in zip(corner, chunks, shape))
