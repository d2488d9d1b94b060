"""Shared fixtures of the method tests: a tiny float64 CNN and three 5×4 images
(non-square on purpose, so row/column mix-ups fail)."""

import pytest
import torch

from reference import TinyCNN

H, W = 5, 4


@pytest.fixture(scope="module")
def model64():
    return TinyCNN(num_classes=3, height=H, width=W, seed=1).double()


@pytest.fixture(scope="module")
def images64():
    return torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
