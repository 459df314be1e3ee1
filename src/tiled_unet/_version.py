"""The installed version (from the git tag at install, setuptools-scm)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("napari-tiled-unet")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
