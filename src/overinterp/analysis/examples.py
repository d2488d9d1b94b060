"""SIS example grids: each original image above its SIS alone (paper Figures 1 and S1),
and an ensemble's SIS beside its members' SIS on the same images (Figure S2)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from overinterp.analysis.display import masked_images, to_display
from overinterp.analysis.style import pyplot

__all__ = ["pick_examples", "plot_sis_examples", "plot_ensemble_sis"]

Normalization = tuple[Sequence[float], Sequence[float]]


def pick_examples(eligible: Tensor, labels: Tensor, per_class: int = 1, num_classes: int | None = None) -> list[int]:
    """Indices of up to ``per_class`` eligible images per class, classes in order, the
    first eligible images of each class first (deterministic).

    Args:
        eligible: ``(N,)`` bool, e.g. "has an SIS and is classified correctly".
        labels: ``(N,)`` int classes.
    """
    el = eligible.cpu().bool()
    y = labels.cpu().long()
    k = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.numel() else 0)
    picked: list[int] = []
    for c in range(k):
        picked += (el & (y == c)).nonzero().flatten()[:per_class].tolist()
    return picked


def _show(ax: Any, img: Tensor) -> None:
    a = img.permute(1, 2, 0).numpy()
    if a.shape[-1] == 1:
        ax.imshow(a[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(a, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.6")
        spine.set_linewidth(0.5)


def plot_sis_examples(
    images: Tensor,
    keep: Tensor,
    captions: Sequence[str],
    *,
    style: str = "grey",
    baseline: Tensor | None = None,
    normalization: Normalization | None = None,
    title: str | None = None,
    max_columns: int = 10,
    panel_size: float = 1.35,
) -> Any:
    """Figure 1 / S1 layout: per example a column with the original above the SIS alone.

    Args:
        images: ``(M, C, H, W)`` pixels (uint8 or float in [0, 1]; normalised inputs of a plain
            module with ``normalization``).
        keep: ``(M, 1, H, W)`` bool, True = in the SIS.
        captions: one per example, shown above its original (e.g. the class).
        style: how masked pixels are drawn (``grey``/``checkerboard``/``baseline``).
    Returns:
        the matplotlib figure (examples wrap after ``max_columns`` columns).
    """
    m = images.shape[0]
    if m == 0:
        raise ValueError("no examples to draw")
    if len(captions) != m or keep.shape[0] != m:
        raise ValueError(f"{m} images need {m} masks and captions, got {keep.shape[0]} and {len(captions)}")
    shown = to_display(images, normalization)
    masked = masked_images(images, keep, style, baseline, normalization)
    cols = min(m, max_columns)
    blocks = -(-m // cols)
    plt = pyplot()
    fig, axes = plt.subplots(
        2 * blocks, cols, figsize=(cols * panel_size + 0.6, 2 * blocks * panel_size + 0.5), squeeze=False
    )
    for k in range(blocks * cols):
        r, c = 2 * (k // cols), k % cols
        top, bottom = axes[r][c], axes[r + 1][c]
        if k >= m:
            top.axis("off")
            bottom.axis("off")
            continue
        _show(top, shown[k])
        _show(bottom, masked[k])
        n_keep = int(keep[k].sum())
        total = keep[k].numel()
        top.set_title(captions[k], fontsize=7)
        bottom.set_xlabel(f"SIS {100 * n_keep / total:.1f}%", fontsize=7)
        if c == 0:
            top.set_ylabel("image", fontsize=7)
            bottom.set_ylabel("SIS only", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_ensemble_sis(
    images: Tensor,
    columns: Sequence[tuple[str, Tensor]],
    row_captions: Sequence[str],
    *,
    style: str = "grey",
    baseline: Tensor | None = None,
    normalization: Normalization | None = None,
    title: str | None = None,
    panel_size: float = 1.3,
) -> Any:
    """Figure S2 layout: one row per image — the original, then each model's SIS alone
    (the ensemble's first, then its members'); a blank panel where a model has no SIS.

    Args:
        images: ``(M, C, H, W)`` pixels.
        columns: ``(name, keep)`` per model, ``keep`` ``(M, 1, H, W)`` bool (all False: no SIS).
        row_captions: one per image (e.g. the class).
    """
    m = images.shape[0]
    if m == 0:
        raise ValueError("no images to draw")
    if len(row_captions) != m:
        raise ValueError(f"{m} images need {m} row captions, got {len(row_captions)}")
    shown = to_display(images, normalization)
    panels = [masked_images(images, keep, style, baseline, normalization) for _, keep in columns]
    plt = pyplot()
    ncols = 1 + len(columns)
    fig, axes = plt.subplots(m, ncols, figsize=(ncols * panel_size + 0.8, m * panel_size + 0.6), squeeze=False)
    for i in range(m):
        _show(axes[i][0], shown[i])
        axes[i][0].set_ylabel(row_captions[i], fontsize=7)
        for j, ((name, keep), masked) in enumerate(zip(columns, panels), start=1):
            ax = axes[i][j]
            if not bool(keep[i].any()):
                ax.axis("off")
                ax.text(0.5, 0.5, "no SIS", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            else:
                _show(ax, masked[i])
                ax.set_xlabel(f"{100 * float(keep[i].float().mean()):.1f}%", fontsize=6)
            if i == 0:
                ax.set_title(name, fontsize=7)
        if i == 0:
            axes[0][0].set_title("image", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
