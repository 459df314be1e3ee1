"""The napari plugin: widgets, reader, writer and sample data (the only package that imports napari/Qt).

napari asks which reader to use when two plugins can open a file (its built-in reader opens
every folder and TIFF too). When napari first uses one of this plugin's contributions, the
plugin becomes the reader for zarr folders and TIFF files in napari's settings, unless a reader
was already chosen for them (Preferences > Plugins > File extension readers changes it).
"""

from __future__ import annotations

import os
from typing import Any

PLUGIN = "napari-tiled-unet"
#: napari's reader-preference patterns: folders are matched with a trailing separator
READER_PATTERNS = (f"*.zarr{os.sep}", "*.tif", "*.tiff")


def activate(context: Any = None) -> None:
    """npe2 ``on_activate``: make this plugin napari's reader for zarr and TIFF."""
    prefer_plugin_reader()


def prefer_plugin_reader() -> dict[str, str]:
    """Set this plugin as the reader for :data:`READER_PATTERNS` where none is chosen; returns
    the patterns set (a reader already chosen for a pattern is kept)."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    added = {pattern: PLUGIN for pattern in READER_PATTERNS if pattern not in current}
    if added:
        plugins.extension2reader = {**current, **added}
    return added
