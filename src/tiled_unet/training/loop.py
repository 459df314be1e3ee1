"""Training on instance labels: the U-Net weighted loss, augmentation, the epoch kept by validation.

:func:`train_iter` is a generator of :class:`TrainProgress` events (one per step and one
per epoch) that *returns* the best model; closing it stops after the current step and
keeps the best checkpoint. :func:`train` runs it to the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np
import torch

from ..config import (
    InstanceConfig,
    ModelConfig,
    NormalizationConfig,
    UNetConfig,
    config_or_options,
)
from ..engine.cellsize import training_diameter
from ..engine.devices import resolve_device, resolve_precision
from ..events import run_to_end
from ..io.arrays import open_image
from ..io.paths import claim_output
from ..model import UNet
from ..weights import load_model, save_model
from .augment_device import DevicePatches
from .checkpoints import CHECKPOINT_FILES, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainProgress
from .datasets import (
    Example,
    PatchStream,
    load_pair,
    patch_shapes,
    prepare_all,
    split_validation,
)
from .loss import weighted_cross_entropy
from .targets import CLASS_NAMES, TWO_CLASS_NAMES, trainable
from .validation import Validation, tune_instances


def epoch_learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate of an epoch (1-based): constant, or cosine decay to 5 % over ``epochs``."""
    if config.schedule == "constant":
        return config.learning_rate
    progress = (epoch - 1) / max(config.epochs - 1, 1)
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def default_patch(ndim: int) -> tuple[int, ...]:
    return (96, 96) if ndim == 2 else (24, 48, 48)


def new_model(ndim: int, in_channels: int = 1, *, depth: int = 3, base_channels: int = 16,
              batch_norm: bool = True, name: str = "custom", voxel_size: Sequence[float] = (),
              targets: str = "boundary") -> UNet:
    """A fresh U-Net for instance segmentation.

    ``targets="boundary"`` (default): three classes (background, interior, boundary);
    ``"gaps"``: the paper's two classes (background, cell), touching cells parted by background gaps.
    """
    if targets not in ("boundary", "gaps"):
        raise ValueError(f"targets must be 'boundary' or 'gaps', got {targets!r}")
    names = CLASS_NAMES if targets == "boundary" else TWO_CLASS_NAMES
    unet = UNetConfig(ndim=ndim, in_channels=in_channels, num_classes=len(names), depth=depth,
                      base_channels=base_channels, batch_norm=batch_norm)
    return UNet(ModelConfig(unet=unet, normalization=NormalizationConfig(), instances=InstanceConfig(),
                            class_names=names, name=name, voxel_size=tuple(voxel_size),
                            axes="YX" if ndim == 2 else "ZYX"))


def _initial_model(init: Any, ndim: int, in_channels: int, voxel_size: Sequence[float]) -> UNet:
    if init is None:
        return new_model(ndim, in_channels, voxel_size=voxel_size)
    if isinstance(init, UNet):
        net = UNet(init.model_config)
        net.load_state_dict(init.state_dict())
    else:

        net = load_model(init)
    if not trainable(net.model_config.class_names) or net.config.num_classes != len(net.model_config.class_names):
        raise ValueError(f"fine-tuning needs a model with the classes {CLASS_NAMES} or {TWO_CLASS_NAMES}, "
                         f"the initial model {net.model_config.name!r} has {net.model_config.class_names}; "
                         f"start from a new model instead (init=None, no --init)")
    return net


def training_inputs(images: Sequence[Any], labels: Sequence[Any], init: Any = None) -> list[str | os.PathLike]:
    """The files training reads (images, labels and the starting model's file): outputs never replace them."""
    return [p for p in (*images, *labels, init) if isinstance(p, (str, os.PathLike)) and os.path.exists(p)]


