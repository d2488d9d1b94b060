"""One string names any labelled image set: what dataset jobs and experiments record.

* ``NAME[:SPLIT][@ROOT]`` — a registered dataset (:func:`~overinterp.data.load_dataset`),
  e.g. ``cifar10:test``, ``cifar10c:sample``, ``folder:test@data/cifar10-jpeg.zip``;
* aliases ``cifar10-train``, ``cifar10-test``, ``cifar10.1``, ``cifar10c-sample``,
  ``folder:PATH`` (an ImageFolder directory or zip);
* ``PATH.npz[:PREFIX]`` — arrays ``PREFIX_images`` (N, H, W, 3) or (N, 3, H, W) uint8
  and ``PREFIX_labels`` (e.g. ``cifar10-lossless.npz:test``); without ``PREFIX``,
  ``images``/``labels``; optional ``classes``; ``PREFIX_indices`` kept in ``meta``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from overinterp.data.base import LabeledImages
from overinterp.data.registry import load_dataset

__all__ = ["open_dataset", "canonical_spec", "ALIASES"]


def _npz(path: Path, prefix: str | None, spec: str) -> LabeledImages:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        ik = f"{prefix}_images" if prefix else "images"
        lk = f"{prefix}_labels" if prefix else "labels"
        if ik not in keys or lk not in keys:
            prefixes = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            hint = f"; use {path}:{prefixes[0]}" if prefixes else ""
            raise ValueError(f"{spec}: no arrays {ik!r} and {lk!r} in {path} (keys: {keys}){hint}")
        arr = z[ik]
        labels = torch.as_tensor(z[lk].astype(np.int64))
        classes = [str(c) for c in z["classes"]] if "classes" in keys else None
        idx_key = f"{prefix}_indices" if prefix else "indices"
        positions = z[idx_key].astype(np.int64).tolist() if idx_key in keys else None
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"{spec}: images must be a uint8 (N, H, W, C) or (N, C, H, W) array, got {arr.dtype} {arr.shape}")
    images = torch.from_numpy(arr)
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    meta = {"key": spec}
    if positions is not None:
        meta["source_indices"] = positions
    return LabeledImages(images.contiguous(), labels, classes, name=spec, source=str(path), meta=meta)


#: Short names the command line also takes.
ALIASES = {"cifar10-train": "cifar10:train", "cifar10-test": "cifar10:test", "cifar10.1": "cifar10.1:v6",
           "cifar10c-sample": "cifar10c:sample"}


def canonical_spec(spec: str) -> str:
    """Expand aliases (``cifar10-train`` → ``cifar10:train``, ``folder:PATH`` → ``folder@PATH``)."""
    text = ALIASES.get(str(spec), str(spec))
    if text.startswith("folder:") and "@" not in text and Path(text[len("folder:"):]).exists():
        text = "folder@" + text[len("folder:"):]
    return text


def open_dataset(spec: str, *, download: bool = False, progress: bool = False) -> LabeledImages:
    """The labelled images that ``spec`` names (see the module doc)."""
    text = canonical_spec(spec)
    head, sep, tail = text.rpartition(":")
    candidate = Path(head if sep and head.lower().endswith(".npz") else text)
    if candidate.suffix.lower() == ".npz":
        if not candidate.is_file():
            raise FileNotFoundError(f"dataset file {candidate} does not exist")
        prefix = tail if sep and head.lower().endswith(".npz") else None
        return _npz(candidate, prefix, text)
    data = load_dataset(text, download=download, progress=progress)
    data.meta.setdefault("key", text)
    return data
