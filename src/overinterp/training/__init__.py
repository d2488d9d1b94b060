"""How a model is trained and scored: one trainer (recipes ``paper`` and ``fast``,
exact resume), accuracy/confidence evaluation, and replicate training."""

from overinterp.training.evaluation import evaluate_accuracy, evaluate_datasets
from overinterp.training.trainer import RECIPES, TrainConfig, TrainResult, make_config, train_classifier

__all__ = [
    "RECIPES",
    "TrainConfig",
    "TrainResult",
    "make_config",
    "train_classifier",
    "evaluate_accuracy",
    "evaluate_datasets",
]
