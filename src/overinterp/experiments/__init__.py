"""The paper's experiments as library functions; each appends to the results file."""

from overinterp.experiments.mitigation import input_dropout_mitigation
from overinterp.experiments.pixel_subsets import (
    compare_rankings,
    confidence_drop,
    ensemble_row,
    evaluate_subsets,
    make_subsets,
    retrain_on_subsets,
    subset_predictions,
    transfer,
)

__all__ = [
    "compare_rankings",
    "confidence_drop",
    "ensemble_row",
    "evaluate_subsets",
    "input_dropout_mitigation",
    "make_subsets",
    "retrain_on_subsets",
    "subset_predictions",
    "transfer",
]
