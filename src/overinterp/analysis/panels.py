"""SIS panel figures (paper Figures 3 and S6): per image, the image, where its SIS
lies (red on a light grey copy) and the image with everything outside the SIS
masked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from overinterp.analysis.display import masked_images, sis_overlay, to_display
from overinterp.analysis.heatmaps import save_figure
from overinterp.analysis.style import pyplot

__all__ = ["plot_sis_panels", "save_sis_panels"]

_COLUMNS = ("image", "SIS location", "SIS only")


def plot_sis_panels(
    images: Tensor,
    keep: Tensor,
    titles: Sequence[str] | None = None,
    *,
    mask_style: str = "grey",
    baseline: Tensor | None = None,
    panel_size: float = 1.8,
) -> Any:
    """A figure with one row per image and three columns: image, SIS location, SIS only.

    Args:
        images: ``(N, C, H, W)`` pixels (uint8 or float in [0, 1]).
        keep: ``(N, 1, H, W)`` or ``(N, H, W)`` bool, True = in the SIS.
        titles: one label per row (e.g. class, confidence, SIS size), shown above its first panel.
        mask_style: how masked pixels are drawn (see :func:`~overinterp.analysis.masked_images`).
        baseline: needed for ``mask_style="baseline"``.
    Returns:
        the matplotlib figure.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to draw")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    k = keep.unsqueeze(1) if keep.dim() == 3 else keep
    shown = to_display(images)
    located = sis_overlay(images, k)
    masked = masked_images(images, k, mask_style, baseline)
    plt = pyplot()
    fig, axes = plt.subplots(n, 3, figsize=(3 * panel_size, n * panel_size + 0.3), squeeze=False)
    for i in range(n):
        for j, panel in enumerate((shown[i], located[i], masked[i])):
            ax = axes[i][j]
            img = panel.permute(1, 2, 0).numpy()
            ax.imshow(
                img[..., 0] if img.shape[-1] == 1 else img,
                cmap="gray" if img.shape[-1] == 1 else None,
                interpolation="nearest",
                vmin=0,
                vmax=1,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_COLUMNS[j], fontsize=8)
        if titles is not None:
            axes[i][0].set_ylabel(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def save_sis_panels(
    path: str | os.PathLike[str],
    images: Tensor,
    keep: Tensor,
    titles: Sequence[str] | None = None,
    formats: tuple[str, ...] = ("png",),
    **kwargs: Any,
) -> list[Path]:
    """:func:`plot_sis_panels`, saved atomically with :func:`~overinterp.analysis.save_figure`."""
    return save_figure(plot_sis_panels(images, keep, titles, **kwargs), path, formats)
