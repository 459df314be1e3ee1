"""Train the built-in models ``nuclei-2d`` and ``nuclei-3d`` on synthetic fluorescent nuclei.

Everything is generated from fixed seeds by :func:`tiled_unet.synthetic.render_nuclei`
(random density, size, shape, clumps of touching nuclei, texture, brightness, blur, haze,
uneven illumination, Poisson + Gaussian camera noise), so the models are reproducible
from this script alone (both were trained on a GPU, then tuned and scored on CPU; ``nuclei-2d``
was then fine-tuned twice on CPU, the second time with five times the images; the ``nuclei-3d``
run stopped at its time limit after 14 of 16 epochs, was resumed on CPU, fine-tuned there for 7
more epochs, and then three times on a GPU with patches made there):

    python scripts/train_builtin_models.py nuclei-2d --device cuda --workers 3 --train-only --out trained
    python scripts/train_builtin_models.py nuclei-2d --retune trained/nuclei-2d.safetensors --set held_out=12 \\
        --out trained/gpu
    python scripts/train_builtin_models.py nuclei-2d --init trained/gpu/nuclei-2d.safetensors --train-only \\
        --checkpoints ck-ft2d --out trained --epochs 20 --steps 100 --set lr=0.0003 augment_on=device precision=bfloat16
    python scripts/train_builtin_models.py nuclei-2d --retune trained/nuclei-2d.safetensors
    python scripts/train_builtin_models.py nuclei-2d --init src/tiled_unet/models/nuclei-2d.safetensors --train-only \\
        --checkpoints ck-cpu1 --out trained/cpu1 --epochs 10 --steps 1000 --images 960 \\
        --set lr=0.0002 augment_on=device precision=bfloat16
    python scripts/train_builtin_models.py nuclei-2d --retune trained/cpu1/nuclei-2d.safetensors
    python scripts/train_builtin_models.py nuclei-3d --device cuda --workers 15 --worker-type processes \\
        --train-only --checkpoints ck --out trained
    python scripts/train_builtin_models.py nuclei-3d --resume --train-only --checkpoints ck --out trained
    mv trained/nuclei-3d.safetensors trained/nuclei-3d-e16.safetensors
    python scripts/train_builtin_models.py nuclei-3d --init trained/nuclei-3d-e16.safetensors --train-only \\
        --checkpoints ck-ft --out trained --epochs 7 --steps 140 --set lr=0.0003 augment_on=device precision=bfloat16
    python scripts/train_builtin_models.py nuclei-3d --init trained/nuclei-3d.safetensors --device cuda \\
        --train-only --checkpoints ck-gpu1 --out trained/gpu1 --epochs 10 --steps 666 --set lr=0.0003 augment_on=device
    python scripts/train_builtin_models.py nuclei-3d --init trained/gpu1/nuclei-3d.safetensors --device cuda \\
        --train-only --checkpoints ck-gpu2 --out trained/gpu2 --epochs 8 --steps 560 --set lr=0.0003 augment_on=device
    python scripts/train_builtin_models.py nuclei-3d --init trained/gpu2/nuclei-3d.safetensors --device cuda \\
        --train-only --checkpoints ck-gpu3 --out trained --epochs 8 --steps 850 --set lr=0.0002 augment_on=device
    python scripts/train_builtin_models.py nuclei-3d --retune trained/nuclei-3d.safetensors

Writes ``src/tiled_unet/models/<name>.safetensors`` (use ``--out`` elsewhere), after
choosing the seed threshold of the instance step on held-out images and measuring
AP@0.5 on other held-out images and on the built-in sample; the figures are stored in
the model file's training summary and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tiled_unet import predict
from tiled_unet.engine.cellsize import training_diameter
from tiled_unet.instances.memory import instances_from_probabilities
from tiled_unet.metrics import match
from tiled_unet.synthetic import render_nuclei, sample
from tiled_unet.training.loop import TrainConfig, new_model, train
from tiled_unet.training.validation import tune_instance_thresholds
from tiled_unet.weights import load_model, save_model

RECIPES = {
    "nuclei-2d": dict(ndim=2, shape=(256, 256), images=192, depth=3, base_channels=24, patch=(96, 96),
                      epochs=200, steps=50, batch=8, held_out=36, workers=3),
    "nuclei-3d": dict(ndim=3, shape=(32, 128, 128), images=160, depth=2, base_channels=32, patch=(24, 48, 48),
                      epochs=16, steps=140, batch=8, held_out=36, workers=1, keep="last", rescale_to="median"),
}
#: recipe entries that may be absent (defaults: lr 1e-3, targets "boundary", boundary_width 2, keep "best",
#: augment_on "cpu", precision "auto"; with augment_on "device" the recipe's workers are not used)
#: "real": frames of a real annotated sequence trained on with the synthetic images, e.g. "hela:0-7" (the
#: frames cut in quarters, each quarter repeated "real_repeat" times; default 1); "real_tune": frames of the
#: same sequence added to the tuning images, e.g. "hela:8-9" (frames 10-19 are for reporting only)
#: "real_unannotated": "ignore" leaves out of the loss the bright regions of the real frames that no reference
#: cell touches (dim and border nuclei the reference omits), "background" (default) trains them as background
#: "rescale_to": where images whose cells lie outside the model's range of training diameters (10th-90th
#: percentile) are brought: "range" (default: its nearest end) or "median" (ModelConfig.rescale_to)
OPTIONAL_ENTRIES = ("lr", "targets", "boundary_width", "keep", "augment_on", "precision", "real", "real_repeat",
                    "real_tune", "real_unannotated", "rescale_to")
TRAIN_SEED, TUNE_SEED, TEST_SEED = 1000, 5000, 9000
#: label value of the pixels left out of the loss (recipe entry "real_unannotated": "ignore")
IGNORE_LABEL = 2**31 - 1


def images(recipe: dict, count: int, first_seed: int) -> tuple[list, list]:
    """``count`` images and labels rendered from the seeds ``first_seed + i`` (in parallel processes)."""
    processes = min(count, os.cpu_count() or 1)
    if processes <= 1:
        data = [render_nuclei(recipe["shape"], rng=first_seed + i) for i in range(count)]
    else:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            render = partial(render_nuclei, tuple(recipe["shape"]), None)  # (shape, config, rng=seed)
            data = list(pool.map(render, range(first_seed, first_seed + count)))
    return [d[0] for d in data], [d[1] for d in data]


def real_frames(spec: str) -> tuple[list, list]:
    """Frames ``"NAME:FIRST-LAST"`` of a real sequence (``benchmarks/bench_real.py``; never frames 10-19)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_real import frames_arg, load

    name, _, frames = spec.partition(":")
    chosen = frames_arg(frames)
    if max(chosen) >= 10:
        raise SystemExit(f"real frames {spec}: frames 10-19 are for reporting only")
    frame_images, frame_labels, _ = load(name, chosen)
    return frame_images, frame_labels