def _weights_on_cpu(net: UNet) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's weights and buffers (a snapshot training does not change)."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def train_iter(images: Sequence[Any], labels: Sequence[Any], *, init: Any = None,
               config: TrainConfig | None = None, out: str | os.PathLike | None = None,
               checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
               voxel_size: Sequence[float] = (), name: str = "custom", overwrite: bool = False,
               provenance: dict[str, Any] | None = None, **options: Any) -> Generator[TrainProgress, None, UNet]:
    """Train (or fine-tune ``init``) on ``images`` / ``labels``; yields progress, returns the best model.

    ``images``/``labels``: equal-length sequences of arrays or paths (TIFF, zarr), labels
    0 = background (or ``ignore_label`` = unannotated), 1..N = cells. ``options`` are
    :class:`TrainConfig` fields. ``out``: the final model file (the best validation epoch: :mod:`.validation`).
    ``provenance``: JSON-able entries (how the data were made, the command line) added to the
    training summary of the final model and of the checkpoint model files.
    """
    cfg = config_or_options(TrainConfig, config, options, "train")
    if isinstance(images, (str, os.PathLike)) or isinstance(labels, (str, os.PathLike)):
        raise TypeError("images and labels must be sequences of images (use datasets.pair_paths for folders)")
    if len(images) != len(labels) or not images:
        raise ValueError(f"need the same positive number of images and label images, got {len(images)} and "
                         f"{len(labels)}")
    _check_provenance(provenance)
    inputs = training_inputs(images, labels, init)
    if out is not None:
        claim_output(out, overwrite, inputs, what="model file")

    if checkpoint_dir is not None and not resume:
        held = [name for name in CHECKPOINT_FILES if (Path(checkpoint_dir) / name).exists()]
        if held and not overwrite:
            raise FileExistsError(f"checkpoint folder {os.fspath(checkpoint_dir)} already holds checkpoints "
                                  f"({', '.join(held)}) of another run; pass resume=True (CLI: --resume) to "
                                  f"continue it, overwrite=True (--overwrite) to replace them, or choose "
                                  f"another folder")
        claim_output(checkpoint_dir, True, inputs, what="checkpoint folder")

    spatial_ndim = open_image(labels[0]).ndim
    image_shape = open_image(images[0]).shape
    channels = image_shape[0] if len(image_shape) == spatial_ndim + 1 else 1
    net = _initial_model(init, spatial_ndim, channels, voxel_size)
    ndim, in_channels = net.config.ndim, net.config.in_channels
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device) if device.type == "cuda" else (
        None if cfg.precision in ("auto", "float32") else resolve_precision(cfg.precision, device))
    pairs = [load_pair(i, l, ndim, in_channels, f"image {k + 1}") for k, (i, l) in enumerate(zip(images, labels))]
    if not any(bool(((l != 0) & (l != cfg.ignore_label) if cfg.ignore_label is not None else l != 0).any())
               for _, l in pairs):
        raise ValueError("the label images hold no cell (every pixel is 0"
                         + (f" or the ignore label {cfg.ignore_label}" if cfg.ignore_label is not None else "")
                         + "): there is nothing to learn; give label images in which each cell has its own "
                           "non-zero ID")
    train_pairs, val_pairs = split_validation(pairs, cfg.validation_fraction)
    prepare_options = dict(w0=cfg.w0, sigma=cfg.sigma, boundary_width=cfg.boundary_width,
                           ignore_label=cfg.ignore_label, spacing=voxel_size or None)
    examples: list[Example] = prepare_all(train_pairs, net.model_config, rng=rng, **prepare_options)
    val_examples = prepare_all(val_pairs, net.model_config, rng=np.random.default_rng(0), **prepare_options)
    if cfg.ignore_label is not None:
        val_pairs = [(i, np.where(l == cfg.ignore_label, 0, l)) for i, l in val_pairs]
    validation = Validation(val_pairs, val_examples, cfg.min_tuning_cells)
    geometry = net.geometry
    if cfg.patch_shape and len(cfg.patch_shape) != ndim:
        raise ValueError(f"patch_shape (CLI --patch) has {len(cfg.patch_shape)} sizes {tuple(cfg.patch_shape)}, but "
                         f"the model is {ndim}-D: give one size per spatial axis "
                         f"({'Z Y X' if ndim == 3 else 'Y X'}), e.g. {' '.join(map(str, default_patch(ndim)))}")
    input_shape, output_shape = patch_shapes(geometry, cfg.patch_shape or default_patch(ndim))
    net.to(device)
    # channels-last convolutions on the CPU: about 1.26x faster steps in 2D and 3D (benchmarks/bench_steps.py)
    memory_format = None
    if device.type == "cpu":
        memory_format = torch.channels_last if ndim == 2 else torch.channels_last_3d
        net.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    state = {"epoch": 0, "best_score": -math.inf, "best_ap": None, "best_epoch": 0, "history": []}
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if resume:

            state, rng = load_checkpoint(ckpt, net, optimizer, device)
            if "best_score" not in state:  # a checkpoint from before the validation loss: its best_ap was the score
                state["best_score"] = state["best_ap"]
    kept_state = _weights_on_cpu(net)
    best_state = kept_state
    if ckpt is not None and resume:  # the best weights so far are in best.safetensors, not the last ones

        best_state = load_model(ckpt / "best.safetensors").state_dict()
    start = time.perf_counter()
    voxel_size_out = tuple(voxel_size) or net.model_config.voxel_size
    diameter, diameter_range = training_diameter(
        [l if cfg.ignore_label is None else np.where(l == cfg.ignore_label, 0, l) for _, l in pairs])

    selected_by = ("training loss" if not val_pairs else "validation loss" if validation.by_loss
                   else "validation AP@0.5")

    def summary(seconds: float, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                "best_val_ap50": state["best_ap"], "selected_by": selected_by,
                "train_images": len(train_pairs), "val_images": len(val_pairs),
                "patch_input_shape": list(input_shape), "seconds": round(seconds, 1),
                "config": cfg.to_dict(), "history": list(state["history"]), "tuned_instances": tuned,
                **(provenance or {})}

    if cfg.augment_on == "device":

        patches = DevicePatches(examples, input_shape, output_shape, cfg.foreground_fraction, cfg.augment, rng,
                                device)
    else:
        patches = PatchStream(examples, input_shape, output_shape, cfg.foreground_fraction, cfg.augment, rng,
                              cfg.workers, cfg.worker_type)
    finished = False  # not when cancelled or failed: then the best weights are kept as they are
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = epoch_learning_rate(cfg, epoch)
            net.train()
            losses = []
            for step, batch in enumerate(patches.epoch(cfg.steps_per_epoch, cfg.batch_size), 1):
                x, t, w = _batch_tensors(batch, device)
                if memory_format is not None:
                    x = x.contiguous(memory_format=memory_format)
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = net(x)
                loss = weighted_cross_entropy(logits.float(), t, w)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                yield TrainProgress("step", epoch, cfg.epochs, step, cfg.steps_per_epoch, losses[-1],
                                    seconds=time.perf_counter() - start)
            val_ap, val_loss = validation.measure(net, device)
            score = validation.score(val_ap, val_loss)
            if score is None:
                score = -float(np.mean(losses))
            if score > state["best_score"]:
                state["best_score"], state["best_ap"], state["best_epoch"] = score, val_ap, epoch
                best_state = _weights_on_cpu(net)
            if cfg.keep == "last":
                kept_state = _weights_on_cpu(net)
            state["epoch"] = epoch
            state["history"].append({"epoch": epoch, "loss": float(np.mean(losses)), "val_ap": val_ap,
                                     "val_loss": val_loss})
            if ckpt is not None:

                so_far = summary(time.perf_counter() - start)
                save_checkpoint(ckpt, net, optimizer, state, rng, best_state,
                                {which: dataclasses.replace(net.model_config, name=name, voxel_size=voxel_size_out,
                                                            diameter=diameter, diameter_range=diameter_range,
                                                            training=dict(so_far, checkpoint=which))
                                 for which in ("last", "best")})
            yield TrainProgress("epoch", epoch, cfg.epochs, cfg.steps_per_epoch, cfg.steps_per_epoch,
                                float(np.mean(losses)), val_ap, state["best_ap"], state["best_epoch"],
                                time.perf_counter() - start, val_loss)
            if epoch - state["best_epoch"] >= cfg.patience:
                break
        finished = True
    finally:
        patches.close()
        net.to(memory_format=torch.contiguous_format)
        net.load_state_dict(best_state if cfg.keep == "best" else kept_state)
        net.eval()
        tuned = None
        if cfg.tune_instances and val_pairs and finished:
            tuned = tune_instances(net, val_pairs, device, cfg.min_tuning_cells)
        net.model_config = dataclasses.replace(net.model_config, name=name, voxel_size=voxel_size_out,
                                               diameter=diameter, diameter_range=diameter_range,
                                               training=summary(time.perf_counter() - start, tuned))
        if out is not None and state["epoch"] >= 1:

            save_model(net, out, overwrite=True)
    return net


