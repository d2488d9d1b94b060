"""overinterp: is an image classifier right for the right reasons?

Sufficient input subsets (SIS) by backward selection, pixel-subset audits and
the experiments of Carter et al., "Overinterpretation reveals image
classification model pathologies" (NeurIPS 2021).
"""

__version__ = "0.1.0"

from .backselect import DEFAULT_BATCH_SIZE, SISCollection, backselect, sis_collection
from .classifier import Classifier, Normalize, make_preprocessing
from .features import patch_features, pixel_features
from .methods import Exact, Method
from .scoring import logit, target_logodds, target_probability
from .trace import TRACE_VERSION, BackselectTrace, SISResult

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
    "Method",
    "patch_features",
    "pixel_features",
    "logit",
    "target_logodds",
    "target_probability",
]
