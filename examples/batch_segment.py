"""Segment a folder of TIFFs from a script: the model is loaded once, failures are reported per file.

Run as is: ``python examples/batch_segment.py [WORKDIR]``. It writes three crops of the
built-in synthetic sample as TIFFs to WORKDIR/images (default: a temporary folder),
segments them into WORKDIR/labels and prints a summary table.
"""

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import tifffile

import tiled_unet
from tiled_unet.batch import FileResult, format_summary, segment_files
from tiled_unet.synthetic import sample

work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tiled-unet-example-"))
images = work / "images"
images.mkdir(parents=True, exist_ok=True)
image, _ = sample("nuclei-2d")
for i, (y, x) in enumerate([(0, 0), (0, 128), (128, 0)]):
    tifffile.imwrite(images / f"field{i}.tif", image[y:y + 128, x:x + 128], imagej=True,
                     resolution=(1 / 0.5, 1 / 0.5), metadata={"axes": "YX", "unit": "um"})

model = "nuclei-2d" if "nuclei-2d" in tiled_unet.builtin_models() else "placeholder-2d"


def show(event):
    if isinstance(event, FileResult):
        print(f"{Path(event.input).name}: {event.status} {event.message}", file=sys.stderr)


results = segment_files([images], work / "labels", model, progress=show, device="auto")
print(format_summary(results))
(work / "labels" / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
sys.exit(0 if all(r.ok for r in results) else 1)