#: the training summary's own entries, which ``provenance`` may not replace
SUMMARY_KEYS = ("epochs_run", "best_epoch", "best_val_ap50", "selected_by", "train_images", "val_images", "patch_input_shape",
                "seconds", "config", "history", "tuned_instances", "checkpoint")


def _check_provenance(provenance: dict[str, Any] | None) -> None:
    if provenance is None:
        return
    if not isinstance(provenance, dict):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    clash = sorted(set(provenance) & set(SUMMARY_KEYS))
    if clash:
        raise ValueError(f"provenance may not replace the training summary's own entries {clash}; rename them")
    try:
        json.dumps(provenance)
    except (TypeError, ValueError) as error:
        raise TypeError(f"provenance must be JSON-able (strings, numbers, lists, dicts): {error}") from None


def _batch_tensors(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, targets, weights)`` on ``device`` from a list of numpy patches (or tensors made there)."""
    if isinstance(batch, tuple):
        return batch
    x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
    t = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64)).to(device)
    w = torch.from_numpy(np.stack([b[2] for b in batch])).to(device)
    return x, t, w


def train(images: Sequence[Any], labels: Sequence[Any], *, progress: Callable[[TrainProgress], None] | None = None,
          **kwargs: Any) -> UNet:
    """Run :func:`train_iter` to the end; ``progress`` receives every event."""
    gen = train_iter(images, labels, **kwargs)
    return run_to_end(gen, progress)
