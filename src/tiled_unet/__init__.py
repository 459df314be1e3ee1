"""napari-tiled-unet: U-Net cell segmentation with exact overlap-tile inference on large images."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("napari-tiled-unet")  # from the git tag at install (setuptools-scm)
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

from .config import (InferenceConfig, InstanceConfig, ModelConfig, NormalizationConfig, TileProgress,
                     UNetConfig)
from .model import UNet
from .predict import ScalePlan, predict, predict_iter, scale_plan
from .segment import LabelProgress, segment, segment_iter
from .weights import builtin_models, load_model, save_model

__all__ = [
    "InferenceConfig", "InstanceConfig", "LabelProgress", "ModelConfig", "NormalizationConfig",
    "TileProgress", "UNet", "UNetConfig", "__version__", "builtin_models", "load_model", "predict",
    "predict_iter", "save_model", "ScalePlan", "scale_plan", "segment", "segment_iter",
]
