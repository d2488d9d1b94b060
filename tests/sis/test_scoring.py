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


def _plain_logodds(z: torch.Tensor, t: torch.Tensor) -> list[float]:
    """Float64 reference, one row at a time in Python: ``z_t − log Σ_{j≠t} exp(z_j)`` (max-shifted)."""
    out = []
    for row, k in zip(z.double().tolist(), t.tolist()):
        others = [v for j, v in enumerate(row) if j != k]
        m = max(others)
        out.append(row[k] - (m + math.log(math.fsum(math.exp(v - m) for v in others))))
    return out


def test_logodds_are_computed_in_the_precision_of_the_logits():
    """float64 logits give float64-exact log-odds; float32 logits float32-accurate ones, over margins
    from 0 to ~60 (where float32 ``p`` has long rounded to 1).

    Wrong implementation caught: log-odds computed in bfloat16 (or float16) inside
    ``target_logodds`` (errors of ~1e-2 relative), or float32 arithmetic for float64 logits."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 10, generator=g, dtype=torch.float64) * 4
    t = torch.randint(0, 10, (300,), generator=g)
    z[torch.arange(300), t] += torch.linspace(0, 60, 300, dtype=torch.float64)  # saturating margins
    ref = torch.tensor(_plain_logodds(z, t), dtype=torch.float64)
    out64 = target_logodds(z, t)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, ref, rtol=1e-12, atol=1e-12)
    z32 = z.float()
    ref32 = torch.tensor(_plain_logodds(z32, t), dtype=torch.float64)  # the same float32 inputs, exactly
    out32 = target_logodds(z32, t)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref32, rtol=2e-6, atol=2e-5)
