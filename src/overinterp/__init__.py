"""overinterp: is an image classifier right for the right reasons?

Sufficient input subsets (SIS) by backward selection, pixel-subset audits and
the experiments of Carter et al., "Overinterpretation reveals image
classification model pathologies" (NeurIPS 2021).

The top level offers the SIS core (``backselect``, traces, methods, feature
maps, scores), models and datasets. Training is in :mod:`overinterp.training`,
the paper's experiments in :mod:`overinterp.experiments`, analyses and the
report in :mod:`overinterp.analysis` / :mod:`overinterp.report`, dataset jobs in
:mod:`overinterp.jobs`, the results file in :mod:`overinterp.results`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

from overinterp.data import LabeledImages, load_dataset
from overinterp.models import (
    BlackBoxClassifier,
    Classifier,
    Ensemble,
    InputDropoutClassifier,
    Normalize,
    create_model,
    imagenet_classifier,
    list_models,
    load_ensemble,
    load_model,
    load_model_file,
    make_preprocessing,
    register_model,
    robustbench_classifier,
    save_checkpoint,
    save_ensemble,
    tflite_classifier,
    user_model,
)
from overinterp.sis import (
    DEFAULT_BATCH_SIZE,
    TRACE_VERSION,
    Adaptive,
    BackselectTrace,
    BatchedGradient,
    Exact,
    Fast,
    GradientsUnavailableError,
    KStep,
    Method,
    Screened,
    SISCollection,
    SISResult,
    backselect,
    find_sis_relative,
    logit,
    make_method,
    patch_features,
    pixel_features,
    relative_thresholds,
    sis_collection,
    superpixel_features,
    target_logodds,
    target_probability,
)

__all__ = [
    "__version__",
    # SIS core
    "backselect",
    "sis_collection",
    "SISCollection",
    "DEFAULT_BATCH_SIZE",
    "BackselectTrace",
    "SISResult",
    "TRACE_VERSION",
    "find_sis_relative",
    "relative_thresholds",
    # methods
    "Method",
    "Exact",
    "Fast",
    "BatchedGradient",
    "GradientsUnavailableError",
    "KStep",
    "Adaptive",
    "Screened",
    "make_method",
    # features and scores
    "patch_features",
    "pixel_features",
    "superpixel_features",
    "logit",
    "target_logodds",
    "target_probability",
    # models
    "Classifier",
    "Normalize",
    "make_preprocessing",
    "create_model",
    "list_models",
    "register_model",
    "load_model",
    "load_model_file",
    "save_checkpoint",
    "Ensemble",
    "InputDropoutClassifier",
    "load_ensemble",
    "save_ensemble",
    "BlackBoxClassifier",
    "tflite_classifier",
    "imagenet_classifier",
    "robustbench_classifier",
    "user_model",
    # datasets
    "LabeledImages",
    "load_dataset",
    # imported on first use
    "BackselectAttribution",
    "rank_map",
    "audit",
    "AuditResult",
    "run_audit",
]

#: Public names imported on first use (Captum's import takes about a second).
_LAZY: dict[str, str] = {
    "BackselectAttribution": "overinterp.sis.captum",
    "rank_map": "overinterp.sis.captum",
    "audit": "overinterp.report.audit",
    "AuditResult": "overinterp.experiments.audit",
    "run_audit": "overinterp.experiments.audit",
}


def __getattr__(name: str) -> Any:
    """Public names imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'overinterp' has no attribute {name!r}")
