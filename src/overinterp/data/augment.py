"""Training-time augmentation of image batches, drawn only from a given generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop_flip"]


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Per-image random crop of the zero-padded batch and horizontal flip.

    ``x`` ``(N, C, H, W)`` → ``(N, C, H, W)``, same dtype and device. The crop
    takes an ``H × W`` window of the batch padded by ``padding`` zeros on each
    side (pixel value 0 outside the image, as torchvision's
    ``RandomCrop(padding=…)``); with ``flip`` each image is mirrored with
    probability ½. Randomness comes only from ``generator`` (on ``x``'s device).
    """
    n, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[
            torch.arange(n, device=dev)[:, None, None, None],
            torch.arange(c, device=dev)[None, :, None, None],
            rows,
            cols,
        ]
    if flip:
        mirror = torch.rand(n, generator=generator, device=dev) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x
