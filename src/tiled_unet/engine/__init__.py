"""Pixels to probabilities: geometry, the tile plan, devices, normalisation, resampling, prediction."""
