"""The models the widgets offer: built-in ones plus model files chosen or trained in this session."""

from __future__ import annotations

import os
from pathlib import Path

from psygnal import Signal

from ..weights import builtin_models, load_model


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
        """(label, value) pairs: built-in names, then files."""
        return [(name, name) for name in builtin_models()] + [(f"{Path(p).name} (file)", p) for p in self.files]

    def load(self, name_or_path: str):
        """The model, loaded once per file version (a retrained file is loaded again)."""
        stamp = os.path.getmtime(name_or_path) if os.path.exists(name_or_path) else 0.0
        cached = self._cache.get(name_or_path)
        if cached is None or cached[0] != stamp:
            self._cache[name_or_path] = (stamp, load_model(name_or_path))
        return self._cache[name_or_path][1]


REGISTRY = ModelRegistry()
