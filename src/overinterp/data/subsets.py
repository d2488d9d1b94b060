"""Pixel-subset datasets (paper §4.2): images with only a few pixels kept.

* ``bs``: the last ``ceil(fraction·P)`` features removed by backward selection
  (the trace's :meth:`~overinterp.BackselectTrace.keep_mask`);
* ``random``: the same number of features, drawn uniformly at random with a
  generator seeded by ``(seed, dataset position)`` — identical for every model
  and independent of which other images are in the set. The seed depends on the
  split (:data:`RANDOM_SUBSET_SEEDS`: 1234 for training subsets, 5678 for test
  subsets, the authors' seeds), so test image ``i`` does not get training image
  ``i``'s mask;
* ``mask``: the mask-only control — the binary keep-mask itself (1 where kept,
  0 elsewhere, in every channel), no pixel values, to measure how much the
  *shape* of a subset leaks the class.

Masked pixels take ``fill`` (the model's baseline: the dataset mean in pixel
space). Two augmentations (Table S1):

* ``augment=True`` (this package's default): every access (every epoch) crops
  and flips the image and its keep-mask *together*; pixels that a crop brings
  in from outside the image are masked;
* :func:`augment_once` (the authors' pipeline): each image is cropped and
  flipped *once*, when the subset dataset is built, and the keep-mask computed
  on the unaugmented image is applied unmoved — so the kept locations stay where
  backward selection put them while the pixel values under them move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from overinterp.data.augment import random_crop_flip
from overinterp.data.base import LabeledImages

__all__ = [
    "PixelSubsets",
    "random_keep_masks",
    "random_subset_seed",
    "augment_once",
    "RANDOM_SUBSET_SEEDS",
    "SUBSET_KINDS",
    "subset_label",
]

SUBSET_KINDS = ("bs", "random", "mask")

#: Seeds of the random pixel subsets per split — the authors' (training subsets 1234, test subsets 5678),
#: so the two splits draw independent masks and every model of a split sees the same ones.
RANDOM_SUBSET_SEEDS: dict[str, int] = {"train": 1234, "test": 5678}


def random_subset_seed(split: str = "test", seed: int | None = None) -> int:
    """``seed`` if given, else the split's default (:data:`RANDOM_SUBSET_SEEDS`)."""
    if split not in RANDOM_SUBSET_SEEDS:
        raise ValueError(f"split must be one of {sorted(RANDOM_SUBSET_SEEDS)}, got {split!r}")
    if seed is None:
        return RANDOM_SUBSET_SEEDS[split]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"a random-subset seed must be an integer, got {seed!r}")
    return seed


def subset_label(kind: str, fraction: float, rank_by: str = "logodds") -> str:
    """The results-file label of a subset kind: ``bs5``, ``random5``, ``mask5``, ``bs5-prob``."""
    pct = fraction * 100
    num = f"{pct:g}"
    suffix = "-prob" if kind in ("bs", "mask") and rank_by == "probability" else ""
    return f"{kind}{num}{suffix}"


def random_keep_masks(
    positions: Tensor,
    image_shape: tuple[int, int, int],
    fraction: float,
    seed: int | None = None,
    features: Tensor | None = None,
    *,
    split: str = "test",
) -> Tensor:
    """``(N, 1, H, W)`` bool random keep-masks of ``ceil(fraction·P)`` features each.

    Args:
        positions: ``(N,)`` dataset positions; image ``i``'s draw depends only on
            ``(seed, positions[i])``.
        seed: default: the split's (:data:`RANDOM_SUBSET_SEEDS`, 1234 train / 5678 test).
        features: optional shared ``(H, W)`` group map (ids ``0..P−1``); default pixels.
        split: ``"train"`` or ``"test"``: picks the default seed.
    """
    seed = random_subset_seed(split, seed)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    _, h, w = image_shape
    groups = torch.arange(h * w).view(h, w) if features is None else features.cpu().long()
    p = int(groups.max()) + 1
    k = min(p, math.ceil(fraction * p - 1e-9))
    out = torch.zeros(len(positions), 1, h, w, dtype=torch.bool)
    for i, pos in enumerate(torch.as_tensor(positions).tolist()):
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(pos)) % (2**63))
        chosen = torch.zeros(p, dtype=torch.bool)
        chosen[torch.randperm(p, generator=g)[:k]] = True
        out[i, 0] = chosen[groups]
    return out


