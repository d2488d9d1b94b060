"""How a model is made: the architecture registry and ``create_model``, the
:class:`Classifier` wrapper (preprocessing + network + baseline), checkpoints,
ensembles, black-box (forward-only) adapters, third-party models and model files of
other toolchains (TorchScript, torch.export, ONNX, TFLite: :mod:`overinterp.models.formats`).

Registered architectures (``overinterp.list_models()``): ``smallcnn`` (tests,
demo), the CIFAR ResNets ``resnet20/32/44/56``, the pre-activation ``resnet18``,
``vgg16_bn``, the narrow ``vgg_small`` and the WideResNets; one module per
family under :mod:`overinterp.models.archs`.
"""

from overinterp.models.blackbox import BlackBoxClassifier, tflite_classifier
from overinterp.models.checkpoint import load_checkpoint_file, save_checkpoint
from overinterp.models.classifier import Classifier, Normalize, make_preprocessing
from overinterp.models.dropout import InputDropoutClassifier, pixel_dropout
from overinterp.models.ensemble import Ensemble, load_ensemble, save_ensemble
from overinterp.models.external import imagenet_classifier, robustbench_classifier, user_model
from overinterp.models.factory import create_model, load_model
from overinterp.models.formats import FORMATS, InputContract, detect_format, load_model_file
from overinterp.models.registry import list_models, register_model
from overinterp.models.spec import ModelSpec, load_model_spec, parse_model_spec

__all__ = [
    "InputDropoutClassifier",
    "pixel_dropout",
    "create_model",
    "load_model",
    "list_models",
    "register_model",
    "Classifier",
    "Normalize",
    "make_preprocessing",
    "Ensemble",
    "load_ensemble",
    "save_ensemble",
    "save_checkpoint",
    "load_checkpoint_file",
    "BlackBoxClassifier",
    "tflite_classifier",
    "imagenet_classifier",
    "robustbench_classifier",
    "user_model",
    "ModelSpec",
    "parse_model_spec",
    "load_model_spec",
    "load_model_file",
    "detect_format",
    "InputContract",
    "FORMATS",
]
