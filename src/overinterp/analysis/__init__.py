"""Analyses of stored backward-selection traces (no recomputation).

Shared building blocks live here so every figure uses one implementation:
:mod:`.heatmaps` (pixel-location frequency maps) and :mod:`.display` (showing
images and masked images right).
"""

from .display import MASK_STYLES, masked_images, sis_overlay, to_display
from .heatmaps import location_frequency, plot_heatmap, save_figure, save_heatmap

__all__ = [
    "MASK_STYLES",
    "masked_images",
    "sis_overlay",
    "to_display",
    "location_frequency",
    "plot_heatmap",
    "save_figure",
    "save_heatmap",
]
