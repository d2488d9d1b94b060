"""Analyses of stored backward-selection traces (no recomputation).

Shared building blocks live here so every figure uses one implementation:
:mod:`.heatmaps` (pixel-location frequency maps), :mod:`.display` (showing
images and masked images right), :mod:`.style` (greyscale-safe series styles),
:mod:`.stats` (confidence intervals). The paper's analyses, one per module:
:mod:`.sis_size` (Figure 6), :mod:`.correctness` (Figures 5, S3),
:mod:`.subsets` (the model on its pixel subsets, Figure 2's confidences),
:mod:`.examples` (Figures 1, S1, S2), :mod:`.score` (an at-a-glance score),
:mod:`.panels` (Figures 3, S6).
"""

from overinterp.analysis.correctness import (
    CorrectnessComparison,
    compare_correct_incorrect,
    plot_group_confidence,
    plot_percent_increase,
)
from overinterp.analysis.display import MASK_STYLES, masked_images, sis_overlay, to_display
from overinterp.analysis.examples import pick_examples, plot_ensemble_sis, plot_sis_examples
from overinterp.analysis.heatmaps import location_frequency, plot_heatmap, plot_heatmap_grid, save_figure, save_heatmap
from overinterp.analysis.panels import plot_sis_panels, save_sis_panels
from overinterp.analysis.score import SCORE_THRESHOLD, ModelScore, find_result, model_score
from overinterp.analysis.sis_size import (
    DEFAULT_THRESHOLDS,
    SizeCurve,
    full_confidence,
    plot_sis_size_curves,
    sis_fraction_matrix,
    sis_fractions,
    sis_size_curve,
    trace_accuracy,
)
from overinterp.analysis.stats import DiffCI, MeanCI, mean_ci, t_quantile, welch_diff_ci
from overinterp.analysis.subsets import mask_with_baseline, subset_predictions

__all__ = [
    "MASK_STYLES",
    "masked_images",
    "sis_overlay",
    "to_display",
    "location_frequency",
    "plot_heatmap",
    "plot_heatmap_grid",
    "save_figure",
    "save_heatmap",
    "plot_sis_panels",
    "save_sis_panels",
    "CorrectnessComparison",
    "compare_correct_incorrect",
    "plot_group_confidence",
    "plot_percent_increase",
    "pick_examples",
    "plot_ensemble_sis",
    "plot_sis_examples",
    "SCORE_THRESHOLD",
    "ModelScore",
    "find_result",
    "model_score",
    "DEFAULT_THRESHOLDS",
    "SizeCurve",
    "full_confidence",
    "plot_sis_size_curves",
    "sis_fraction_matrix",
    "sis_fractions",
    "sis_size_curve",
    "trace_accuracy",
    "DiffCI",
    "MeanCI",
    "mean_ci",
    "t_quantile",
    "welch_diff_ci",
    "mask_with_baseline",
    "subset_predictions",
]