def mark_unannotated(image: np.ndarray, labels: np.ndarray, fraction: float = 0.03,
                     min_pixels: int = 30) -> np.ndarray:
    """``labels`` with IGNORE_LABEL on the bright blobs outside the reference cells (nuclei it left out).

    Bright: the image smoothed (sigma 2 px) above background + ``fraction`` x (median cell - background),
    the background being the median away from the cells. Blobs: regions of bright pixels more than 3 px
    from any cell, of at least ``min_pixels``, brightest more than 3 px away from the cells (the halo of a
    cell is brightest where it meets the cell); widened by 3 px so their blur is not trained as background.
    """
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(image.astype(np.float64), 2)
    cells = labels > 0
    background = float(np.median(smooth[~ndi.binary_dilation(cells, iterations=6)]))
    cell_level = float(np.median(ndi.mean(smooth, labels, np.unique(labels[cells]))))
    near_cells = ndi.binary_dilation(cells, iterations=3)
    candidates = (smooth > background + fraction * (cell_level - background)) & ~near_cells
    regions, count = ndi.label(candidates)
    sizes = np.bincount(regions.ravel())
    away = ndi.distance_transform_edt(~near_cells)
    index = np.arange(count + 1)
    peak_inside = ndi.maximum(np.where(away > 3, smooth, -np.inf), regions, index)
    peak_at_cells = ndi.maximum(np.where(away <= 1.5, smooth, -np.inf), regions, index)
    keep = (sizes >= min_pixels) & (peak_inside > peak_at_cells)
    keep[0] = False
    ignore = ndi.binary_dilation(keep[regions], iterations=3) & ~ndi.binary_dilation(cells, iterations=1)
    out = labels.astype(np.int64)
    out[ignore] = IGNORE_LABEL
    return out


def quarters(image_list: list, label_list: list, repeat: int) -> tuple[list, list]:
    """Each image cut in four along its last two axes, each piece listed ``repeat`` times."""
    out_images, out_labels = [], []
    for image, labels in zip(image_list, label_list):
        h, w = image.shape[-2] // 2, image.shape[-1] // 2
        for y in (slice(0, h), slice(h, None)):
            for x in (slice(0, w), slice(w, None)):
                piece = (Ellipsis, y, x)
                out_images += [np.ascontiguousarray(image[piece])] * repeat
                out_labels += [np.ascontiguousarray(labels[piece])] * repeat
    return out_images, out_labels


