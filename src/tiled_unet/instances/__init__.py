"""Probabilities to instance labels: in memory, blockwise (any size, exact across blocks)."""

from .blockwise import labels_blockwise
from .memory import instances_from_probabilities

__all__ = ["instances_from_probabilities", "labels_blockwise"]
