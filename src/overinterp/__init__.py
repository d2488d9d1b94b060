"""overinterp: is an image classifier right for the right reasons?

Sufficient input subsets (SIS) by backward selection, pixel-subset audits and
the experiments of Carter et al., "Overinterpretation reveals image
classification model pathologies" (NeurIPS 2021).
"""

__version__ = "0.1.0"

from .backselect import DEFAULT_BATCH_SIZE, SISCollection, backselect, sis_collection
from .classifier import Classifier, Normalize, make_preprocessing
from .features import patch_features, pixel_features
from .methods import Adaptive, BatchedGradient, Exact, KStep, Method, Screened
from .scoring import logit, target_logodds, target_probability
from .trace import TRACE_VERSION, BackselectTrace, SISResult
from .data import LabeledImages, load_dataset
from .evaluation import evaluate_accuracy, evaluate_datasets
from .models import (
    Ensemble,
    create_model,
    list_models,
    load_ensemble,
    load_model,
    register_model,
    save_checkpoint,
    save_ensemble,
)
from .results import append_results, model_fingerprint, read_results, render_table
from .trainer import RECIPES, TrainConfig, make_config, train_classifier
from .blackbox import BlackBoxClassifier, tflite_classifier
from .relative import find_sis_relative, relative_thresholds
from .superpixels import superpixel_features
from .models.external import imagenet_classifier, robustbench_classifier, user_model
from .data.imagenet import load_imagenet_val, open_imagenet_val
from .imagenet_sis import ImageNetSISConfig, run_imagenet_sis
from .robust_sis import load_model_spec, run_robust_sis

__all__ = [
    "__version__",
    "backselect",
    "sis_collection",
    "SISCollection",
    "DEFAULT_BATCH_SIZE",
    "BackselectTrace",
    "SISResult",
    "TRACE_VERSION",
    "Classifier",
    "Normalize",
    "make_preprocessing",
    "Exact",
    "BatchedGradient",
    "KStep",
    "Adaptive",
    "Screened",
    "Method",
    "patch_features",
    "pixel_features",
    "logit",
    "target_logodds",
    "target_probability",
    "create_model",
    "list_models",
    "register_model",
    "load_model",
    "save_checkpoint",
    "Ensemble",
    "load_ensemble",
    "save_ensemble",
    "LabeledImages",
    "load_dataset",
    "evaluate_accuracy",
    "evaluate_datasets",
    "append_results",
    "read_results",
    "render_table",
    "model_fingerprint",
    "TrainConfig",
    "RECIPES",
    "make_config",
    "train_classifier",
    "BlackBoxClassifier",
    "tflite_classifier",
    "find_sis_relative",
    "relative_thresholds",
    "superpixel_features",
    "imagenet_classifier",
    "robustbench_classifier",
    "user_model",
    "open_imagenet_val",
    "load_imagenet_val",
    "ImageNetSISConfig",
    "run_imagenet_sis",
    "load_model_spec",
    "run_robust_sis",
]
