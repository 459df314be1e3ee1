#!/usr/bin/env bash
# The package as a user gets it: builds the wheel, installs it (not editable) with the napari extra in
# a fresh venv, then checks the licence and manifest in it, `npe2 validate --imports`, the model list
# and a segment of the built-in sample.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" wheel -q --no-deps -w "$WORK/dist" "$REPO"
WHEEL=$(ls "$WORK"/dist/napari_tiled_unet-*.whl)
echo "check_wheel: built $(basename "$WHEEL")"
# torch pinned in the same command: an unpinned torch resolves to the multi-GB CUDA build
"$BIN/pip" install -q torch==2.13.0 "$WHEEL[napari]" pyqt6

cd "$WORK"  # away from the source tree: everything below uses the installed wheel
"$BIN/python" - "$REPO" <<'PY'
import sys
from importlib import metadata, resources
from pathlib import Path

import tiled_unet

repo = Path(sys.argv[1])
dist = metadata.distribution("napari-tiled-unet")
assert Path(tiled_unet.__file__).is_relative_to(Path(sys.prefix)), f"not the installed wheel: {tiled_unet.__file__}"
assert dist.metadata["License-Expression"] == "BSD-3-Clause", dist.metadata["License-Expression"]
licence = [f for f in dist.files if f.name == "LICENSE"]
assert licence and licence[0].read_text() == (repo / "LICENSE").read_text(), "LICENSE missing from the wheel"
shipped = resources.files("tiled_unet").joinpath("napari.yaml").read_bytes()
assert shipped == (repo / "napari.yaml").read_bytes(), "the wheel's napari.yaml differs from the top-level one"
print(f"check_wheel: {dist.version}: LICENSE, License-Expression and napari.yaml as in the repository")
PY
"$BIN/npe2" validate --imports napari-tiled-unet
"$BIN/tiled-unet" models
"$BIN/tiled-unet" segment --sample nuclei-2d -o nuclei-2d-labels.tif
"$BIN/python" -c "
import tifffile
cells = len(set(tifffile.imread('nuclei-2d-labels.tif').ravel()) - {0})
assert cells > 0, 'no cells in the sample'
print(f'check_wheel: {cells} cells in the sample')"
