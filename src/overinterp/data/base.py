"""The in-memory form of every dataset: uint8 images, int64 labels, class names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["LabeledImages", "CIFAR10_CLASSES", "default_root", "to_pixels", "from_hwc", "check_limit"]

#: CIFAR-10 class names in label order (shared by CIFAR-10.1 and CIFAR-10-C).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def check_limit(limit: int | None) -> int | None:
    """``limit`` (the first N images; ``None``: all) unless it is not an integer >= 1 (``ValueError``)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 (the first N images), got {limit!r}")
    return limit


def default_root() -> Path:
    """Where datasets live unless ``root=`` is given: ``$OVERINTERP_DATA``, else
    ``~/.cache/overinterp/data``."""
    env = os.environ.get("OVERINTERP_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "overinterp" / "data"


def to_pixels(images: Tensor) -> Tensor:
    """uint8 images → float32 pixels in ``[0, 1]`` (``x / 255``); float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")


def from_hwc(array: np.ndarray, source: str) -> Tensor:
    """``(N, H, W, 3)`` uint8 array → contiguous ``(N, 3, H, W)`` uint8 tensor."""
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{source}: expected images (N, H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 pixels, got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


@dataclass
class LabeledImages:
    """A labelled image set, as stored: ``images`` ``(N, 3, H, W)`` **uint8**
    (0–255), ``labels`` ``(N,)`` int64.

    Keeping uint8 costs a quarter of the memory of float; convert a batch with
    :func:`to_pixels` (``x.float() / 255``) or all of it with :meth:`pixels`.
    Every model and training function in overinterp accepts either form.
    """

    images: Tensor
    labels: Tensor
    classes: list[str] | None
    name: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if self.classes is not None and self.labels.numel():
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.classes):
                raise ValueError(
                    f"{self.name} ({self.source}): labels range over [{lo}, {hi}] but there are "
                    f"{len(self.classes)} classes"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pixels(self) -> Tensor:
        """All images as float32 in ``[0, 1]`` (a new tensor, 4× the memory)."""
        return to_pixels(self.images)

    def subset(self, index: Any, name: str | None = None) -> "LabeledImages":
        """Images and labels at ``index`` (slice, indices or mask)."""
        idx = torch.as_tensor(index) if not isinstance(index, slice) else index
        return LabeledImages(
            self.images[idx], self.labels[idx], self.classes, name or self.name, self.source, dict(self.meta)
        )

    def __repr__(self) -> str:
        return (
            f"LabeledImages({self.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"dtype={self.images.dtype}, source={self.source!r})"
        )
