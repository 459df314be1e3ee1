"""The ``tiled-unet`` console script."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from .._version import __version__
from ..engine.predict import predict_iter
from ..events import run_to_end
from ..io.lock import output_lock
from ..io.paths import claim_output
from ..io.tiff import write_tiff
from ..metrics import DEFAULT_THRESHOLDS, evaluate, format_table, summary
from ..synthetic.nuclei import sample
from ..weights import builtin_models, resolve_model
from .guard import check_job, input_label
from .options import default_model, inference_kwargs, inference_options, output_axes
from .segment import add_segment_parser
from .train import add_train_parser


def _progress(event) -> None:
    if event.note:
        print(event.note, file=sys.stderr)
        return
    width = 30
    filled = int(width * event.fraction)
    frame = f" frame {event.frame + 1}/{event.frames}" if event.frames > 1 else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] tile {event.done}/{event.total}{frame}",
          end="", file=sys.stderr, flush=True)


def cmd_predict(args: argparse.Namespace) -> int:

    if (args.input is None) == (args.sample is None):
        raise ValueError("give either an INPUT path or --sample NAME")
    image = sample(args.sample)[0] if args.sample else args.input
    if args.input is not None and not os.path.exists(args.input):
        raise FileNotFoundError(f"no such input: {args.input}")
    model = args.model or default_model(image, args.sample, args.axes)
    output = Path(args.output)
    to_tiff = output.suffix.lower() in (".tif", ".tiff")
    claim_output(output, args.overwrite, [getattr(args, "input", None)], replace_hint="pass --overwrite to replace it")
    check_job(image, resolve_model(model), axes=args.axes, in_memory=to_tiff, yes=args.yes,
              options=inference_kwargs(args), what=input_label(image))
    start = time.perf_counter()
    with output_lock(output) as lock:
        if lock.notice:
            print(lock.notice, file=sys.stderr)
        gen = predict_iter(image, model, out=None if to_tiff else output, overwrite=args.overwrite,
                           **inference_kwargs(args))
        probs = run_to_end(gen, _progress)
        print(file=sys.stderr)
        axes = probs.attrs["axes"] if not to_tiff else output_axes(image, model, args.axes)
        if to_tiff:
            write_tiff(output, probs, axes)
    elapsed = time.perf_counter() - start
    print(f"wrote {output}: class probabilities, axes {axes}, shape {tuple(probs.shape)}, "
          f"{elapsed:.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    stats = evaluate(args.pred, args.gt, thresholds=args.thresholds or DEFAULT_THRESHOLDS)
    if args.json:
        print(json.dumps({"per_threshold": [s.to_dict() for s in stats], "summary": summary(stats)}, indent=2))
    else:
        print(format_table(stats))
    return 0


def cmd_models(args: argparse.Namespace) -> int:

    for name, description in builtin_models().items():
        print(f"{name:16s} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiled-unet", description="U-Net cell segmentation for large "
                                     "2D/3D microscopy images")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="per-pixel class probabilities by exact overlap-tile inference")
    p.add_argument("input", nargs="?", help="TIFF file, zarr directory / .zip, or OME-Zarr image")
    p.add_argument("-o", "--output", required=True, help="output: a .zarr directory or a .tif file")
    p.add_argument("--sample", choices=["nuclei-2d", "nuclei-3d"], help="use a built-in synthetic sample")
    inference_options(p)
    p.set_defaults(func=cmd_predict)

    add_segment_parser(sub)

    e = sub.add_parser("evaluate", help="compare predicted instance labels with true ones (IoU matching)")
    e.add_argument("pred", help="predicted labels: TIFF file or zarr array (0 = background)")
    e.add_argument("gt", help="true labels of the same shape: TIFF file or zarr array")
    e.add_argument("--thresholds", type=float, nargs="+", metavar="IOU", help="IoU thresholds in (0, 1]; "
                   "a pair matches when IoU >= threshold (default: 0.5, 0.55, ..., 0.95)")
    e.add_argument("--json", action="store_true", help="print JSON: one object per threshold and a summary")
    e.set_defaults(func=cmd_evaluate)

    add_train_parser(sub)

    m = sub.add_parser("models", help="list the built-in models")
    m.set_defaults(func=cmd_models)
    return parser


def os_error_message(err: OSError) -> str:
    """One line for a failed read or write: what happened, to which file, what to do."""
    name = f" {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device while writing{name}; free some space or write the output "
                f"elsewhere (nothing is left under the output's final name)")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{name}: {err.strerror.lower()}; choose an output in a folder you can write to"
    return str(err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, TypeError) as err:
        print(f"\ntiled-unet: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"\ntiled-unet: error: {os_error_message(err)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("\ntiled-unet: error: out of memory; for images larger than RAM write a zarr output "
              "(-o out.zarr), or give a smaller --tile-shape", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntiled-unet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
