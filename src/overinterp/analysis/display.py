"""Showing images and masked images right.

Images in overinterp are pixels in ``[0, 1]`` (a :class:`~overinterp.Classifier`
normalises inside). For a plain module that takes normalised inputs, pass its
``(mean, std)`` to :func:`to_display` to undo the normalisation before display.

Masked pixels are drawn in a style that cannot be mistaken for image content:
``"grey"`` (neutral 50% grey), ``"checkerboard"`` (light/dark 2-pixel checks) or
``"baseline"`` (the masking value the model saw).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["MASK_STYLES", "to_display", "masked_images", "sis_overlay"]

MASK_STYLES = ("grey", "checkerboard", "baseline")


def to_display(images: Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> Tensor:
    """``(N, C, H, W)`` or ``(C, H, W)`` model inputs → float pixels in ``[0, 1]``.

    ``normalization``: ``(mean, std)`` per channel when the images are normalised
    inputs of a plain module; ``None`` for pixels (uint8 0–255 or float [0, 1]).
    """
    x = images.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if normalization is not None:
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in normalization)
        shape = (-1, 1, 1)
        x = x * std.view(shape) + mean.view(shape)
    return x.clamp(0.0, 1.0)


def _fill(style: str, shape: tuple[int, ...], baseline: Tensor | None) -> Tensor:
    c, h, w = shape[-3:]
    if style == "grey":
        return torch.full((c, h, w), 0.5)
    if style == "checkerboard":
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        checks = (((yy // 2) + (xx // 2)) % 2).float()
        return (0.35 + 0.3 * checks).expand(c, h, w)
    if style == "baseline":
        if baseline is None:
            raise ValueError("mask style 'baseline' needs the baseline (e.g. trace.baseline)")
        b = torch.as_tensor(baseline, dtype=torch.float32).cpu()
        return (b.view(-1, 1, 1) if b.dim() == 1 else b).expand(c, h, w).clamp(0, 1)
    raise ValueError(f"unknown mask style {style!r}; choose one of {', '.join(MASK_STYLES)}")


def masked_images(
    images: Tensor,
    keep: Tensor,
    style: str = "grey",
    baseline: Tensor | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Tensor:
    """Keep only ``keep`` pixels; the rest drawn in ``style``.

    Args:
        images: ``(N, C, H, W)`` pixels (uint8 or float in [0, 1]), or a plain module's
            normalised inputs with ``normalization=(mean, std)`` (see :func:`to_display`).
        keep: ``(N, 1, H, W)`` or ``(N, H, W)`` bool, True = shown.
    Returns:
        ``(N, C, H, W)`` float in ``[0, 1]``.
    """
    x = to_display(images, normalization)
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    k = keep.cpu().bool()
    k = k.unsqueeze(1) if k.dim() == 3 else k
    if k.shape[0] != x.shape[0] or k.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"keep mask {tuple(keep.shape)} does not match images {tuple(x.shape)}")
    fill = _fill(style, tuple(x.shape), baseline)
    return torch.where(k, x, fill.unsqueeze(0))


def sis_overlay(images: Tensor, keep: Tensor, color: Sequence[float] = (1.0, 0.0, 0.0), dim: float = 0.45) -> Tensor:
    """The image, dimmed and desaturated, with ``keep`` pixels painted ``color`` (Figure 3's middle panel).

    ``images`` ``(N, C, H, W)``, ``keep`` ``(N, 1, H, W)`` bool → ``(N, 3, H, W)`` float.
    """
    x = to_display(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    grey = x.mean(dim=1, keepdim=True).expand_as(x)
    base = 1.0 - dim + dim * grey  # light, grey: the red marks stand out in print too
    k = keep.cpu().bool()
    k = k.unsqueeze(1) if k.dim() == 3 else k
    c = torch.as_tensor(color, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.where(k, c.expand_as(x), base)
