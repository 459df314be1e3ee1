"""Sample data: the built-in synthetic touching nuclei, image plus ground-truth labels."""

from __future__ import annotations

from ..synthetic.nuclei import sample


def _layers(name: str, title: str) -> list[tuple]:
    image, labels = sample(name)
    return [(image, {"name": title, "colormap": "gray"}, "image"),
            (labels, {"name": f"{title} ground truth", "opacity": 0.5}, "labels")]


def sample_2d() -> list[tuple]:
    """256x256 synthetic fluorescent nuclei with touching clumps."""
    return _layers("nuclei-2d", "nuclei 2D")


def sample_3d() -> list[tuple]:
    """32x128x128 synthetic fluorescent nuclei with touching clumps."""
    return _layers("nuclei-3d", "nuclei 3D")
