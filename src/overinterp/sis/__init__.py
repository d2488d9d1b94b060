"""Where backward selection lives: ``backselect`` → :class:`BackselectTrace`
(FindSIS, keep masks, re-verification), the SIS collection, feature maps and
superpixels, the target log-odds score, relative thresholds, and
:mod:`overinterp.sis.methods` (one module per method behind one engine)."""

from overinterp.sis.backselect import DEFAULT_BATCH_SIZE, SISCollection, backselect, sis_collection
from overinterp.sis.features import FeatureMap, patch_features, pixel_features
from overinterp.sis.methods import (
    Adaptive,
    BatchedGradient,
    Exact,
    Fast,
    GradientsUnavailableError,
    KStep,
    Method,
    Screened,
    make_method,
    method_from_description,
)
from overinterp.sis.relative import find_sis_relative, relative_thresholds
from overinterp.sis.scoring import logit, target_logodds, target_probability
from overinterp.sis.superpixels import superpixel_features
from overinterp.sis.trace import TRACE_VERSION, BackselectTrace, SISResult, concat_traces

__all__ = [
    "backselect",
    "GradientsUnavailableError",
    "sis_collection",
    "SISCollection",
    "DEFAULT_BATCH_SIZE",
    "BackselectTrace",
    "SISResult",
    "TRACE_VERSION",
    "concat_traces",
    "FeatureMap",
    "patch_features",
    "pixel_features",
    "superpixel_features",
    "Method",
    "Exact",
    "Fast",
    "BatchedGradient",
    "KStep",
    "Adaptive",
    "Screened",
    "make_method",
    "method_from_description",
    "find_sis_relative",
    "relative_thresholds",
    "logit",
    "target_logodds",
    "target_probability",
]
