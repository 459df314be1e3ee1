"""The "Segment cells (U-Net)" widget: an image layer in, a Labels layer out, in a worker thread."""

from __future__ import annotations

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
    RadioButtons,
    SpinBox,
    create_widget,
)

from ..config import InstanceConfig
from ..engine import estimate as estimate_mod
from ..engine.backends import BACKENDS
from ..engine.cellsize import check_diameter
from ..engine.devices import PRECISIONS
from ..io.arrays import scale_attrs, source_path
from ..pipeline import LabelProgress, segment_iter
from ._common import (
    SPATIAL,
    engine_input,
    guess_axes,
    image_ndim,
    known_voxel_size,
    layer_data,
    start_worker,
    voxel_size_for,
)
from ._models import REGISTRY

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")
IN_MEMORY, ZARR = "in memory", "zarr"
LARGE_RESULT = 1 << 30  # above this estimated result size the widget proposes zarr output


def _event_text(event: Any) -> str:
    if isinstance(event, LabelProgress):
        return f"labels: {event.stage} {event.done}/{event.total}"
    if event.note:
        return event.note
    frame = f", frame {event.frame + 1}/{event.frames}" if event.frames > 1 else ""
    return f"tile {event.done}/{event.total}{frame}"


class RunProgress:
    """Fraction done of a run, never going back: tiles 0..0.9, then labelling 0.9..1, where each
    new labelling stage (blocks, faces, relabelling, a next frame) takes half of what is left."""

    TILES = 0.9

    def __init__(self) -> None:
        self.stage: tuple | None = None
        self.stages = 0

    def __call__(self, event: Any) -> float:
        if not isinstance(event, LabelProgress):
            return self.TILES * event.fraction
        if (event.stage, event.total) != self.stage or event.done == 0 and self.stage is not None:
            self.stage, self.stages = (event.stage, event.total), self.stages + 1
        start = 1 - 0.5 ** (self.stages - 1)
        step = 0.5 ** self.stages
        return self.TILES + (1 - self.TILES) * (start + step * event.fraction)


