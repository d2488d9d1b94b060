"""Small, fast inputs for dataset-job tests: a tiny CNN checkpoint and an 8×8 npz dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import overinterp
from overinterp.jobs import JobSpec, ModelSpec

CLASSES = ["a", "b", "c"]


def write_model(path: Path, seed: int = 0, width: int = 4) -> Path:
    """An overinterp checkpoint of a random ``smallcnn`` (3 classes, CIFAR-10 preprocessing)."""
    torch.manual_seed(seed)
    model = overinterp.create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=width).eval()
    overinterp.save_checkpoint(path, model, "smallcnn", arch_kwargs={"width": width}, num_classes=3)
    return path


def write_dataset(path: Path, n: int = 12, size: int = 8, seed: int = 0, prefix: str = "test") -> Path:
    """A uint8 npz with ``{prefix}_images`` (N, H, W, 3), ``{prefix}_labels`` and ``classes``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), size=n).astype(np.uint8)
    np.savez(path, **{f"{prefix}_images": images, f"{prefix}_labels": labels, "classes": np.array(CLASSES)})
    return path


def make_spec(
    model: Path, data: Path, n: int = 12, method=None, shard_size: int = 4, prefix: str = "test", **kw
) -> JobSpec:
    method = method or overinterp.Exact()
    return JobSpec(
        model=ModelSpec(checkpoint=str(model)),
        dataset=f"{data}:{prefix}",
        positions=tuple(range(n)),
        method=method.describe(),
        shard_size=shard_size,
        threads=1,
        **kw,
    )
