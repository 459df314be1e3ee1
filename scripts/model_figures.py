"""Figures of the built-in models for the README: image | labels, on the sample and on held-out data.

    python scripts/model_figures.py            # writes docs/images/nuclei-2d.png and nuclei-3d.png

Each figure has one row per data set: the built-in sample (``tiled_unet.synthetic.sample``, also
the napari sample data) and the first held-out test image of the training script (seeds the
training never saw). Left: the image (1st-99.8th percentile); right: the predicted instance labels
in random colours over the image, with the AP@0.5 against the true labels in the title line
printed to the terminal. 3D volumes show their middle plane.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_builtin_models import RECIPES, TEST_SEED  # noqa: E402

import tiled_unet  # noqa: E402
from tiled_unet.metrics import match  # noqa: E402
from tiled_unet.synthetic import render_nuclei, sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 image as PNG (no imaging library needed)."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
                     + chunk(b"IEND", b""))


def grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1, 99.8))
    return np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels in random colours (alpha 0.5) over the grey image, cell borders opaque."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.25, 1.0, (int(labels.max()) + 1, 3))
    colours[0] = 0
    base = np.repeat(grey(image)[..., None], 3, axis=2)
    cells = labels > 0
    out = base.copy()
    out[cells] = 0.5 * base[cells] + 0.5 * colours[labels[cells]]
    border = np.zeros_like(cells)
    for axis in (0, 1):
        diff = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 2
        lo[axis] = slice(0, -1)
        border[tuple(lo)] |= diff
    border &= cells
    out[border] = colours[labels[border]]
    return out


def panel(image: np.ndarray, labels: np.ndarray, scale: int) -> np.ndarray:
    row = np.concatenate([np.repeat(grey(image)[..., None], 3, axis=2), np.ones((image.shape[0], 4, 3)),
                          overlay(image, labels)], axis=1)
    return np.kron(row, np.ones((scale, scale, 1)))


def figure(name: str, out: Path) -> None:
    net = tiled_unet.load_model(name)
    recipe = RECIPES[name]
    held_image, held_labels = render_nuclei(recipe["shape"], rng=TEST_SEED)
    rows = []
    for title, (image, truth) in (("sample", sample(name)), ("held-out", (held_image, held_labels))):
        labels = np.asarray(tiled_unet.segment(image, net, device="cpu"))
        stats = match(labels, truth, 0.5)
        print(f"{name} {title}: {int(truth.max())} true cells, {int(labels.max())} found, AP@0.5 {stats.ap:.3f}, "
              f"merges {stats.merges}, splits {stats.splits}")
        if image.ndim == 3:
            middle = image.shape[0] // 2
            image, labels = image[middle], labels[middle]
        scale = max(1, 384 // image.shape[0])
        rows.append(panel(image, labels, scale))
        rows.append(np.ones((6, rows[-1].shape[1], 3)))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1) for r in rows[:-1]]
    write_png(out, (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8))
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("nuclei-2d", "nuclei-3d"):
        if name in tiled_unet.builtin_models():
            figure(name, args.out / f"{name}.png")
        else:
            print(f"{name}: not trained yet (python scripts/train_builtin_models.py {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
