"""The ``tiled-unet`` console script."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from pathlib import Path

from . import __version__


def _tile_shape(text: str) -> str | tuple[int, ...]:
    if text == "auto":
        return text
    try:
        return tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or sizes like 64,256,256, got {text!r}") from None


def _progress(event) -> None:
    width = 30
    filled = int(width * event.fraction)
    frame = f" frame {event.frame + 1}/{event.frames}" if event.frames > 1 else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] tile {event.done}/{event.total}{frame}",
          end="", file=sys.stderr, flush=True)


def _write_tiff(path: Path, array, overwrite: bool, axes: str) -> None:
    import tifffile

    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    tifffile.imwrite(path, array, imagej=False, metadata={"axes": axes})


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_iter
    from .synthetic import sample

    if (args.input is None) == (args.sample is None):
        raise ValueError("give either an INPUT path or --sample NAME")
    image = sample(args.sample)[0] if args.sample else args.input
    if args.input is not None and not os.path.exists(args.input):
        raise FileNotFoundError(f"no such input: {args.input}")
    model = args.model or ("placeholder-3d" if args.sample == "nuclei-3d" else "placeholder-2d")
    output = Path(args.output)
    to_tiff = output.suffix.lower() in (".tif", ".tiff")
    if to_tiff and output.exists() and not args.overwrite:
        raise FileExistsError(f"output {output} already exists; pass --overwrite to replace it")
    start = time.perf_counter()
    gen = predict_iter(image, model, out=None if to_tiff else output, overwrite=args.overwrite,
                       **_inference_kwargs(args))
    try:
        while True:
            _progress(next(gen))
    except StopIteration as stop:
        probs = stop.value
    print(file=sys.stderr)
    axes = probs.attrs["axes"] if not to_tiff else _output_axes(image, model, args.axes)
    if to_tiff:
        _write_tiff(output, probs, args.overwrite, axes)
    elapsed = time.perf_counter() - start
    print(f"wrote {output}: class probabilities, axes {axes}, shape {tuple(probs.shape)}, "
          f"{elapsed:.1f} s")
    return 0


def _default_model(image, sample_name: str | None) -> str:
    """nuclei-2d or nuclei-3d, from the sample name or the number of image axes."""
    if sample_name:
        return sample_name
    from .io import open_image

    return "nuclei-3d" if open_image(image).ndim >= 3 else "nuclei-2d"


def _instance_overrides(args: argparse.Namespace) -> dict:
    names = ("foreground_threshold", "seed_threshold", "min_seed_size", "max_growth", "min_size")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.no_fill_holes:
        overrides["fill_holes"] = False
    if args.drop_unseeded:
        overrides["keep_unseeded"] = False
    return overrides


def _output_axes(image, model, axes: str | None) -> str:
    from .io import open_image
    from .layout import parse_layout
    from .predict import _resolve_model

    source = open_image(image)
    return parse_layout(source.shape, source.dtype, _resolve_model(model).config, axes).output_axes


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .metrics import DEFAULT_THRESHOLDS, evaluate, format_table, summary

    stats = evaluate(args.pred, args.gt, thresholds=args.thresholds or DEFAULT_THRESHOLDS)
    if args.json:
        print(json.dumps({"per_threshold": [s.to_dict() for s in stats], "summary": summary(stats)}, indent=2))
    else:
        print(format_table(stats))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .weights import builtin_models

    for name, description in builtin_models().items():
        print(f"{name:16s} {description}")
    return 0


def engine_options(p: argparse.ArgumentParser) -> None:
    """Tile shape, device, precision, batch size and halo (shared by predict and segment)."""
    p.add_argument("--tile-shape", type=_tile_shape, default="auto", help="output tile, e.g. 64,256,256, "
                   "or 'auto' (largest that fits the memory budget)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--halo", type=int, help="context per side for same-padding models (default: exact)")


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="built-in model name (see 'tiled-unet models') or .safetensors file")
    engine_options(p)
    p.add_argument("--axes", help="axes of the input, e.g. ZYX, TCYX, YXC (default: inferred)")
    p.add_argument("--diameter", default="auto", help="typical cell diameter in pixels (micrometres with a "
                   "voxel size): the image is rescaled so that its cells have a size the model was trained "
                   "at; 'auto' (default) estimates it, 'off' uses the image as it is")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _inference_kwargs(args: argparse.Namespace) -> dict:
    options = {"tile_shape": args.tile_shape, "device": args.device, "precision": args.precision,
               "batch_size": args.batch_size, "axes": args.axes, "diameter": _diameter(args.diameter)}
    if args.halo is not None:
        options["halo"] = args.halo
    if getattr(args, "voxel_size", None):
        options["voxel_size"] = tuple(args.voxel_size)
    return options


def _diameter(text: str) -> Any:
    from .cellsize import check_diameter

    return check_diameter(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiled-unet", description="U-Net cell segmentation for large "
                                     "2D/3D microscopy images")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="per-pixel class probabilities by exact overlap-tile inference")
    p.add_argument("input", nargs="?", help="TIFF file, zarr directory / .zip, or OME-Zarr image")
    p.add_argument("-o", "--output", required=True, help="output: a .zarr directory or a .tif file")
    p.add_argument("--sample", choices=["nuclei-2d", "nuclei-3d"], help="use a built-in synthetic sample")
    _inference_options(p)
    p.set_defaults(func=cmd_predict)

    from .cli_segment import add_segment_parser

    add_segment_parser(sub)

    e = sub.add_parser("evaluate", help="compare predicted instance labels with true ones (IoU matching)")
    e.add_argument("pred", help="predicted labels: TIFF file or zarr array (0 = background)")
    e.add_argument("gt", help="true labels of the same shape: TIFF file or zarr array")
    e.add_argument("--thresholds", type=float, nargs="+", metavar="IOU", help="IoU thresholds in (0, 1]; "
                   "a pair matches when IoU >= threshold (default: 0.5, 0.55, ..., 0.95)")
    e.add_argument("--json", action="store_true", help="print JSON: one object per threshold and a summary")
    e.set_defaults(func=cmd_evaluate)

    from .cli_train import add_train_parser

    add_train_parser(sub)

    m = sub.add_parser("models", help="list the built-in models")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, TypeError) as err:
        print(f"\ntiled-unet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ntiled-unet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
