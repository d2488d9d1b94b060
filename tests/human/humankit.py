"""Tiny generated studies for the human-benchmark tests: 3 models, 4 classes, 8×8 images.

(A uniquely named module: several test folders have a conftest.py.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from overinterp import BackselectTrace

CLASSES = ["plane", "car", "bird", "cat"]
HW = 8
N_IMAGES = 24  # 6 per class
FRACTIONS = (0.05, 0.3, 0.5)


def make_trace(labels: torch.Tensor, seed: int, wrong: float = 0.2, unsure: float = 0.15) -> BackselectTrace:
    """A trace over ``labels``: a random removal order per image; about ``wrong`` of the
    images predicted wrongly and ``unsure`` of them below 0.99 confidence."""
    g = torch.Generator().manual_seed(seed)
    n, p = labels.shape[0], HW * HW
    order = torch.stack([torch.randperm(p, generator=g) for _ in range(n)])
    target = labels.clone()
    flip = torch.rand(n, generator=g) < wrong
    target[flip] = (labels[flip] + 1) % len(CLASSES)
    full = torch.full((n,), 6.0)  # p = 0.9975
    full[torch.rand(n, generator=g) < unsure] = 2.0  # p = 0.88
    return BackselectTrace(
        order_padded=order,
        logodds_padded=torch.randn(n, p, generator=g),
        evaluated=torch.ones(n, p, dtype=torch.bool),
        num_features=torch.full((n,), p),
        target=target,
        full_logodds=full,
        method={"name": "test"},
        image_shape=(3, HW, HW),
        baseline=torch.zeros(3),
        labels=labels.clone(),
    )


def make_images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N_IMAGES, 3, HW, HW), generator=g, dtype=torch.uint8)
    images[images == 128] = 127  # no image pixel looks like the grey mask
    labels = torch.arange(N_IMAGES) % len(CLASSES)
    return images, labels


def make_sources(seed: int = 0):
    from overinterp.human.study import ModelSource

    images, labels = make_images(seed)
    return [
        ModelSource(
            name,
            make_trace(labels, seed * 10 + m),
            images,
            labels,
            list(CLASSES),
            "synthetic:test",
            torch.arange(N_IMAGES),
            source="generated",
        )
        for m, name in enumerate(["resnet20", "resnet18", "vgg16_bn"])
    ]


def build_tiny_study(out: Path, seed: int = 0, **kwargs):
    from overinterp.human.study import build_study

    kwargs.setdefault("per_class", 2)
    kwargs.setdefault("proportions", (0.35, 0.35, 0.3))
    return build_study(make_sources(), out, seed=seed, fractions=FRACTIONS, **kwargs)
