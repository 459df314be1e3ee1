"""Fine-tuning as a user would: ``tiled-unet train --init`` on one crop of a real frame, then scored.

    python benchmarks/bench_finetune.py [--init nuclei-2d] [--frame 0] [--crop 512] [--out DIR]
                                        [--frames 10-19]
                                        [-- extra options for tiled-unet train]

Writes a ``--crop`` square of HeLa frame ``--frame`` (0-9 only; a crop of the frame's centre)
and its reference labels as TIFF files, runs the ``tiled-unet train`` command line with its
defaults (plus anything after ``--``) from ``--init``, prints the wall time of the training, then
scores the starting model and the fine-tuned one with ``benchmarks/bench_real.py`` on frames 10-19
(the reported figures; ``--frames 1-9`` scores tuning frames instead, for trials).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import tifffile

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_real import frames_arg, load  # noqa: E402
from bench_real import main as bench_real  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", default="nuclei-2d")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--frames", default="10-19", help="frames scored (10-19: the reported figures)")
    parser.add_argument("--out", type=Path, default=ROOT / "_data" / "finetune")
    args = parser.parse_args(argv)
    if not 0 <= args.frame <= 9:
        parser.error("train on frames 0-9; frames 10-19 are for reporting only")
    if args.frame in frames_arg(args.frames):
        parser.error(f"--frames {args.frames} holds the training frame {args.frame}: score other frames")
    (image,), (labels,), _ = load("hela", [args.frame])
    y0, x0 = (image.shape[0] - args.crop) // 2, (image.shape[1] - args.crop) // 2
    window = (slice(max(y0, 0), max(y0, 0) + args.crop), slice(max(x0, 0), max(x0, 0) + args.crop))
    args.out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.out / "image.tif", image[window])
    tifffile.imwrite(args.out / "labels.tif", labels[window])
    model = args.out / "finetuned.safetensors"
    command = ["tiled-unet", "train", "--init", args.init, "--images", str(args.out / "image.tif"),
               "--labels", str(args.out / "labels.tif"), "-o", str(model), "--overwrite", *extra]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tiled_unet.cli.main", *command[1:]], check=True)
    print(f"training: {(time.perf_counter() - start) / 60:.1f} min on crop {window} of frame {args.frame} "
          f"({labels[window].max()} label values)", flush=True)
    return bench_real([args.init, str(model), "--frames", args.frames])


if __name__ == "__main__":
    sys.exit(main())