@dataclass
class PixelSubsets:
    """Labelled images with a keep-mask: what pixel-subset training and evaluation take.

    Attributes:
        images: ``(N, C, H, W)`` uint8 originals.
        labels: ``(N,)`` int64 true labels.
        keep: ``(N, 1, H, W)`` bool, True = kept.
        fill: ``(C,)`` or ``(C, H, W)`` float pixels in [0, 1] for masked pixels.
        kind: ``bs``, ``random`` or ``mask`` (``mask``: pixel values are dropped).
    """

    images: Tensor
    labels: Tensor
    keep: Tensor
    fill: Tensor
    kind: str = "bs"
    fraction: float = 0.05
    classes: list[str] | None = None
    name: str = "subsets"
    meta: dict[str, Any] = field(default_factory=dict)
    #: ``__getitem__`` crops (zero-padding ``padding``) and flips image and keep-mask together
    augment: bool = False
    padding: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        n, c, h, w = self.images.shape
        if self.kind not in SUBSET_KINDS:
            raise ValueError(f"kind must be one of {SUBSET_KINDS}, got {self.kind!r}")
        if self.images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {self.images.dtype}")
        if tuple(self.keep.shape) != (n, 1, h, w) or self.keep.dtype != torch.bool:
            raise ValueError(f"keep must be bool ({n}, 1, {h}, {w}), got {self.keep.dtype} {tuple(self.keep.shape)}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(self.labels.shape)}")
        fill = torch.as_tensor(self.fill, dtype=torch.float32).cpu()
        fill = fill.view(-1, 1, 1).expand(c, h, w) if fill.dim() <= 1 else fill
        if tuple(fill.shape) != (c, h, w):
            raise ValueError(f"fill must be a scalar, ({c},) or ({c}, {h}, {w}); got {tuple(self.fill.shape)}")
        self.fill = fill.contiguous()
        if self.kind == "mask":
            self.fill = torch.zeros(c, h, w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        """``(image (C, H, W) float in [0, 1] with only the kept pixels, true label)`` —
        a map-style dataset for a :class:`torch.utils.data.DataLoader`. With ``augment``
        each access draws a new crop/flip (from a generator seeded by ``seed`` and
        the access count), applied to the image and its keep-mask together."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i = i % n
        if not self.augment:
            return self.pixels(slice(i, i + 1))[0], int(self.labels[i])
        self._draws = getattr(self, "_draws", 0) + 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._draws)
        x = self.subset(slice(i, i + 1)).stacked().float() / 255.0
        return apply_stacked(random_crop_flip(x, g, self.padding), self.fill)[0], int(self.labels[i])

    @property
    def label(self) -> str:
        return subset_label(self.kind, self.fraction, self.meta.get("rank_by", "logodds"))

    def kept_counts(self) -> Tensor:
        """``(N,)`` kept pixels per image."""
        return self.keep.flatten(1).sum(1)

    def pixels(self, index: Any = slice(None)) -> Tensor:
        """Masked images ``(n, C, H, W)`` float in [0, 1] (no augmentation)."""
        keep = self.keep[index]
        x = (
            torch.ones_like(self.images[index], dtype=torch.float32)
            if self.kind == "mask"
            else self.images[index].float() / 255.0
        )
        return torch.where(keep, x, self.fill.unsqueeze(0))

    def stacked(self) -> Tensor:
        """``(N, C+1, H, W)`` uint8: image channels and the keep-mask (255 = kept) —
        the layout :func:`~overinterp.train_classifier` crops and flips jointly."""
        imgs = torch.full_like(self.images, 255) if self.kind == "mask" else self.images
        return torch.cat([imgs, self.keep.to(torch.uint8) * 255], dim=1)

    def to_labeled(self) -> LabeledImages:
        """Masked float images as :class:`LabeledImages` (for evaluation)."""
        return LabeledImages(
            self.pixels(),
            self.labels,
            self.classes,
            name=f"{self.name}:{self.label}",
            source=self.meta.get("source", self.name),
            meta={"key": self.meta.get("key", self.name)},
        )

    def subset(self, index: Any) -> "PixelSubsets":
        return PixelSubsets(
            self.images[index],
            self.labels[index],
            self.keep[index],
            self.fill,
            self.kind,
            self.fraction,
            self.classes,
            self.name,
            dict(self.meta),
            self.augment,
            self.padding,
            self.seed,
        )


def augment_once(
    subsets: PixelSubsets,
    seed: int = 0,
    *,
    positions: Tensor | None = None,
    padding: int = 4,
    flip: bool = True,
) -> PixelSubsets:
    """The authors' Table S1 augmentation: crop (zero padding ``padding``) and flip each image
    *once*, keeping its keep-mask where it was (computed on the unaugmented image).

    Image ``i``'s draw comes from a generator seeded by ``(seed, positions[i])``
    (default positions ``0..N−1``), so it does not depend on the other images. The
    result has ``augment=False`` (nothing moves per epoch) and ``meta["augment"] ==
    "once"``; with ``padding=0, flip=False`` it equals ``subsets``.

    Returns:
        :class:`PixelSubsets` with ``images`` ``(N, C, H, W)`` uint8 augmented and
        ``keep`` ``(N, 1, H, W)`` unchanged.
    """
    if subsets.augment:
        raise ValueError(
            "these subsets already crop and flip image and mask together (augment=True); use one or the other"
        )
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    n = len(subsets)
    pos = torch.arange(n) if positions is None else torch.as_tensor(positions).flatten()
    if pos.shape[0] != n:
        raise ValueError(f"{pos.shape[0]} positions for {n} images")
    images = subsets.images.clone()
    for i, p in enumerate(pos.tolist()):
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(p)) % (2**63))
        images[i : i + 1] = random_crop_flip(subsets.images[i : i + 1], g, padding, flip)
    out = subsets.subset(slice(None))
    out.images = images
    out.meta = {**subsets.meta, "augment": "once", "augment_seed": int(seed), "padding": padding, "flip": flip}
    return out


def apply_stacked(x: Tensor, fill: Tensor) -> Tensor:
    """``(B, C+1, H, W)`` float (image channels, keep channel in [0, 1]) → masked ``(B, C, H, W)``."""
    keep = x[:, -1:] > 0.5
    return torch.where(keep, x[:, :-1], fill.to(x.device, x.dtype).unsqueeze(0))