class SegmentWidget(Container):
    """Segment the cells of an image layer with a U-Net; the labels appear as a new layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self.worker = None
        self.events: list[Any] = []
        self._started = 0.0
        self._flops = 0.0
        self._image = create_widget(annotation="napari.layers.Image", label="image",
                                    options={"tooltip": "the image layer to segment; its scale is taken as "
                                                        "the voxel size in micrometres (all ones: unknown)"})
        self._axes = LineEdit(label="axes", tooltip="one letter per axis of the layer's data: Z, Y, X "
                              "spatial, C channels, T (or Q, R, S, U) frames segmented one by one")
        self._channel = SpinBox(label="channel", min=0, max=1024,
                                tooltip="the channel (index from 0 along axis C) a one-channel model "
                                        "segments when the image has several")
        self._model = ComboBox(label="model", choices=REGISTRY.choices,
                               tooltip="the trained model: nuclei-2d for 2-D images, nuclei-3d for 3-D "
                                       "stacks (chosen to match the image), or a model file")
        self._model_file = FileEdit(label="model file", mode="r", filter="*.safetensors",
                                    tooltip="a .safetensors model file (e.g. from the Train U-Net widget); "
                                            "choosing one adds it to the model list")
        self._device = ComboBox(label="device", choices=DEVICES, value="auto",
                                tooltip="where the network runs: auto = a CUDA GPU, else Apple MPS, else "
                                        "the CPU")
        self._tile = SpinBox(label="tile size", min=0, max=8192, value=0,
                             tooltip="output tile edge in pixels; 0 = auto (largest that fits the memory)")
        self._diameter = LineEdit(label="cell diameter", value="auto",
                                  tooltip="typical cell diameter in pixels (in the layer's scale units when "
                                          "its scale is set): the image is rescaled so that its cells have a "
                                          "size the model was trained at; 'auto' estimates it, 'off' uses "
                                          "the image as it is")
        self._precision = ComboBox(label="precision", choices=PRECISIONS, value="auto",
                                   tooltip="arithmetic of the network: auto = bfloat16 where the CPU or GPU "
                                           "has it (about twice as fast), else float32; float32 = the exact "
                                           "reference; float16 only on GPUs")
        self._backend = ComboBox(label="backend", choices=BACKENDS, value="auto",
                                 tooltip="what runs the network: auto = OpenVINO on the CPU for large images "
                                         "with bfloat16 when it is installed, else PyTorch; openvino needs "
                                         "pip install 'napari-tiled-unet[openvino]'")
        self._fg = FloatSpinBox(label="foreground threshold", min=0.01, max=0.99, step=0.05,
                                tooltip="a pixel is a cell pixel when 1 - p(background) reaches this "
                                        "probability (0..1); lower finds fainter cells")
        self._seed = FloatSpinBox(label="seed threshold", min=0.01, max=0.99, step=0.05,
                                  tooltip="cell centres (seeds) are where p(interior) reaches this probability "
                                          "(0..1); higher splits touching cells apart more often")
        self._seed_low = FloatSpinBox(label="seed low threshold", min=0.0, max=0.98, step=0.05,
                                      tooltip="0 = off; else seeds are regions of p(interior) above this value, "
                                              "split at the seed threshold only into pieces of at least min "
                                              "seed size and min cell size (textured cells stay whole)")
        self._min_seed = SpinBox(label="min seed size", min=0, max=10**7,
                                 tooltip="seeds smaller than this many pixels are dropped (fewer false splits)")
        self._growth = SpinBox(label="max growth", min=0, max=10**4,
                               tooltip="seeds grow through the foreground by at most this many pixels")
        self._min_size = SpinBox(label="min cell size", min=0, max=10**9,
                                 tooltip="cells smaller than this many pixels (voxels in 3-D) are removed")
        self._keep = CheckBox(text="keep unseeded regions",
                              tooltip="foreground regions no seed reaches become cells of their own")
        self._fill = CheckBox(text="fill holes", tooltip="background enclosed by one cell joins that cell")
        self._output = RadioButtons(label="output", choices=(IN_MEMORY, ZARR), value=IN_MEMORY,
                                    orientation="horizontal",
                                    tooltip="in memory: a Labels layer; zarr: labels written block by block to "
                                            "a zarr folder (for images larger than memory), shown lazily")
        self._out_path = FileEdit(label="zarr path", mode="w", filter="*.zarr",
                                  tooltip="the zarr folder the labels are written to (with the voxel size)")
        self._overwrite = CheckBox(text="overwrite an existing zarr output", value=False,
                                   tooltip="replace the zarr folder if it exists (else the run stops)")
        self._estimate = Label(label="estimate", tooltip="memory and time this run is expected to take")
        self._run = PushButton(text="Run", tooltip="segment the image in the background; the labels appear "
                                                   "as a new layer")
        self._cancel = PushButton(text="Cancel", enabled=False,
                                  tooltip="stop after the current tile or block; nothing is added")
        self._status = Label(label="status", value="ready", tooltip="what the last run did")
        self._progress = RunProgress()
        for w in (self._estimate, self._status):
            w.native.setWordWrap(True)
        self.extend([self._image, self._axes, self._channel, self._model, self._model_file, self._device,
                     self._tile, self._diameter, self._precision, self._backend, self._fg, self._seed,
                     self._seed_low, self._min_seed, self._growth,
                     self._min_size, self._keep, self._fill, self._output, self._out_path, self._overwrite,
                     self._estimate, self._run, self._cancel, self._status])

        self._image.changed.connect(self._on_image)
        self._model.changed.connect(self._on_model)
        self._model_file.changed.connect(self._on_model_file)
        for w in (self._axes, self._channel, self._device, self._tile, self._precision, self._backend, self._output):
            w.changed.connect(self._update_estimate)
        self._output.changed.connect(self._on_output)
        self._run.clicked.connect(self.run)
        self._cancel.clicked.connect(self.cancel)
        REGISTRY.added.connect(self._on_registry)
        self._on_model()
        self._on_image()
        self._on_output()

    # --- inputs -------------------------------------------------------------------------
    def _net(self):
        return REGISTRY.load(self._model.value)

    def _on_registry(self, path: str) -> None:
        try:
            self._model.reset_choices()
        except RuntimeError:  # this widget was closed
            REGISTRY.added.disconnect(self._on_registry)

    def _on_model_file(self) -> None:
        path = self._model_file.value
        if path and Path(path).is_file():
            self._model.value = REGISTRY.add(path)

    def _on_model(self) -> None:
        try:
            net = self._net()
        except Exception as exc:  # a broken file: say so, keep the widget usable
            self._status.value = f"cannot load the model: {exc}"
            return
        cfg = net.model_config.instances
        self._fg.value, self._seed.value = cfg.foreground_threshold, cfg.seed_threshold
        self._seed_low.value = cfg.seed_low_threshold
        self._min_seed.value, self._growth.value = cfg.min_seed_size, cfg.max_growth
        self._min_size.value, self._keep.value, self._fill.value = cfg.min_size, cfg.keep_unseeded, cfg.fill_holes
        self._fill_from_image()

    def _on_image(self) -> None:
        """A new image: the built-in model of its dimensions (2-D/3-D) unless the chosen one fits."""
        layer = self._image.value
        if layer is not None:
            ndim = image_ndim(layer)
            default = REGISTRY.default_for(ndim)
            try:
                fits = self._net().config.ndim == ndim
            except Exception:
                fits = False
            if not fits and default is not None and default != self._model.value:
                self._model.value = default  # fills the rest through _on_model
                return
        self._fill_from_image()

    def _fill_from_image(self) -> None:
        """Axes, output and estimate for the chosen image and model."""
        layer = self._image.value
        if layer is None:
            self._update_estimate()
            return
        try:
            net = self._net()
        except Exception:
            return
        self._axes.value = guess_axes(layer, net.config.ndim)
        data = layer_data(layer)
        src = source_path(data)
        self._output.value = IN_MEMORY if isinstance(data, np.ndarray) else ZARR
        if src:
            self._out_path.value = Path(src).parent / f"{Path(src).name.split('.')[0]}_labels.zarr"
        self._update_estimate()

    def _on_output(self) -> None:
        zarr_out = self._output.value == ZARR
        self._out_path.visible = zarr_out
        self._overwrite.visible = zarr_out

    def instances(self) -> InstanceConfig:
        return InstanceConfig(foreground_threshold=float(self._fg.value), seed_threshold=float(self._seed.value),
                              seed_low_threshold=float(self._seed_low.value),
                              min_seed_size=int(self._min_seed.value), max_growth=int(self._growth.value),
                              min_size=int(self._min_size.value), keep_unseeded=bool(self._keep.value),
                              fill_holes=bool(self._fill.value))

    def _tile_shape(self, ndim: int):
        return "auto" if self._tile.value == 0 else (int(self._tile.value),) * ndim

    def _update_estimate(self, *_: Any) -> None:
        layer = self._image.value
        if layer is None:
            self._estimate.value = "choose an image layer"
            return
        try:
            net = self._net()
            inp = engine_input(layer, self._axes.value, net.config.ndim, net.config.in_channels,
                               int(self._channel.value))
            spatial = tuple(inp.data.shape[inp.axes.index(a)] for a in inp.out_axes[-net.config.ndim:])
            frames = int(np.prod([inp.data.shape[inp.axes.index(a)] for a in inp.out_axes[:-net.config.ndim]]))
            est = estimate_mod.estimate(spatial, frames, net, tile_shape=self._tile_shape(net.config.ndim),
                                     device=self._device.value, in_memory=self._output.value == IN_MEMORY,
                                     precision=self._precision.value, backend=self._backend.value)
        except Exception as exc:
            self._estimate.value = f"no estimate: {exc}"
            return
        self._flops = est.flops
        self._estimate.value = est.text()
        if est.result_bytes > LARGE_RESULT and self._output.value == IN_MEMORY:
            self._estimate.value += " That is a lot of memory: zarr output is recommended."

    # --- running ------------------------------------------------------------------------
    def run(self) -> None:
        """Start segmenting the chosen layer (in a worker thread)."""
        from napari.utils.notifications import show_error

        try:
            job = self._prepare()
        except Exception as exc:
            self._status.value = f"error: {exc}"
            show_error(f"Segment cells: {exc}")
            return
        layer, inp, gen = job
        self.events = []
        self._progress = RunProgress()
        self._started = time.perf_counter()
        self._run.enabled, self._cancel.enabled = False, True
        self._status.value = "running"
        self.worker = start_worker(
            gen, description=f"Segmenting {layer.name}", yielded=self._on_yield,
            returned=lambda labels: self._on_done(labels, layer, inp), finished=self._on_finished,
            fraction=self._progress, describe=lambda e: f"Segmenting {layer.name}: {_event_text(e)}",
            errored=self._on_error)

    def _prepare(self):
        layer = self._image.value
        if layer is None:
            raise ValueError("no image layer chosen; open an image first")
        net = self._net()
        inp = engine_input(layer, self._axes.value, net.config.ndim, net.config.in_channels,
                           int(self._channel.value))
        out = None
        if self._output.value == ZARR:
            path = self._out_path.value
            if not path or not str(path).strip() or Path(path) == Path("."):
                raise ValueError("zarr output needs a path: choose one under 'zarr path' (e.g. cells_labels.zarr)")
            out = Path(path)
        voxel = voxel_size_for(net.model_config.voxel_size, inp.voxel_size, net.model_config.diameter > 0)
        gen = segment_iter(inp.data, net, out=out, overwrite=bool(self._overwrite.value), axes=inp.axes,
                           instances=self.instances(), device=self._device.value,
                           precision=self._precision.value, backend=self._backend.value,
                           tile_shape=self._tile_shape(net.config.ndim), voxel_size=voxel,
                           diameter=check_diameter(self._diameter.value))
        return layer, inp, gen

    def cancel(self) -> None:
        """Stop after the current tile or block; nothing is added."""
        if self.worker is not None:
            self._status.value = "cancelling after the current tile or block"
            self.worker.quit()

    def _on_yield(self, event: Any) -> None:
        self.events.append(event)
        if self._run.enabled is False and not self._status.value.startswith(("done", "error", "cancel")):
            self._status.value = _event_text(event)

    def _on_error(self, exc: Exception) -> None:
        self._status.value = f"error: {exc}"

    def _on_done(self, labels: Any, layer: Any, inp) -> None:
        seconds = time.perf_counter() - self._started
        ran = "openvino" if any(getattr(e, "note", "").startswith("OpenVINO") for e in self.events) else "torch"
        estimate_mod.record_speed(self._device.value, self._flops, seconds, ran)
        name = f"{layer.name} labels"
        if not isinstance(labels, np.ndarray):  # the zarr output keeps the layer's voxel size
            spatial = SPATIAL[len(inp.voxel_size)]
            labels.attrs.update(scale_attrs(inp.out_axes, known_voxel_size(dict(zip(spatial, inp.voxel_size)))))
        self._viewer.add_labels(labels, name=name, scale=inp.scale, translate=inp.translate,
                                axis_labels=inp.axis_labels)
        self._viewer.reset_view()
        where = f"zarr {self._out_path.value}" if not isinstance(labels, np.ndarray) else "memory"
        cells = f"{int(labels.max())} cells, " if isinstance(labels, np.ndarray) else ""
        self._status.value = f"done: {cells}{seconds:.1f} s, labels in {where}"
        self._update_estimate()

    def _on_finished(self) -> None:
        if not self._status.value.startswith(("done", "error")):
            self._status.value = "cancelled"
        self._run.enabled, self._cancel.enabled = True, False
