"""The "Train U-Net" widget: image + Labels layer pairs in, a model file out, in a worker thread."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)

from ..io.paths import claim_output
from ..training.config import TrainProgress
from ..training.loop import train_iter, training_inputs
from ..training.loss import weight_map
from ..training.targets import CLASS_NAMES, targets_for, trainable
from ._common import layer_data, start_worker
from ._models import REGISTRY

if TYPE_CHECKING:
    import napari

NEW_MODEL = "(new model)"
DEVICES = ("auto", "cpu", "cuda", "mps")
BOUNDARY_WIDTH = 2  # TrainConfig's default: the preview shows what training uses


def training_labels(labels: np.ndarray, ignore_unannotated: bool, background: int) -> tuple[np.ndarray, int | None]:
    """Labels and ``ignore_label`` for :func:`tiled_unet.train.train_iter` from painted labels.

    Without ``ignore_unannotated``: 0 = background, every other value = one cell.
    With it: 0 = not annotated (ignored by the loss), ``background`` = painted background,
    every other value = one cell; returned with background 0 and the ignored pixels set to
    a value no cell uses.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers (a Labels layer), got dtype {labels.dtype}")
    if not ignore_unannotated:
        return labels, None
    if not np.any(labels == background):
        raise ValueError(f"'unannotated pixels are ignored' is on, but no pixel has the background label "
                         f"{background}: paint some background with label {background}, or turn the option off")
    out = labels.astype(np.int64)
    ignore = int(out.max()) + 1
    out[labels == 0] = ignore
    out[labels == background] = 0
    return out, ignore


def _image_array(layer: Any) -> np.ndarray:
    """The whole image (training needs it in memory), channels first for RGB."""
    image = np.asarray(layer_data(layer))
    return np.moveaxis(image, -1, 0) if getattr(layer, "rgb", False) else image


def _spatial_scale(layer: Any) -> tuple[float, ...]:
    """The layer's scale, or () when it is napari's default of all ones (unknown voxel size)."""
    scale = tuple(float(s) for s in layer.scale)
    return () if all(s == 1.0 for s in scale) else scale


def _progress_text(event: TrainProgress) -> str:
    text = f"epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}, loss {event.loss:.4f}"
    if event.kind == "epoch":
        ap = "n/a" if event.val_ap is None else f"{event.val_ap:.3f}"
        best = "" if event.best_ap is None else f", best {event.best_ap:.3f} (epoch {event.best_epoch})"
        text = f"epoch {event.epoch}/{event.epochs}: mean loss {event.loss:.4f}, validation AP@0.5 {ap}{best}"
    return f"{text}, {event.seconds:.0f} s"


