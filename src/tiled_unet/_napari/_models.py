"""The models the widgets offer: trained built-in ones plus model files chosen or trained in this session.

The untrained placeholders stay available to code (``tiled_unet.load_model("placeholder-2d")``),
not in the widgets' lists: a run with one gives no cells.
"""

from __future__ import annotations

import os
from pathlib import Path

from psygnal import Signal

from ..weights import BUILTIN, TRAINED, load_model

DEFAULT_MODELS = {2: "nuclei-2d", 3: "nuclei-3d"}


class ModelRegistry:
    """Model files known to the widgets; ``added`` tells open widgets about a new one."""

    added = Signal(str)

    def __init__(self) -> None:
        self.files: list[str] = []
        self._cache: dict[str, tuple[float, object]] = {}

    def add(self, path: str | os.PathLike) -> str:
        path = os.fspath(Path(path).resolve())
        if path not in self.files:
            self.files.append(path)
        self.added.emit(path)
        return path

    def choices(self, *_: object) -> list[tuple[str, str]]:
        """(label, value) pairs: the trained built-in models, then files."""
        builtin = [(name, name) for name in TRAINED if name in BUILTIN]
        return builtin + [(f"{Path(p).name} (file)", p) for p in self.files]

    def default_for(self, ndim: int) -> str | None:
        """The built-in model for ``ndim``-D images, if it ships."""
        name = DEFAULT_MODELS.get(ndim)
        return name if name in BUILTIN else None

    def load(self, name_or_path: str):
        """The model, loaded once per file version (a retrained file is loaded again)."""
        stamp = os.path.getmtime(name_or_path) if os.path.exists(name_or_path) else 0.0
        cached = self._cache.get(name_or_path)
        if cached is None or cached[0] != stamp:
            self._cache[name_or_path] = (stamp, load_model(name_or_path))
        return self._cache[name_or_path][1]


REGISTRY = ModelRegistry()
