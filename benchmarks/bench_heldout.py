"""AP@0.5 of models on more held-out synthetic images than the training script scores.

    python benchmarks/bench_heldout.py nuclei-3d OTHER.safetensors [--images 36] [--first-seed 20000]

The training script (``scripts/train_builtin_models.py``) tunes the instance parameters on 36
images and scores on 36 others (12 and 12 before, which proved too few). This renders
``--images`` further images of the model's recipe shape from the seeds ``--first-seed + i`` (far from
the training, tuning and test seeds), segments them with each model's stored instance parameters
and prints mean AP@0.5, merges and splits per model, and the spread of the mean (standard error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_builtin_models as script  # noqa: E402

from tiled_unet import load_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="built-in model names or .safetensors files (same recipe shape)")
    parser.add_argument("--images", type=int, default=36)
    parser.add_argument("--first-seed", type=int, default=20000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    nets = {name: load_model(name) for name in args.models}
    first = next(iter(nets.values()))
    recipe = dict(script.RECIPES[first.model_config.name], **first.model_config.training.get("recipe", {}))
    images, labels = script.images(recipe, args.images, args.first_seed)
    print(f"{args.images} images of {tuple(recipe['shape'])}, seeds {args.first_seed}+, device {args.device}")
    for name, net in nets.items():
        per_image = [script.score(net, [image], [truth], net.model_config.instances, args.device)
                     for image, truth in zip(images, labels)]
        ap = np.array([s["ap50"] for s in per_image])
        print(f"{name}: AP@0.5 {ap.mean():.3f} +- {ap.std(ddof=1) / np.sqrt(len(ap)):.3f} "
              f"(min {ap.min():.3f}), {sum(s['cells'] for s in per_image)} cells, "
              f"merges {sum(s['merges'] for s in per_image)}, splits {sum(s['splits'] for s in per_image)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
