"""Options shared by the console script's verbs, and how they become keyword arguments."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.cellsize import check_diameter
from ..io.arrays import open_image
from ..io.layout import guess_spatial_ndim, parse_layout
from ..weights import resolve_model


def tile_shape_arg(text: str) -> str | tuple[int, ...]:
    if text == "auto":
        return text
    try:
        return tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or sizes like 64,256,256, got {text!r}") from None


def default_model(image, sample_name: str | None, axes: str | None = None) -> str:
    """nuclei-2d or nuclei-3d, from the sample name or the image's axes (the batch's rule)."""
    if sample_name:
        return sample_name
    return f"nuclei-{guess_spatial_ndim(open_image(image).shape, axes)}d"


def instance_overrides(args: argparse.Namespace) -> dict:
    names = ("foreground_threshold", "seed_threshold", "seed_low_threshold", "min_seed_size", "max_growth", "min_size")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.no_fill_holes:
        overrides["fill_holes"] = False
    if args.drop_unseeded:
        overrides["keep_unseeded"] = False
    return overrides


def output_axes(image, model, axes: str | None) -> str:
    source = open_image(image)
    return parse_layout(source.shape, source.dtype, resolve_model(model).config, axes).output_axes


def engine_options(p: argparse.ArgumentParser) -> None:
    """Tile shape, device, precision, batch size, backend and halo (shared by predict and segment)."""
    p.add_argument("--tile-shape", type=tile_shape_arg, default="auto", help="output tile, e.g. 64,256,256, "
                   "or 'auto' (largest that fits the memory budget)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                   help="what runs the network: torch, openvino (CPU; pip install "
                   "'napari-tiled-unet[openvino]') or auto (default: OpenVINO on CPU when installed and "
                   "bfloat16 is used, else torch)")
    p.add_argument("--halo", type=int, help="context per side for same-padding models (default: exact)")
    p.add_argument("--yes", action="store_true", help="start jobs estimated to take over an hour, and inputs "
                   "with no data written, without asking")


def inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="built-in model name (see 'tiled-unet models') or .safetensors file "
                   "(default: nuclei-3d for images with 3 or more axes, else nuclei-2d)")
    engine_options(p)
    p.add_argument("--axes", help="axes of the input, e.g. ZYX, TCYX, YXC (default: inferred)")
    p.add_argument("--diameter", default="auto", help="typical cell diameter in pixels (micrometres with a "
                   "voxel size): the image is rescaled so that its cells have a size the model was trained "
                   "at; 'auto' (default) estimates it, 'off' uses the image as it is")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """The engine options of :func:`engine_options` and ``--diameter`` as keyword arguments."""
    options = {"tile_shape": args.tile_shape, "device": args.device, "precision": args.precision,
               "batch_size": args.batch_size, "backend": args.backend, "diameter": diameter_arg(args.diameter)}
    if args.halo is not None:
        options["halo"] = args.halo
    return options


def inference_kwargs(args: argparse.Namespace) -> dict:
    options = dict(engine_kwargs(args), axes=args.axes)
    if getattr(args, "voxel_size", None):
        options["voxel_size"] = tuple(args.voxel_size)
    return options


def diameter_arg(text: str) -> Any:
    return check_diameter(text)