def score(net, image_list, label_list, config, device="cpu") -> dict:
    """Mean AP@0.5, merges and splits over images (probabilities computed once per image)."""
    stats = []
    for image, labels in zip(image_list, label_list):
        probs = predict(image, net, device=device)
        pred = instances_from_probabilities(probs, config, net.model_config.class_names)
        stats.append(match(pred, labels, 0.5))
    cells = sum(s.n_true for s in stats)
    return {"ap50": float(np.mean([s.ap for s in stats])), "cells": int(cells),
            "merges": int(sum(s.merges for s in stats)), "splits": int(sum(s.splits for s in stats))}


#: instance parameters searched on held-out images; sizes are in pixels (2D) or voxels (3D), where a
#: nucleus of radius 5 has about 80 pixels or 500 voxels
TUNING_GRIDS = {
    2: {"seed_threshold": (0.5, 0.6, 0.7, 0.8), "foreground_threshold": (0.4, 0.5, 0.6),
        "min_size": (16, 32, 48), "min_seed_size": (4, 8, 16), "max_growth": (3, 6)},
    3: {"seed_threshold": (0.5, 0.6, 0.7, 0.8), "foreground_threshold": (0.5, 0.6, 0.7),
        "min_size": (48, 150, 300, 600), "min_seed_size": (4, 16, 64), "max_growth": (3, 6)},
}


def tune_instances(net, image_list, label_list, device="cpu"):
    """The instance parameters (grid search over TUNING_GRIDS) with the best mean AP@0.5 on held-out images."""
    pairs = [(image[None], labels) for image, labels in zip(image_list, label_list)]
    grid = TUNING_GRIDS[net.config.ndim]
    config, ap = tune_instance_thresholds(net, pairs, device, grid, precision="auto")
    return config, float(ap)


def train_model(args, recipe, train_images, train_labels):
    """Train the recipe's network from scratch (or from ``--init``'s weights)."""
    torch.manual_seed(args.seed)
    init = new_model(recipe["ndim"], depth=recipe["depth"], base_channels=recipe["base_channels"], name=args.name,
                     targets=recipe.get("targets", "boundary"))
    if args.init is not None:
        start = load_model(args.init)
        if start.config != init.config or start.model_config.class_names != init.model_config.class_names:
            raise SystemExit(f"--init {args.init}: its network ({start.config}) is not the recipe's "
                             f"({init.config}); give the recipe's depth and base_channels with --set")
        init = start
    augment_on = recipe.get("augment_on", "cpu")
    workers = 0 if augment_on == "device" and args.workers is None else recipe.get("workers", 0)
    config = TrainConfig(epochs=recipe["epochs"], steps_per_epoch=recipe["steps"], batch_size=recipe["batch"],
                         patch_shape=tuple(recipe["patch"]), validation_fraction=0.1, patience=recipe["epochs"],
                         seed=args.seed, device=args.device, workers=workers, augment_on=augment_on,
                         worker_type=args.worker_type,
                         learning_rate=recipe.get("lr", 1e-3), boundary_width=recipe.get("boundary_width", 2),
                         keep=recipe.get("keep", "best"), precision=recipe.get("precision", "auto"),
                         ignore_label=IGNORE_LABEL if recipe.get("real_unannotated") == "ignore" else None)

    def progress(event):
        if event.kind == "epoch":
            print(f"  epoch {event.epoch}/{event.epochs} loss {event.loss:.4f} val AP@0.5 {event.val_ap:.3f} "
                  f"(best {event.best_ap:.3f} at {event.best_epoch}) {event.seconds:.0f} s", flush=True)

    # with --train-only the weights kept so far (the recipe's keep) are written even when the run is interrupted
    out = args.out / f"{args.name}.safetensors" if args.train_only else None
    try:
        net = train(train_images, train_labels, init=init, config=config, name=args.name, out=out,
                    overwrite=True, checkpoint_dir=args.checkpoints, resume=args.resume, progress=progress,
                    provenance=provenance(args, recipe))
    except KeyboardInterrupt:
        if out is not None and out.is_file():  # the interrupted run's file says so
            net = load_model(out)
            net.model_config = dataclasses.replace(net.model_config,
                                                   training=dict(net.model_config.training, interrupted=True))
            save_model(net, out, overwrite=True)
            print(f"interrupted: wrote {out} (not scored)", flush=True)
        raise
    return net


