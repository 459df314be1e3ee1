"""``tiled-unet train``: train or fine-tune a model on image / label files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..events import run_to_end
from ..io.paths import claim_output
from ..training.config import TrainConfig
from ..training.datasets import pair_paths
from ..training.loop import train_iter


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train (or fine-tune) a model on images and their instance labels")
    t.add_argument("--images", nargs="+", required=True, help="image files (TIFF, zarr) or one folder")
    t.add_argument("--labels", nargs="+", required=True, help="label files in the same order, or one folder "
                   "with files of the same names (0 = background, 1..N = cells)")
    t.add_argument("-o", "--output", required=True, help="the model file to write (.safetensors)")
    t.add_argument("--init", help="start from this model (built-in name or .safetensors file): fine-tuning")
    t.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: 30)")
    t.add_argument("--steps-per-epoch", type=int, default=50, help="optimiser steps per epoch (default: 50)")
    t.add_argument("--batch-size", type=int, default=4, help="patches per step (default: 4)")
    t.add_argument("--patch", type=int, nargs="+", metavar="N", help="output patch shape per spatial axis "
                   "(default: 96 96 in 2D, 24 48 48 in 3D); the network input adds the model's halo")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    t.add_argument("--w0", type=float, default=10.0, help="weight of the border term (default: 10; 0 = off)")
    t.add_argument("--sigma", type=float, default=5.0, help="width of the border term, in voxel-size units "
                   "(default: 5)")
    t.add_argument("--ignore-label", type=int, help="label value that marks unannotated pixels")
    t.add_argument("--voxel-size", type=float, nargs="+", metavar="S", help="voxel size of the training data "
                   "(stored with the model; sigma uses it)")
    t.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a better "
                   "validation score (default: 10)")
    t.add_argument("--keep", choices=("best", "last"), default="best", help="the weights to write: the epoch "
                   "with the best validation AP@0.5 (the lowest validation loss when the validation images hold "
                   "fewer than 50 cells; default) or the last epoch")
    t.add_argument("--validation-fraction", type=float, default=0.2, help="share of images held out (default 0.2)")
    t.add_argument("--checkpoints", help="folder for checkpoints (best, last, optimiser state)")
    t.add_argument("--resume", action="store_true", help="resume from the checkpoint folder")
    t.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    t.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="autocast precision of the training step: auto (default) = bf16/fp16 on CUDA, float32 "
                   "elsewhere; bfloat16 on a CPU with native bf16 kernels (AVX512-BF16, AMX) trains faster")
    t.add_argument("--workers", type=int, default=0, help="threads that sample and augment patches ahead of the "
                   "training step (default: 0, in the loop); use several to keep a GPU busy")
    t.add_argument("--worker-type", choices=("threads", "processes"), default="threads",
                   help="threads (default) or processes (each with its own GIL; they memory-map the data "
                   "from a temporary folder)")
    t.add_argument("--augment-on", choices=("cpu", "device"), default="cpu", help="where patches are cut and "
                   "augmented: cpu (default; --workers run in parallel) or device (the training device, e.g. the "
                   "GPU: the training data are copied there once; no --workers)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--name", help="model name stored in the file (default: the output file's stem)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file (and the checkpoints in --checkpoints)")
    t.set_defaults(func=cmd_train)


def _pairs(images: list[str], labels: list[str]) -> tuple[list[str], list[str]]:

    if len(images) == 1 and len(labels) == 1:
        pairs = pair_paths(images[0], labels[0])
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label files; give them in pairs")
    return images, labels


def _print_progress(event) -> None:
    if event.kind == "step":
        print(f"\repoch {event.epoch}/{event.epochs} step {event.step}/{event.steps} "
              f"loss {event.loss:.4f}", end="", file=sys.stderr, flush=True)
    else:
        ap = "n/a" if event.val_ap is None else f"{event.val_ap:.3f}"
        val_loss = "" if event.val_loss is None else f" loss {event.val_loss:.4f}"
        print(f"\repoch {event.epoch}/{event.epochs} loss {event.loss:.4f} validation AP@0.5 {ap}{val_loss} "
              f"(best epoch {event.best_epoch}) {event.seconds:.0f} s", file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise ValueError(f"the model file must end in .safetensors, got {output.name!r}")
    claim_output(output, args.overwrite, what="model file", replace_hint="pass --overwrite to replace it")
    if args.resume and not args.checkpoints:
        raise ValueError("--resume needs --checkpoints FOLDER")
    images, labels = _pairs(args.images, args.labels)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         patch_shape=tuple(args.patch or ()), learning_rate=args.lr, w0=args.w0,
                         sigma=args.sigma, ignore_label=args.ignore_label, patience=args.patience,
                         validation_fraction=args.validation_fraction, device=args.device, seed=args.seed,
                         workers=args.workers, worker_type=args.worker_type, keep=args.keep,
                         augment_on=args.augment_on, precision=args.precision)
    gen = train_iter(images, labels, init=args.init, config=config, out=output, checkpoint_dir=args.checkpoints,
                     resume=args.resume, voxel_size=tuple(args.voxel_size or ()), name=args.name or output.stem,
                     overwrite=args.overwrite)
    try:
        net = run_to_end(gen, _print_progress)
    except KeyboardInterrupt:  # run_to_end closed gen: the kept weights are written
        kept = "the best model so far" if args.keep == "best" else "the last complete epoch's model"
        print(f"\ninterrupted: {kept} is in {output}", file=sys.stderr)
        return 130
    summary = net.model_config.training
    print(f"wrote {output}: {summary['epochs_run']} epochs, epoch {summary['best_epoch']} kept (chosen by "
          f"{summary['selected_by']}; its validation AP@0.5 {summary['best_val_ap50']}), {summary['seconds']} s")
    tuned = summary.get("tuned_instances") or {}
    if "skipped" in tuned:
        print(f"instance thresholds not tuned: {tuned['skipped']}")
    return 0
