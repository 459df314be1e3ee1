"""napari-tiled-unet: U-Net cell segmentation with exact overlap-tile inference on large images."""

from ._version import __version__
from .config import (
                     InferenceConfig,
                     InstanceConfig,
                     ModelConfig,
                     NormalizationConfig,
                     TileProgress,
                     UNetConfig,
)
from .engine.predict import ScalePlan, predict, predict_iter, scale_plan
from .model import UNet
from .pipeline import LabelProgress, segment, segment_iter
from .training.config import TrainConfig
from .training.loop import train
from .weights import builtin_models, load_model, save_model

__all__ = [
    "InferenceConfig", "InstanceConfig", "LabelProgress", "ModelConfig", "NormalizationConfig",
    "TileProgress", "TrainConfig", "UNet", "UNetConfig", "__version__", "builtin_models", "load_model", "predict",
    "predict_iter", "save_model", "ScalePlan", "scale_plan", "segment", "segment_iter", "train",
]