def provenance(args, recipe) -> dict:
    """The recipe, device and command line for the training summary of the model and its checkpoints."""
    extra = dict(recipe=recipe, device=args.device, command=_command(args.argv))
    if args.init is not None:  # the starting model's own provenance, so the chain can be followed
        extra["init"] = {"file": str(args.init), "training": args.init_training}
    return extra


def _command(argv: list[str]) -> str:
    """The command line that made a model, without ``--out`` (where it was written)."""
    words = list(argv)
    if "--out" in words:
        del words[words.index("--out"):words.index("--out") + 2]
    return " ".join(["python scripts/train_builtin_models.py", *words])


def _set_instances(parser, instances, items):
    """``instances`` with the ``KEY=VALUE`` items of ``--instances`` (JSON values) set."""
    fields = {f.name for f in dataclasses.fields(instances)}
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            parser.error(f"--instances {item}: unknown instance parameter {key!r}; known: {', '.join(sorted(fields))}")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--instances {item}: {value!r} is not a number or true/false")
    try:
        return dataclasses.replace(instances, **values)
    except ValueError as exc:
        parser.error(f"--instances: {exc}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "tiled_unet" / "models")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--steps", type=int, help="override the recipe's steps per epoch")
    parser.add_argument("--images", type=int, help="override the recipe's number of training images")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override recipe entries, "
                        "e.g. depth=4 base_channels=32 batch=8 lr=0.002 patch=[96,96] (values are JSON)")
    parser.add_argument("--workers", type=int, help="threads or processes sampling patches (TrainConfig.workers; "
                        "default: the recipe's; any number >= 1 gives the same weights)")
    parser.add_argument("--worker-type", choices=("threads", "processes"), default="threads")
    parser.add_argument("--train-only", action="store_true", help="write the trained model without the "
                        "held-out tuning and scoring (run --retune on it later)")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR", help="keep training checkpoints in DIR "
                        "(DIR/last.safetensors holds the last epoch's weights, DIR/best.safetensors the best)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto; the shipped "
                        "models were trained on cuda (other devices give other weights)")
    parser.add_argument("--retune", type=Path, metavar="FILE", help="skip training: load this model file (made by "
                        "this script), tune its instance parameters again, score it and write it to --out")
    parser.add_argument("--keep-instances", action="store_true", help="with --retune: keep the file's instance "
                        "parameters (no grid search); the file is scored and written again")
    parser.add_argument("--instances", nargs="+", default=[], metavar="KEY=VALUE", help="with --retune: set "
                        "these instance parameters (InstanceConfig fields, e.g. seed_threshold=0.6 "
                        "seed_low_threshold=0.4; the others stay the file's) instead of the grid search")
    parser.add_argument("--init", type=Path, metavar="FILE", help="fine-tune: start from this model file's "
                        "weights (the recipe's network) instead of new ones; the recipe's schedule runs from its "
                        "start")
    parser.add_argument("--resume", action="store_true", help="continue the run whose checkpoints are in "
                        "--checkpoints DIR (give the same options as the run that wrote them)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.init and args.retune:
        parser.error("--init starts a training run; --retune does not train")
    if (args.keep_instances or args.instances) and not args.retune:
        parser.error("--keep-instances and --instances go with --retune")
    if args.resume and (args.checkpoints is None or args.retune):
        parser.error("--resume needs --checkpoints DIR (the folder of the run to continue) and no --retune")
    if args.init is not None:
        if args.init.resolve() == (args.out / f"{args.name}.safetensors").resolve():
            parser.error(f"--init {args.init} is the file this run writes: give another --out (or copy it first)")
        args.init_training = load_model(args.init).model_config.training  # read before anything is written
    recipe = dict(RECIPES[args.name])
    args.out.mkdir(parents=True, exist_ok=True)
    for key in ("epochs", "steps", "images", "workers"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in recipe and key not in OPTIONAL_ENTRIES:
            known = sorted(set(recipe) | set(OPTIONAL_ENTRIES))
            parser.error(f"--set {item}: unknown recipe entry {key!r}; known: {', '.join(known)}")
        try:
            recipe[key] = json.loads(value)
        except json.JSONDecodeError:
            recipe[key] = value
    if args.retune:  # the model's own recipe (its training data) is what the summary reports
        net = load_model(args.retune)
        if net.model_config.name != args.name:
            parser.error(f"{args.retune} holds model {net.model_config.name!r}, not {args.name!r}")
        stored = net.model_config.training.get("recipe", {})
        recipe = dict(recipe, **{k: v for k, v in stored.items() if k != "held_out"})  # held_out: this script's
    start = time.perf_counter()
    train_count = 0 if args.retune else recipe["images"]
    train_images, train_labels = images(recipe, train_count, TRAIN_SEED)
    tune_images, tune_labels = images(recipe, recipe["held_out"], TUNE_SEED)
    test_images, test_labels = images(recipe, recipe["held_out"], TEST_SEED)
    if recipe.get("real_unannotated", "background") not in ("background", "ignore"):
        parser.error(f"real_unannotated must be \"background\" or \"ignore\", got {recipe['real_unannotated']!r}")
    if recipe.get("real") and not args.retune:
        real_images, real_labels = real_frames(recipe["real"])
        if recipe.get("real_unannotated") == "ignore":
            real_labels = [mark_unannotated(i, l) for i, l in zip(real_images, real_labels)]
        real_images, real_labels = quarters(real_images, real_labels, int(recipe.get("real_repeat", 1)))
        train_images, train_labels = train_images + real_images, train_labels + real_labels
        print(f"{args.name}: {len(real_images)} pieces of real frames {recipe['real']} added", flush=True)
    if recipe.get("real_tune"):
        extra_images, extra_labels = real_frames(recipe["real_tune"])
        tune_images, tune_labels = tune_images + extra_images, tune_labels + extra_labels
    print(f"{args.name}: generated {train_count} training and 2 x {recipe['held_out']} held-out images "
          f"of {recipe['shape']} in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.retune:
        net = train_model(args, recipe, train_images, train_labels)
        if args.train_only:
            path = save_model(net, args.out / f"{args.name}.safetensors", overwrite=True)
            print(f"wrote {path} (not scored) in {time.perf_counter() - start:.0f} s")
            return 0
    if not net.model_config.diameter:  # a file made before models stored the diameter of their training cells
        if args.retune:
            train_images, train_labels = images(recipe, recipe["images"], TRAIN_SEED)
            if recipe.get("real"):
                train_labels += quarters(*real_frames(recipe["real"]), int(recipe.get("real_repeat", 1)))[1]
        median, spread = training_diameter(train_labels)
        net.model_config = dataclasses.replace(net.model_config, diameter=median, diameter_range=spread)
    if recipe.get("rescale_to") not in (None, "range", "median"):
        parser.error(f"rescale_to must be \"range\" or \"median\", got {recipe['rescale_to']!r}")
    net.model_config = dataclasses.replace(net.model_config, rescale_to=recipe.get("rescale_to", "range"))
    if args.instances:
        instances, tuned_ap = _set_instances(parser, net.model_config.instances, args.instances), None
    elif args.keep_instances:
        instances, tuned_ap = net.model_config.instances, net.model_config.training.get("tuned_ap50")
    else:
        instances, tuned_ap = tune_instances(net, tune_images, tune_labels, args.device)
    test = score(net, test_images, test_labels, instances, args.device)
    sample_image, sample_labels = sample(args.name)
    on_sample = score(net, [sample_image], [sample_labels], instances, args.device)
    summary = dict(net.model_config.training, tuned_ap50=tuned_ap, test=test, sample=on_sample,
                   held_out_images=recipe["held_out"],
                   data=f"{recipe['images']} synthetic images of {recipe['shape']} "
                        f"(tiled_unet.synthetic.render_nuclei, seeds {TRAIN_SEED}+)"
                        + (f" and real frames {recipe['real']} (quarters x {recipe.get('real_repeat', 1)})"
                           if recipe.get("real") else ""))
    summary.setdefault("command", f"python scripts/train_builtin_models.py {args.name}")
    summary.setdefault("device", args.device)
    if args.retune:
        summary["tuning_command"] = _command(argv)
        summary["recipe"] = dict(summary.get("recipe", {}), **{k: recipe[k] for k in ("rescale_to", "real_tune")
                                                                if k in recipe})
    net.model_config = dataclasses.replace(
        net.model_config, instances=instances, training=summary,
        description=f"fluorescent nuclei, {recipe['ndim']}D, trained on synthetic images"
                    f"{' and real frames' if recipe.get('real') else ''} (held-out synthetic AP@0.5 "
                    f"{test['ap50']:.2f})")
    path = save_model(net, args.out / f"{args.name}.safetensors", overwrite=True)
    print(f"instances: {instances}")
    print(f"held-out synthetic: AP@0.5 {test['ap50']:.3f}, {test['cells']} cells, merges {test['merges']}, "
          f"splits {test['splits']}")
    print(f"sample {args.name}: AP@0.5 {on_sample['ap50']:.3f}, merges {on_sample['merges']}, "
          f"splits {on_sample['splits']}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
