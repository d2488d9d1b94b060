"""Pixel-location frequency maps (paper Figures 2 and 4): how often each pixel
belongs to a kept subset or an SIS, over many images."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from overinterp._atomic import atomic_write_bytes

__all__ = ["pyplot", "location_frequency", "plot_heatmap", "plot_heatmap_grid", "save_figure", "save_heatmap"]


def location_frequency(masks: Tensor, valid: Tensor | None = None) -> Tensor:
    """Fraction of images whose mask contains each pixel.

    Args:
        masks: ``(N, 1, H, W)`` or ``(N, H, W)`` bool.
        valid: optional ``(N,)`` bool; only these images count (e.g. those with an SIS).
    Returns:
        ``(H, W)`` float64 in ``[0, 1]`` (zeros when no image counts).
    """
    m = masks.cpu().bool()
    m = m[:, 0] if m.dim() == 4 else m
    if m.dim() != 3:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got {tuple(masks.shape)}")
    if valid is not None:
        m = m[valid.cpu().bool()]
    if m.shape[0] == 0:
        return torch.zeros(m.shape[1:], dtype=torch.float64)
    return m.double().mean(dim=0)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (safe without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(
    freq: Tensor,
    ax: Any = None,
    title: str | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    cmap: str = "viridis",
) -> Any:
    """Draw an ``(H, W)`` frequency map on ``ax`` (a new figure if None); returns the axes.

    ``viridis`` is perceptually uniform and monotone in lightness, so it stays
    readable in greyscale print.
    """
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.0))
    f = freq.detach().cpu().double()
    top = float(vmax) if vmax is not None else max(float(f.max()), 1e-12)
    im = ax.imshow(f.numpy(), cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.set_label("fraction of images", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    return ax


def save_figure(
    fig: Any, path: str | os.PathLike[str], formats: tuple[str, ...] = ("png",), dpi: int = 150
) -> list[Path]:
    """Save ``fig`` atomically as ``path`` with each suffix in ``formats``; closes it; returns the paths."""
    plt = pyplot()
    out = []
    base = Path(path)
    for fmt in formats:
        target = base.with_suffix("." + fmt)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        atomic_write_bytes(target, buf.getvalue())
        out.append(target)
    plt.close(fig)
    return out


def save_heatmap(
    freq: Tensor,
    path: str | os.PathLike[str],
    title: str | None = None,
    formats: tuple[str, ...] = ("png",),
    **kwargs: Any,
) -> list[Path]:
    """:func:`plot_heatmap` on a new figure, saved with :func:`save_figure`."""
    ax = plot_heatmap(freq, title=title, **kwargs)
    return save_figure(ax.figure, path, formats)


def plot_heatmap_grid(
    freqs: "list[Tensor]",
    titles: "list[str]",
    subtitles: "list[str] | None" = None,
    suptitle: str | None = None,
    shared_scale: bool = True,
    cmap: str = "viridis",
) -> Any:
    """One :func:`plot_heatmap` panel per ``(H, W)`` map, side by side; ``subtitles``
    go under each panel (e.g. the mean confidence on the subsets). Returns the figure.

    ``shared_scale``: one colour scale (the largest value over all maps) and one
    colour bar, so panels compare directly.
    """
    plt = pyplot()
    n = max(1, len(freqs))
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + (0.8 if shared_scale else 0), 3.1 * rows), squeeze=False)
    top = max((float(f.max()) for f in freqs), default=1.0) if shared_scale else None
    im = None
    for k, ax in enumerate(axes.flat):
        if k >= len(freqs):
            ax.axis("off")
            continue
        plot_heatmap(freqs[k], ax=ax, title=titles[k], vmax=top, colorbar=not shared_scale, cmap=cmap)
        im = ax.images[0]
        if subtitles and subtitles[k]:
            ax.set_xlabel(subtitles[k], fontsize=8)
    if shared_scale and im is not None:
        cb = fig.colorbar(im, ax=list(axes.flat), fraction=0.03, pad=0.02)
        cb.set_label("fraction of images", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