class TrainWidget(Container):
    """Train a U-Net (or fine-tune a built-in one) on painted Labels layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self.worker = None
        self.events: list[TrainProgress] = []
        self.model = None
        self._started = 0.0
        self._pairs = Container(label="image / labels pairs", layout="vertical")
        self._add_pair = PushButton(text="Add a pair", tooltip="train on one more image with its painted labels")
        self._remove_pair = PushButton(text="Remove the last pair", tooltip="drop the last image / labels pair")
        self._ignore = CheckBox(text="unannotated pixels (label 0) are ignored", value=False,
                                tooltip="for partly painted images: label 0 is not used by the loss, the "
                                        "background label below marks background")
        self._background = SpinBox(label="background label", min=1, max=2**31 - 1, value=1, visible=False,
                                   tooltip="with 'ignored': paint background with this label")
        self._init = ComboBox(label="start from", choices=self._init_choices,
                              tooltip="a new (untrained) network, or a model to fine-tune")
        self._epochs = SpinBox(label="epochs", min=1, max=100000, value=20,
                               tooltip="training rounds; each ends with a validation score, and the best "
                                       "model so far is kept")
        self._steps = SpinBox(label="steps per epoch", min=1, max=100000, value=50,
                              tooltip="optimiser steps (batches of patches) per epoch")
        self._batch = SpinBox(label="batch size", min=1, max=1024, value=4,
                              tooltip="patches per optimiser step")
        self._patch = SpinBox(label="patch size", min=0, max=4096, value=0,
                              tooltip="output patch edge in pixels; 0 = 96x96 (2D) or 24x48x48 (3D)")
        self._lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-5, value=1e-3,
                                tooltip="the Adam optimiser's step size (at the start of a cosine "
                                        "schedule)")
        self._w0 = FloatSpinBox(label="w0 (border weight)", min=0.0, max=1000.0, step=1.0, value=10.0,
                                tooltip="extra loss weight on the background between touching cells "
                                        "(0 = class balancing only)")
        self._sigma = FloatSpinBox(label="sigma (border width)", min=0.1, max=1000.0, step=0.5, value=5.0,
                                   tooltip="how far from the cells the border weight reaches, in pixels (in "
                                           "the labels layer's scale units when its scale is set)")
        self._val = FloatSpinBox(label="validation fraction", min=0.0, max=0.9, step=0.05, value=0.2,
                                 tooltip="share (0..0.9) of the pairs (of one image: its last part along "
                                         "the longest axis) kept out of training to score each epoch (AP@0.5)")
        self._device = ComboBox(label="device", choices=DEVICES, value="auto",
                                tooltip="where the network trains: auto = a CUDA GPU, else Apple MPS, else "
                                        "the CPU")
        self._workers = SpinBox(label="patch workers", min=0, max=max(os.cpu_count() or 1, 1), value=0,
                                tooltip="threads that prepare patches ahead of the training step; several keep "
                                        "a GPU busy (0 = in the training loop)")
        self._augment_on = ComboBox(label="patches made on", choices=["cpu", "device"], value="cpu",
                                    tooltip="cpu: in the loop or the patch workers; device: on the training "
                                            "device (e.g. the GPU), with the training data copied there once")
        self._name = LineEdit(label="model name", value="custom", tooltip="the name stored in the model file")
        self._out = FileEdit(label="model file", mode="w", filter="*.safetensors",
                             tooltip="where the trained model is saved (.safetensors); it then appears in "
                                     "the Segment widget's model list")
        self._overwrite = CheckBox(text="overwrite an existing model file", value=False,
                                   tooltip="replace the model file if it exists (else training does not start)")
        self._preview = PushButton(text="Preview weight map",
                                   tooltip="show the loss weights of the first pair's labels as an image layer")
        self._run = PushButton(text="Train", tooltip="train in the background")
        self._cancel = PushButton(text="Cancel (keeps the best model so far)", enabled=False,
                                  tooltip="stop after the current step; the best model so far is saved")
        self._progress = Label(label="progress", value="", tooltip="the current epoch and step")
        self._history = Label(label="validation", value="",
                              tooltip="the last epochs' mean loss and validation AP@0.5")
        self._status = Label(label="status", value="ready", tooltip="what the last run did")
        for w in (self._progress, self._history, self._status):
            w.native.setWordWrap(True)
        self.extend([self._pairs, self._add_pair, self._remove_pair, self._ignore, self._background, self._init,
                     self._epochs, self._steps, self._batch, self._patch, self._lr, self._w0, self._sigma,
                     self._val, self._device, self._workers, self._augment_on, self._name, self._out, self._overwrite,
                     self._preview, self._run, self._cancel, self._progress, self._history, self._status])
        self.add_pair()
        self._add_pair.clicked.connect(self.add_pair)
        self._remove_pair.clicked.connect(self.remove_pair)
        self._ignore.changed.connect(lambda v: setattr(self._background, "visible", bool(v)))
        self._augment_on.changed.connect(self._on_augment_place)
        self._preview.clicked.connect(self.preview_weights)
        self._run.clicked.connect(self.run)
        self._cancel.clicked.connect(self.cancel)
        REGISTRY.added.connect(self._on_registry)

    # --- inputs -------------------------------------------------------------------------
    @staticmethod
    def _init_choices(*_: Any) -> list:
        """A new model, or any known model with classes training can make targets for."""
        choices: list = [(NEW_MODEL, NEW_MODEL)]
        for label, value in REGISTRY.choices():
            try:
                net = REGISTRY.load(value)
            except Exception:
                continue
            if trainable(net.model_config.class_names):
                choices.append((label, value))
        return choices

    def _on_registry(self, path: str) -> None:
        try:
            self._init.reset_choices()
        except RuntimeError:  # this widget was closed
            REGISTRY.added.disconnect(self._on_registry)

    def add_pair(self) -> Container:
        row = Container(layout="horizontal", labels=False)
        row.extend([create_widget(annotation="napari.layers.Image", label="image",
                                  options={"tooltip": "an image to train on"}),
                    create_widget(annotation="napari.layers.Labels", label="labels",
                                  options={"tooltip": "its painted cells (one label per cell, 0 = background); "
                                                      "the labels layer's scale is the voxel size"})])
        self._pairs.append(row)
        row.reset_choices()
        return row

    def remove_pair(self) -> None:
        if len(self._pairs) > 1:
            self._pairs.pop()

    def pairs(self) -> list[tuple[Any, Any]]:
        """The (image layer, labels layer) of every row."""
        return [(row[0].value, row[1].value) for row in self._pairs]

    def _training_data(self):
        images, labels, ignores, scales = [], [], [], []
        for k, (image_layer, labels_layer) in enumerate(self.pairs(), start=1):
            if image_layer is None or labels_layer is None:
                raise ValueError(f"pair {k}: choose an image layer and a Labels layer (paint one with "
                                 f"Layers > New Labels layer)")
            lab, ignore = training_labels(layer_data(labels_layer), bool(self._ignore.value),
                                          int(self._background.value))
            images.append(_image_array(image_layer))
            labels.append(lab)
            ignores.append(ignore)
            scales.append(_spatial_scale(labels_layer))
        ignore_label = None
        if self._ignore.value:  # one value for all pairs: the largest, above every cell
            ignore_label = max(ignores)
            labels = [np.where(lab == own, ignore_label, lab) for lab, own in zip(labels, ignores)]
        return images, labels, scales[0], ignore_label

    # --- weight map preview -------------------------------------------------------------
    def preview_weights(self) -> None:
        """Add the U-Net loss weights of the first pair's labels as an image layer."""
        from napari.utils.notifications import show_error

        try:
            labels_layer = self.pairs()[0][1]
            if labels_layer is None:
                raise ValueError("choose a Labels layer in the first pair")
            lab, ignore = training_labels(layer_data(labels_layer), bool(self._ignore.value),
                                          int(self._background.value))
            init = self._init.value
            names = CLASS_NAMES if init == NEW_MODEL else REGISTRY.load(init).model_config.class_names
        except Exception as exc:
            self._status.value = f"error: {exc}"
            show_error(f"Train U-Net: {exc}")
            return
        w0, sigma, spacing = float(self._w0.value), float(self._sigma.value), _spatial_scale(labels_layer) or None

        def job():

            mask = lab == ignore if ignore is not None else None
            clean = np.where(mask, 0, lab) if mask is not None else lab
            yield "weights"
            targets = targets_for(names, clean, BOUNDARY_WIDTH, mask)
            return weight_map(clean, targets, len(names), w0=w0, sigma=sigma, spacing=spacing)

        def add(weights: np.ndarray) -> None:
            self._viewer.add_image(weights, name=f"{labels_layer.name} weight map", colormap="inferno",
                                   scale=labels_layer.scale, translate=labels_layer.translate,
                                   blending="additive", contrast_limits=(0.0, float(max(weights.max(), 1e-6))))
            self._status.value = f"weight map: {weights.min():.2f} .. {weights.max():.2f}"

        self.worker = start_worker(job(), description="Weight map", yielded=lambda e: None, returned=add,
                                   finished=lambda: None)

    # --- training -----------------------------------------------------------------------
    def run(self) -> None:
        """Start training in a worker thread."""
        from napari.utils.notifications import show_error

        try:
            gen, out = self._prepare()
        except Exception as exc:
            self._status.value = f"error: {exc}"
            show_error(f"Train U-Net: {exc}")
            return
        self.events, self.model, self._epoch_lines = [], None, []
        self._started = time.time()
        self._out_path = out
        self._run.enabled, self._cancel.enabled = False, True
        self._status.value = "training"
        self._history.value = ""
        self.worker = start_worker(gen, description="Training U-Net", yielded=self._on_yield,
                                   returned=self._on_done, finished=self._on_finished,
                                   fraction=lambda e: e.fraction, describe=lambda e: f"Training: {_progress_text(e)}",
                                   errored=lambda exc: setattr(self._status, "value", f"error: {exc}"))

    def _prepare(self):
        out = self._out.value
        if not out or Path(out) == Path(".") or not str(out).strip():
            raise ValueError("choose where to save the model under 'model file' (e.g. my_cells.safetensors)")
        out = Path(out)
        if out.suffix != ".safetensors":
            out = out.with_suffix(".safetensors")
        init = None if self._init.value == NEW_MODEL else self._init.value
        claim_output(out, self._overwrite.value, training_inputs((), (), init), what="model file",
                     replace_hint="tick 'overwrite an existing model file'")
        images, labels, voxel_size, ignore_label = self._training_data()
        ndim = labels[0].ndim
        patch = () if self._patch.value == 0 else (int(self._patch.value),) * ndim
        gen = train_iter(images, labels, init=init, out=out, overwrite=True, name=self._name.value or "custom",
                         voxel_size=voxel_size, epochs=int(self._epochs.value),
                         steps_per_epoch=int(self._steps.value), batch_size=int(self._batch.value),
                         patch_shape=patch, learning_rate=float(self._lr.value), w0=float(self._w0.value),
                         sigma=float(self._sigma.value), validation_fraction=float(self._val.value),
                         device=self._device.value, ignore_label=ignore_label, workers=int(self._workers.value),
                         augment_on=self._augment_on.value)
        return gen, out

    def _on_augment_place(self, place: str) -> None:
        """Patch workers only run with patches made on the CPU."""
        if place == "device":
            self._workers.value = 0
        self._workers.enabled = place == "cpu"

    def cancel(self) -> None:
        """Stop after the current step; the best model so far is written to the model file."""
        if self.worker is not None:
            self._status.value = "cancelling after the current step"
            self.worker.quit()

    def _on_yield(self, event: TrainProgress) -> None:
        self.events.append(event)
        self._progress.value = _progress_text(event)
        if event.kind == "epoch":
            self._epoch_lines = (self._epoch_lines + [_progress_text(event)])[-8:]
            self._history.value = "\n".join(self._epoch_lines)

    def _on_done(self, net: Any) -> None:
        self.model = net
        REGISTRY.add(self._out_path)
        best = net.model_config.training.get("best_val_ap50")
        ap = "" if best is None else f", best validation AP@0.5 {best:.3f}"
        skipped = (net.model_config.training.get("tuned_instances") or {}).get("skipped")
        note = f"; instance thresholds not tuned: {skipped}" if skipped else ""
        self._status.value = f"done: saved {self._out_path}{ap}; it is in the Segment widget's model list{note}"

    def _on_finished(self) -> None:
        if not self._status.value.startswith(("done", "error")):
            path = self._out_path
            if path.exists() and os.path.getmtime(path) >= self._started - 1:
                REGISTRY.add(path)
                self._status.value = f"cancelled: the best model so far is saved in {path}"
            else:
                self._status.value = "cancelled before the first epoch ended: no model written"
        self._run.enabled, self._cancel.enabled = True, False
