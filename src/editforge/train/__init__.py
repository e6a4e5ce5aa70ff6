"""LoRA training for the Qwen-Image families: `train(load_config("run.yaml"))`, or `editforge train run.yaml`."""

from editforge.train.config import Config, default_config, load_config
from editforge.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["Config", "TrainResult", "TrainingDiverged", "default_config", "load_config", "train"]
