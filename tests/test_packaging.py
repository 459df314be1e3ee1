"""What the napari hub reads: the top-level napari.yaml is the manifest the package ships."""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_manifest_is_the_shipped_one():
    shipped = resources.files("tiled_unet").joinpath("napari.yaml").read_bytes()
    top_level = (ROOT / "napari.yaml").read_bytes()
    assert top_level == shipped, ("napari.yaml must be the symlink to src/tiled_unet/napari.yaml "
                                  "(on Windows: git config core.symlinks true, then check it out again)")


def test_manifest_entry_point_names_the_shipped_file():
    (entry,) = [e for e in metadata.entry_points(group="napari.manifest") if e.name == "napari-tiled-unet"]
    assert entry.value == "tiled_unet:napari.yaml"
