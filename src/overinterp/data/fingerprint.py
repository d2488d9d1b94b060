"""What a dataset's identity is: one fingerprint of images and labels, for training and jobs alike."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["data_fingerprint"]


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """sha256 (16 hex) of images ``(N, C, H, W)`` — their shape, dtype and bytes — and labels ``(N,)``
    as int64 (so a label's dtype does not change the identity; an image's dtype does).

    For uint8 images this is the fingerprint job manifests and shards have recorded since 0.1;
    training checkpoints recorded another one before 0.3 (see ``overinterp.training.trainer``).
    """
    h = hashlib.sha256()
    images = images.detach().to("cpu").contiguous()
    h.update(f"{tuple(images.shape)}|{images.dtype}|".encode())
    h.update(images.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(labels.detach().to("cpu").to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
