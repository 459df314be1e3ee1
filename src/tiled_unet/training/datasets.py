"""Training data: image + instance label pairs prepared once, then random patches.

Each pair becomes a normalised image ``(C, *spatial)``, uint8 targets (background /
interior / boundary, 255 = ignore) and the U-Net weight map. Patches have the
network's valid input shape; the targets and weights are cropped to its output.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import ModelConfig
from ..engine import normalize
from ..engine.tiling import UNetGeometry, mirror_index
from ..io.arrays import open_image
from .augment import augment
from .loss import weight_map
from .targets import IGNORE, check_labels, targets_for

#: most threads :func:`prepare_all` uses by default
PREPARE_THREADS = 8


@dataclass
class Example:
    """One prepared training image."""

    image: np.ndarray          # (C, *spatial) float32, normalised
    labels: np.ndarray         # instance labels, 0 = background (ignored pixels: 0)
    targets: np.ndarray        # uint8 classes, 255 = ignore
    weights: np.ndarray        # float32 U-Net weight map (0 where ignored)
    foreground: np.ndarray     # (n, ndim) coordinates of annotated cell pixels (subsampled)
    raw: np.ndarray            # the image as given, channels first, for validation by predict


def load_pair(image: Any, labels: Any, ndim: int, in_channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(C, *spatial)`` and labels ``spatial`` as numpy arrays, with clear errors."""
    img = np.asarray(open_image(image)[...])
    lab = np.asarray(open_image(labels)[...])
    if img.dtype.kind not in "uif" and img.dtype != bool:
        raise ValueError(f"{where}: the image must be numeric, got dtype {img.dtype}")
    if img.ndim == ndim:
        img = img[None]
    elif img.ndim != ndim + 1:
        raise ValueError(f"{where}: expected a {ndim}-D image (or channels first, {ndim + 1}-D) for a "
                         f"{ndim}-D model, got shape {img.shape}")
    if img.shape[0] != in_channels:
        raise ValueError(f"{where}: the model takes {in_channels} channel(s), the image has {img.shape[0]} "
                         f"(shape {img.shape}; channels go first)")
    if lab.shape != img.shape[1:]:
        raise ValueError(f"{where}: labels have shape {lab.shape}, the image's spatial shape is {img.shape[1:]}")
    if min(lab.shape) < 1:
        raise ValueError(f"{where}: empty image of shape {img.shape}")
    return img, check_labels(lab, f"{where}: labels")


def prepare(image: np.ndarray, labels: np.ndarray, model: ModelConfig, *, w0: float, sigma: float,
            boundary_width: int, ignore_label: int | None, spacing: Sequence[float] | None,
            rng: np.random.Generator) -> Example:
    """Normalise, make targets and the weight map of one image/labels pair."""
    arrays = _prepared_arrays(image, labels, model, w0=w0, sigma=sigma, boundary_width=boundary_width,
                              ignore_label=ignore_label, spacing=spacing)
    return _example(image, arrays, rng)


def prepare_all(pairs: Sequence[tuple[np.ndarray, np.ndarray]], model: ModelConfig, *, rng: np.random.Generator,
                threads: int | None = None, **options: Any) -> list[Example]:
    """:func:`prepare` of every ``(image, labels)`` pair, in order, with the same result and ``rng`` use.

    The targets, weight maps and normalisation (numpy/scipy work that releases the GIL) run in
    ``threads`` threads (default: the CPUs this process may use, at most ``PREPARE_THREADS``, as
    each thread holds the temporaries of one image); only the draw of foreground coordinates,
    which uses ``rng``, runs in the calling thread, pair after pair.
    """
    threads = min(usable_cpus(), PREPARE_THREADS) if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")

    def arrays(pair):
        return _prepared_arrays(pair[0], pair[1], model, **options)

    with ThreadPoolExecutor(max(1, min(threads, len(pairs)))) as pool:
        return [_example(pair[0], result, rng) for pair, result in zip(pairs, pool.map(arrays, pairs))]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells it, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _prepared_arrays(image: np.ndarray, labels: np.ndarray, model: ModelConfig, *, w0: float, sigma: float,
                     boundary_width: int, ignore_label: int | None, spacing: Sequence[float] | None) -> tuple:
    """Normalised image, labels without ignored pixels, targets and weights (no randomness)."""

    ignore = labels == ignore_label if ignore_label is not None else None
    clean = np.where(ignore, 0, labels) if ignore is not None else labels
    targets = targets_for(model.class_names, clean, boundary_width, ignore)
    weights = weight_map(clean, targets, model.unet.num_classes, w0=w0, sigma=sigma, spacing=spacing)
    normalize.check_finite(image, "in a training image")
    offset, scale = normalize.intensity_range(lambda s: image[(slice(None),) + s], image.shape[1:],
                                              model.normalization)
    return normalize.apply(image, offset, scale), clean, targets, weights.astype(np.float32)


