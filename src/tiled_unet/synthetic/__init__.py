"""Generated nuclei for tests, samples and training."""

from .nuclei import NucleiConfig, nuclei, render_nuclei, sample
from .touching import touching_cells

__all__ = ["NucleiConfig", "nuclei", "render_nuclei", "sample", "touching_cells"]
