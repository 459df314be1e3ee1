"""napari-tiled-unet: U-Net cell segmentation with exact overlap-tile inference on large images."""

import os as _os
import sys as _sys

if _sys.platform.startswith("linux"):
    # PyTorch backs its large CPU buffers (2 MiB and more) with transparent huge pages when
    # THP_MEM_ALLOC_ENABLE is set before its first allocation in the process; on 4 KiB pages a
    # 2048 x 2048 forward pass spends about a third of its time in page faults
    # (docs/benchmarks.md). A value the user set (0 turns it off) is kept.
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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