def _example(image: np.ndarray, arrays: tuple, rng: np.random.Generator) -> Example:
    """The :class:`Example` with its foreground coordinates (at most 100,000, drawn with ``rng``)."""
    normalised, clean, targets, weights = arrays
    coords = np.argwhere((clean > 0) & (targets != IGNORE))
    if len(coords) > 100_000:
        coords = coords[rng.choice(len(coords), 100_000, replace=False)]
    return Example(normalised, clean, targets, weights, coords, image)


def patch_shapes(geometry: UNetGeometry, output_patch: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Network input shape and the output shape it yields for a wanted output patch."""
    inputs = tuple(geometry.input_size_for_output(int(m)) for m in output_patch)
    if geometry.padding == "same":
        return inputs, inputs
    return inputs, geometry.output_shape(inputs)


def _region(array: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+shape]`` over the last axes, mirrored beyond the borders."""
    lead = array.ndim - len(shape)
    out = array
    for axis, (s, n) in enumerate(zip(start, shape)):
        index = mirror_index(np.arange(s, s + n), array.shape[lead + axis])
        out = np.take(out, index, axis=lead + axis)
    return out


def output_crop(input_shape: Sequence[int], output_shape: Sequence[int]) -> tuple[slice, ...]:
    """Slices of a patch's network output inside its (centred, larger) input."""
    return tuple(slice((i - o) // 2, (i - o) // 2 + o) for i, o in zip(input_shape, output_shape))


def patch_start(example: Example, input_shape: Sequence[int], foreground_fraction: float,
                rng: np.random.Generator) -> np.ndarray:
    """The first input pixel of a random patch whose output centre is a cell pixel with probability
    ``foreground_fraction``, else any pixel (the input adds context around it)."""
    if len(example.foreground) and rng.random() < foreground_fraction:
        centre = example.foreground[rng.integers(len(example.foreground))]
    else:
        centre = np.array([rng.integers(n) for n in example.targets.shape])
    return np.asarray(centre, np.int64) - np.asarray(input_shape) // 2


def sample_patch(example: Example, input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                 foreground_fraction: float, rng: np.random.Generator, augment_config: Any = None):
    """One random ``(image, targets, weights)`` patch; centred on a cell pixel with the given probability."""
    start = [int(s) for s in patch_start(example, input_shape, foreground_fraction, rng)]
    image = _region(example.image, start, input_shape)
    targets = _region(example.targets, start, input_shape)
    weights = _region(example.weights, start, input_shape)
    crop = output_crop(input_shape, output_shape)
    if augment_config is not None:  # targets and weights are needed (and resampled) only on the output

        image, (targets,), (weights,) = augment(image, labels=(targets,), floats=(weights,),
                                                config=augment_config, rng=rng, companion_region=crop)
    else:
        targets, weights = targets[crop], weights[crop]
    return (np.ascontiguousarray(image, np.float32), np.ascontiguousarray(targets),
            np.ascontiguousarray(weights, np.float32))


@dataclass(frozen=True)
class _PatchSampler:
    """Draws the patch of one example from one seed (picklable, for worker processes)."""

    examples: Sequence[Example]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    foreground_fraction: float
    augment_config: Any

    def __call__(self, index: int, rng: np.random.Generator | int):
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return sample_patch(self.examples[index], self.input_shape, self.output_shape, self.foreground_fraction,
                            rng, self.augment_config)


_PROCESS_SAMPLER: _PatchSampler | None = None
_NOTHING = np.zeros(0, np.uint8)
#: the arrays that patches are cut from (labels and raw images stay with the caller, for validation)
_SHARED_FIELDS = ("image", "targets", "weights", "foreground")


def _share_examples(examples: Sequence[Example], folder: str) -> list[dict[str, str]]:
    """Write the arrays patches are cut from to ``.npy`` files in ``folder``, for memory-mapping."""
    files = []
    for k, example in enumerate(examples):
        paths = {}
        for name in _SHARED_FIELDS:
            paths[name] = os.path.join(folder, f"{k}-{name}.npy")
            np.save(paths[name], getattr(example, name))
        files.append(paths)
    return files


def _start_process(files: list[dict[str, str]], sampler: _PatchSampler) -> None:
    """Worker start: the examples memory-mapped read-only from the shared files (one copy in the page cache)."""
    global _PROCESS_SAMPLER
    examples = [Example(**{name: np.load(path, mmap_mode="r") for name, path in paths.items()},
                        labels=_NOTHING, raw=_NOTHING) for paths in files]
    _PROCESS_SAMPLER = dataclasses.replace(sampler, examples=examples)


def _sample_in_process(index: int, seed: int):
    return _PROCESS_SAMPLER(index, seed)


WORKER_TYPES = ("threads", "processes")


class PatchStream:
    """Training batches of random patches, sampled and augmented by ``workers`` ahead of use.

    ``workers=0`` draws every patch in the caller's thread from ``rng``. With ``workers >= 1`` the
    epoch's examples and per-patch seeds are drawn from ``rng`` when the epoch starts, so the patches
    are the same for any number and type of workers (but not those of ``workers=0``), and ``rng``
    ends each epoch in the same state (checkpoints resume exactly). ``worker_type``: ``"threads"``
    (no start-up cost; scipy's interpolation runs in parallel, the rest holds the GIL) or
    ``"processes"`` (spawned, each with its own GIL; they memory-map the training data from ``.npy``
    files in a temporary folder, removed by :meth:`close`).
    """

    def __init__(self, examples: Sequence[Example], input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                 foreground_fraction: float, augment_config: Any, rng: np.random.Generator, workers: int = 0,
                 worker_type: str = "threads"):
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be 'threads' or 'processes', got {worker_type!r}")
        self._rng, self._workers, self._pool, self._shared = rng, workers, None, None
        self._sample = _PatchSampler(list(examples), tuple(input_shape), tuple(output_shape), foreground_fraction,
                                     augment_config)
        self._task = self._sample
        if workers and worker_type == "threads":
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tiled-unet-patches")
        elif workers:
            # the data go to the processes as files they memory-map, not as a pickled copy for each
            self._shared = tempfile.TemporaryDirectory(prefix="tiled-unet-patches-")
            files = _share_examples(self._sample.examples, self._shared.name)
            # spawn, not fork: the caller may hold CUDA, threads and locks (napari, torch)
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_process,
                                             initargs=(files, dataclasses.replace(self._sample, examples=[])))
            self._task = _sample_in_process

    def epoch(self, steps: int, batch_size: int):
        """Yield ``steps`` batches, each a list of ``batch_size`` ``(image, targets, weights)`` patches."""
        count = len(self._sample.examples)
        if self._pool is None:
            for _ in range(steps):
                yield [self._sample(self._rng.integers(count), self._rng) for _ in range(batch_size)]
            return
        total = steps * batch_size
        which = self._rng.integers(count, size=total)
        seeds = self._rng.integers(2**63, size=total)
        jobs = iter(range(total))
        pending: list = []

        def submit(n: int) -> None:
            for k in itertools.islice(jobs, n):
                pending.append(self._pool.submit(self._task, int(which[k]), int(seeds[k])))

        submit(batch_size * 2 + self._workers)  # one batch in use, one and the workers' share ahead
        try:
            for _ in range(steps):
                batch = [pending.pop(0).result() for _ in range(batch_size)]
                submit(batch_size)
                yield batch
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the workers and remove the shared data files (if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._shared is not None:
            self._shared.cleanup()


def split_validation(pairs: list[tuple[np.ndarray, np.ndarray]], fraction: float
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Whole images for validation when there are several, else the last part of the one image
    along its longest axis."""
    if fraction <= 0:
        return pairs, []
    if len(pairs) >= 2:
        n_val = max(1, int(round(len(pairs) * fraction)))
        n_val = min(n_val, len(pairs) - 1)
        return pairs[:-n_val], pairs[-n_val:]
    image, labels = pairs[0]
    axis = int(np.argmax(labels.shape))
    cut = int(round(labels.shape[axis] * (1 - fraction)))
    if cut < 8 or labels.shape[axis] - cut < 8:
        return pairs, []
    index = [slice(None)] * labels.ndim
    index[axis] = slice(None, cut)
    head = tuple(index)
    index[axis] = slice(cut, None)
    tail = tuple(index)
    return ([(image[(slice(None),) + head], labels[head])],
            [(image[(slice(None),) + tail], labels[tail])])


def pair_paths(images: str | os.PathLike, labels: str | os.PathLike) -> list[tuple[str, str]]:
    """Image and label files paired by name from two folders (or two single files)."""
    images, labels = Path(images), Path(labels)
    if not images.is_dir():
        return [(str(images), str(labels))]
    if not labels.is_dir():
        raise ValueError(f"images is a folder ({images}) but labels is not ({labels}); give two folders "
                         f"with files of the same names")
    suffixes = (".tif", ".tiff", ".zarr")
    found = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in suffixes}
    masks = {p.stem: p for p in sorted(labels.iterdir()) if p.suffix.lower() in suffixes}
    missing = sorted(set(found) - set(masks))
    if missing:
        raise ValueError(f"no labels in {labels} for the images {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                         f"; label files must have the same names as their images")
    if not found:
        raise ValueError(f"no TIFF or zarr images in {images}")
    return [(str(found[k]), str(masks[k])) for k in sorted(found)]
