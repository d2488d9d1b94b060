"""Feature maps: which pixels form one feature of backward selection.

A feature is one pixel with all its channels by default. A *group map* is an
integer tensor, ``(H, W)`` shared by all images or ``(N, H, W)`` per image,
whose values are feature ids ``0..G-1``, all used (patches, superpixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FeatureMap", "resolve_features", "patch_features", "pixel_features"]


@dataclass
class FeatureMap:
    """Resolved features for ``N`` images of size ``H×W``.

    Attributes:
        groups: ``(N, H, W)`` int64 feature id of every pixel (may be an
            expanded view of one shared map).
        num_features: ``(N,)`` int64, ``P`` per image.
        shared: ``(H, W)`` int64 map when all images share it, else ``None``.
        is_pixels: True when every pixel is its own feature (id = row·W + col).
    """

    groups: Tensor
    num_features: Tensor
    shared: Tensor | None
    is_pixels: bool

    @property
    def max_features(self) -> int:
        return int(self.num_features.max()) if self.num_features.numel() else 0

    def masks(self, image_index: Tensor, feature_ids: Tensor) -> Tensor:
        """``(B, H, W)`` bool: pixels of feature ``feature_ids[b]`` of image ``image_index[b]``."""
        if self.shared is not None:
            rows = self.shared.unsqueeze(0)
        else:
            rows = self.groups[image_index]
        return rows == feature_ids.view(-1, 1, 1)

    def members(self, image: int, feature_ids: Tensor) -> Tensor:
        """``(H, W)`` bool: pixels of image ``image`` that belong to any of ``feature_ids``."""
        return torch.isin(self.groups[image], feature_ids.to(self.groups.device))

    def to(self, device: torch.device) -> "FeatureMap":
        return FeatureMap(
            self.groups.to(device),
            self.num_features.to(device),
            None if self.shared is None else self.shared.to(device),
            self.is_pixels,
        )


def pixel_features(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """``(H, W)`` map with one feature per pixel, id = row·W + col."""
    return torch.arange(height * width, device=device).view(height, width)


def patch_features(height: int, width: int, patch: int | tuple[int, int]) -> Tensor:
    """``(H, W)`` map of non-overlapping ``patch×patch`` squares, row-major ids.

    Edge patches are smaller when the size does not divide the image.
    """
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    if ph < 1 or pw < 1:
        raise ValueError(f"patch size must be positive, got {(ph, pw)}")
    rows = torch.arange(height) // ph
    cols = torch.arange(width) // pw
    ncols = (width + pw - 1) // pw
    return rows.view(-1, 1) * ncols + cols.view(1, -1)


def _check_map(m: Tensor, what: str) -> int:
    """Validate one ``(H, W)`` group map; return its feature count ``G``."""
    if m.numel() == 0:
        raise ValueError(f"{what} is empty")
    lo, hi = int(m.min()), int(m.max())
    if lo != 0:
        raise ValueError(f"{what}: feature ids must start at 0, the smallest is {lo}")
    counts = torch.bincount(m.flatten(), minlength=hi + 1)
    unused = (counts == 0).nonzero().flatten()
    if unused.numel():
        raise ValueError(
            f"{what}: feature ids must be 0..G-1 with every id used; ids "
            f"{unused[:5].tolist()}{' …' if unused.numel() > 5 else ''} are missing (G = {hi + 1})"
        )
    return hi + 1


def resolve_features(features: Tensor | None, n: int, height: int, width: int, device: torch.device) -> FeatureMap:
    """Validate ``features`` (``None``, ``(H, W)`` or ``(N, H, W)`` integer ids) for ``N`` images."""
    if features is None:
        shared = pixel_features(height, width, device)
        return FeatureMap(
            shared.unsqueeze(0).expand(n, height, width),
            torch.full((n,), height * width, dtype=torch.int64, device=device),
            shared,
            True,
        )
    feats = torch.as_tensor(features)
    if feats.is_floating_point() or feats.is_complex() or feats.dtype == torch.bool:
        raise TypeError(f"features must be an integer group map, got dtype {feats.dtype}")
    feats = feats.to(device=device, dtype=torch.int64)
    if feats.dim() == 2:
        if tuple(feats.shape) != (height, width):
            raise ValueError(f"group map has shape {tuple(feats.shape)}, images are {height}×{width}")
        g = _check_map(feats, "group map")
        is_pixels = g == height * width and bool(torch.equal(feats, pixel_features(height, width, device)))
        return FeatureMap(
            feats.unsqueeze(0).expand(n, height, width),
            torch.full((n,), g, dtype=torch.int64, device=device),
            feats,
            is_pixels,
        )
    if feats.dim() == 3:
        if tuple(feats.shape) != (n, height, width):
            raise ValueError(f"per-image group map has shape {tuple(feats.shape)}, expected {(n, height, width)}")
        counts = torch.tensor(
            [_check_map(feats[i], f"group map of image {i}") for i in range(n)],
            dtype=torch.int64,
            device=device,
        )
        return FeatureMap(feats.contiguous(), counts, None, False)
    raise ValueError(f"features must be (H, W) or (N, H, W), got shape {tuple(feats.shape)}")
