"""Log-odds scoring: equal to log p − log(1 − p), and free of float32 saturation."""

import math

import pytest
import torch

from overinterp import logit, target_logodds, target_probability


def test_logodds_matches_probability_in_float64():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 7, (50,), generator=g)
    p = target_probability(z, t)
    torch.testing.assert_close(target_logodds(z, t), torch.log(p) - torch.log1p(-p))


def test_logodds_does_not_saturate_in_float32():
    z = torch.tensor([[40.0, 0.0], [45.0, 0.0]])
    t = torch.tensor([0, 0])
    assert target_probability(z, t).tolist() == [1.0, 1.0]  # p ties at exactly 1
    assert torch.log_softmax(z, 1)[:, 0].tolist() == [0.0, 0.0]  # so does log-softmax
    assert target_logodds(z, t).tolist() == [40.0, 45.0]  # log-odds still ranks them


def test_logodds_accepts_bfloat16_logits():
    z = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.bfloat16)
    out = target_logodds(z, torch.tensor([0]))
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(2.0 - math.log(math.e + 1.0), abs=1e-2)


def test_logit_edges():
    assert logit(0.5) == 0.0
    assert logit(0.0) == float("-inf") and logit(1.0) == float("inf")
    assert logit(0.99) == pytest.approx(math.log(99))
