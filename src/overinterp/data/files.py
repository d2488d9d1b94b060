"""Read images from arrays (.npy/.npz/.pt), one image file, or a folder of image files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from overinterp.data.base import check_limit
from overinterp.data.decode import MemoryBudget, check_array_file, decode_image

__all__ = ["ImageSet", "load_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in ``[0, 1]``, optional labels ``(N,)`` and names."""

    images: Tensor
    labels: Tensor | None
    names: list[str]
    classes: list[str] | None = None


def _to_pixels(arr: np.ndarray | Tensor, source: str) -> Tensor:
    t = torch.as_tensor(np.asarray(arr)) if not isinstance(arr, Tensor) else arr
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"{source}: expected images (N, H, W, C) or (N, C, H, W), got shape {tuple(t.shape)}")
    if t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)  # NHWC → NCHW
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise ValueError(
                f"{source}: floating images must be pixels in [0, 1] (got [{float(t.min()):.3g}, {float(t.max()):.3g}])"
            )
    else:
        raise TypeError(f"{source}: images must be uint8 or float, got {t.dtype}")
    return t.contiguous()


def _pick(keys: list[str], want: str) -> str | None:
    if want in keys:
        return want
    hits = [k for k in keys if k.endswith(want)]
    return sorted(hits)[0] if hits else None


def _read_image(path: Path) -> np.ndarray:
    return decode_image(path, str(path))


def load_images(path: str | Path, limit: int | None = None) -> ImageSet:
    """Load images from ``path``.

    * ``.npy``: an array ``(N, H, W, C)`` / ``(N, C, H, W)``, uint8 or float in [0, 1];
    * ``.npz``: key ``images`` (or ``*images``, e.g. ``test_images``), labels from ``labels``/``*labels``;
    * ``.pt``: a tensor, or a dict with ``images`` and optional ``labels``;
    * one image file, or a folder of image files (sorted by name); a folder of
      class sub-folders (ImageFolder layout) also yields labels.
    """
    check_limit(limit)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no images at {path}")
    labels = None
    classes = None
    if path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        if subdirs:
            classes = [d.name for d in subdirs]
            files = [
                (f, k) for k, d in enumerate(subdirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
            ]
        else:
            files = [(f, -1) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        files = files[:limit] if limit is not None else files
        budget = MemoryBudget(str(path), len(files))
        arrays = [budget.hold(_read_image(f)) for f, _ in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images in {path} differ in size ({sorted(shapes)[:3]} …); resize them to one size first")
        images = _to_pixels(np.stack(arrays), str(path))
        names = [str(f.relative_to(path)) for f, _ in files]
        if classes:
            labels = torch.tensor([k for _, k in files], dtype=torch.int64)
        return ImageSet(images, labels, names, classes)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSet(_to_pixels(_read_image(path), str(path)), None, [path.name])
    if suffix in (".npy", ".npz"):
        check_array_file(path)
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = _pick(keys, "images")
            if key is None:
                raise ValueError(f"{path}: no 'images' array (keys: {keys})")
            arr = z[key]
            lkey = _pick(keys, key.replace("images", "labels")) or _pick(keys, "labels")
            if lkey is not None:
                labels = torch.as_tensor(z[lkey].astype(np.int64))
    elif suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # disallowed pickles, corrupt or truncated files …
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
            lines = [ln for ln in lines if ln] or [""]
            detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0])[:200]
            raise ValueError(
                f"cannot read images {path}: not a PyTorch file of tensors that loads with weights_only=True "
                f"(a .pt of images must hold a tensor or a dict of tensors; whole pickled objects are refused) "
                f"— {type(exc).__name__}: {detail}"
            ) from exc
        if isinstance(obj, dict):
            if "images" not in obj:
                raise ValueError(f"{path}: a dict of tensors needs an 'images' entry (keys: {list(obj)})")
            arr, labels = obj["images"], obj.get("labels")
        else:
            arr = obj
    else:
        raise ValueError(f"unsupported image source {path}: use .npy, .npz, .pt, an image file or a folder")
    if limit is not None:
        arr = arr[:limit]
        labels = None if labels is None else labels[:limit]
    images = _to_pixels(arr, str(path))
    return ImageSet(
        images,
        None if labels is None else torch.as_tensor(labels).long(),
        [f"{path.name}[{i}]" for i in range(len(images))],
    )
