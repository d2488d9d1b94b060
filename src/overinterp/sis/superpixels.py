"""Superpixel feature groups: SLIC-like k-means on position and colour, in torch.

A group map from :func:`superpixel_features` plugs into ``backselect(features=…)``
like :func:`~overinterp.patch_features`, but its groups follow the image's
edges, so an SIS made of superpixels keeps object parts whole.

Algorithm (Achanta et al.'s SLIC, simplified): centres start on a regular grid
of step ``S = sqrt(H·W / n_segments)``; each iteration assigns every pixel to
the centre minimising ``‖c − c_k‖² + (compactness / S)² · ‖p − p_k‖²``
(colour ``c`` in [0, 1] RGB, position ``p`` in pixels) and moves each centre to
the mean of its pixels. Segments need not be connected. Ids are renumbered
``0..G−1`` in row-major order of first appearance (empty clusters dropped), so
the map is deterministic and every id is used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["superpixel_features"]


def _one(image: Tensor, n_segments: int, compactness: float, iterations: int) -> Tensor:
    c, h, w = image.shape
    step = math.sqrt(h * w / n_segments)
    gy = max(1, round(h / step))
    gx = max(1, round(w / step))
    ys = (torch.arange(gy, dtype=torch.float64) + 0.5) * (h / gy)
    xs = (torch.arange(gx, dtype=torch.float64) + 0.5) * (w / gx)
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)  # (HW, 2)
    col = image.detach().cpu().double().flatten(1).T  # (HW, C)
    centre_pos = torch.stack([cy.flatten(), cx.flatten()], 1)  # (K, 2)
    iy = cy.flatten().long().clamp(0, h - 1)
    ix = cx.flatten().long().clamp(0, w - 1)
    centre_col = col[iy * w + ix]  # (K, C)
    weight = (compactness / step) ** 2
    labels = torch.zeros(h * w, dtype=torch.int64)
    for _ in range(max(1, iterations)):
        d = torch.cdist(col, centre_col).square() + weight * torch.cdist(pos, centre_pos).square()
        labels = d.argmin(1)
        k = centre_pos.shape[0]
        counts = torch.bincount(labels, minlength=k).double()
        keep = counts > 0
        sums_p = torch.zeros(k, 2, dtype=torch.float64).index_add_(0, labels, pos)
        sums_c = torch.zeros(k, c, dtype=torch.float64).index_add_(0, labels, col)
        centre_pos = sums_p[keep] / counts[keep].view(-1, 1)
        centre_col = sums_c[keep] / counts[keep].view(-1, 1)
    d = torch.cdist(col, centre_col).square() + weight * torch.cdist(pos, centre_pos).square()
    labels = d.argmin(1)
    # renumber 0..G-1 by first appearance in row-major order
    uniq, first = torch.unique(labels, return_inverse=True)
    first_seen = torch.full((uniq.numel(),), h * w, dtype=torch.int64).scatter_reduce_(
        0, first, torch.arange(h * w), reduce="amin"
    )
    rank = torch.empty_like(first_seen)
    rank[torch.argsort(first_seen)] = torch.arange(uniq.numel())
    return rank[first].view(h, w)


def superpixel_features(images: Tensor, n_segments: int = 64, compactness: float = 0.3, iterations: int = 10) -> Tensor:
    """Superpixel group maps for ``backselect(features=…)``.

    Args:
        images: ``(C, H, W)`` or ``(N, C, H, W)`` pixels in ``[0, 1]``.
        n_segments: about how many groups (the grid of starting centres).
        compactness: how much a grid step ``S`` of distance weighs against
            colour distance (``[0, 1]`` RGB units); larger → squarer groups.
        iterations: k-means iterations.
    Returns:
        ``(H, W)`` int64 for one image, ``(N, H, W)`` for a batch; ids ``0..G−1``, all used.
    """
    if not isinstance(images, Tensor) or images.dim() not in (3, 4):
        raise ValueError("images must be a tensor (C, H, W) or (N, C, H, W)")
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    if not compactness >= 0:
        raise ValueError(f"compactness must be ≥ 0, got {compactness!r}")
    h, w = images.shape[-2:]
    if n_segments > h * w:
        raise ValueError(f"n_segments = {n_segments} exceeds the {h}×{w} = {h * w} pixels")
    if images.dim() == 3:
        return _one(images, n_segments, float(compactness), int(iterations))
    return torch.stack([_one(im, n_segments, float(compactness), int(iterations)) for im in images])
