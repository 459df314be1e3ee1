"""Training: targets, the weighted loss, augmentation, datasets, the loop, checkpoints."""

from .config import TrainConfig, TrainProgress
from .loop import new_model, train, train_iter

__all__ = ["TrainConfig", "TrainProgress", "new_model", "train", "train_iter"]
