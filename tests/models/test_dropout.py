"""Input dropout: the pixel mask and the inference wrapper ``InputDropoutClassifier``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import overinterp
from overinterp.models import create_model
from overinterp.models.classifier import Classifier, check_eval_mode
from overinterp.models.dropout import InputDropoutClassifier, dropout_keep_masks, pixel_dropout
from overinterp.results import model_fingerprint

BASE = torch.tensor([0.1, 0.2, 0.3])


class Recorder(nn.Module):
    """Logits = a fixed linear map of the input; remembers every input it was called on."""

    def __init__(self, c: int = 3, h: int = 6, w: int = 6, k: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(k, c * h * w, generator=g))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.weight.t()


def _recorder_classifier() -> Classifier:
    return Classifier(Recorder(), preprocessing=None, baseline=BASE).eval()


def _images(n: int = 5, h: int = 6, w: int = 6, seed: int = 1) -> Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _binomial_ok(dropped: int, n: int, rate: float) -> bool:
    """Within 5 standard deviations of the expected count (fails by chance with p < 1e-6)."""
    return abs(dropped - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate))


def test_pixel_dropout_drops_whole_pixels_at_the_rate_to_the_fill_exactly():
    x = _images(16, 32, 32)
    fill = BASE.view(3, 1, 1).expand(3, 32, 32)
    out = pixel_dropout(x, 0.3, fill, torch.Generator().manual_seed(0))
    same = out == x
    masked = out == fill.unsqueeze(0)
    # every pixel is either untouched in all channels or the fill in all channels
    assert bool((same.all(1) | masked.all(1)).all())
    dropped = masked.all(1) & ~same.all(1)
    assert _binomial_ok(int(dropped.sum()), 16 * 32 * 32, 0.3)
    # an independent mask per image
    assert not torch.equal(dropped[0], dropped[1])
    # rate 0: the input itself, nothing drawn from the generator
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert pixel_dropout(x, 0.0, fill, g) is x and torch.equal(g.get_state(), state)


def test_keep_masks_match_the_rate():
    for rate in (0.1, 0.5, 0.9):
        keep = dropout_keep_masks(8, 40, 40, rate, torch.Generator().manual_seed(1))
        assert keep.shape == (8, 1, 40, 40) and keep.dtype == torch.bool
        assert _binomial_ok(int((~keep).sum()), keep.numel(), rate), rate


def test_rate_zero_wrapper_is_the_plain_model_bit_for_bit():
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, width=4).eval()
    x = _images(4, 8, 8)
    wrapped = InputDropoutClassifier(model, 0.0, samples=4, seed=0)
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(x))


def test_wrapper_is_the_mean_probability_over_fixed_masks_filled_with_the_baseline():
    model = _recorder_classifier()
    wrapped = InputDropoutClassifier(model, 0.4, samples=3, seed=7)
    x = _images()
    with torch.no_grad():
        out = wrapped(x)
    masks = wrapped.masks(6, 6)
    assert masks.shape == (3, 1, 6, 6) and not torch.equal(masks[0], masks[1])
    seen = model.network.seen
    assert len(seen) == 3
    fill = BASE.view(1, 3, 1, 1).expand_as(x)
    probs = []
    for s, xs in enumerate(seen):
        keep = masks[s].expand_as(x)
        assert torch.equal(xs[keep], x[keep])  # kept pixels untouched
        assert torch.equal(xs[~keep], fill[~keep])  # dropped pixels are the baseline exactly
        probs.append(torch.softmax(xs.flatten(1).double() @ model.network.weight.double().t(), 1))
    expected = torch.log(torch.stack(probs).mean(0))
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.softmax(out.double(), 1).sum(1), torch.ones(5, dtype=torch.float64))
    # the wrapper carries the baseline and is in eval mode
    assert torch.equal(wrapped.baseline, BASE) and not wrapped.training
    check_eval_mode(wrapped)


def test_wrapper_is_deterministic_and_batching_invariant():
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, width=4).eval()
    x = _images(6, 8, 8)
    a = InputDropoutClassifier(model, 0.3, samples=4, seed=11)
    b = InputDropoutClassifier(model, 0.3, samples=4, seed=11)
    c = InputDropoutClassifier(model, 0.3, samples=4, seed=12)
    with torch.no_grad():
        full = a(x)
        assert torch.equal(full, a(x)) and torch.equal(full, b(x))  # same masks every call, every instance
        assert not torch.allclose(full, c(x))  # another seed, other masks
        one_by_one = torch.cat([a(x[i : i + 1]) for i in range(6)])
        reversed_batch = a(x.flip(0)).flip(0)
    torch.testing.assert_close(one_by_one, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(reversed_batch, full, rtol=0, atol=1e-5)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
    assert model_fingerprint(a) != model_fingerprint(InputDropoutClassifier(model, 0.2, samples=4, seed=11))


def test_backward_selection_through_the_wrapper_is_reproducible():
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, width=4, preprocessing="cifar10").eval()
    x = _images(2, 4, 4)
    wrapped = InputDropoutClassifier(model, 0.25, samples=3, seed=5)
    with torch.inference_mode():  # as evaluation calls it first; the masks it caches must still take gradients
        wrapped(x)
    fast = overinterp.backselect(wrapped, x, method=overinterp.Fast(), progress=False)
    assert fast.find_sis(0.5, wrapped, x).verified
    t1 = overinterp.backselect(wrapped, x, progress=False)
    t2 = overinterp.backselect(InputDropoutClassifier(model, 0.25, samples=3, seed=5), x, progress=False)
    assert torch.equal(t1.order, t2.order) and torch.equal(t1.logodds, t2.logodds)
    assert torch.equal(t1.baseline, model.baseline.view(3, 1, 1).expand(3, 4, 4))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_bad_rates_are_refused(rate):
    model = _recorder_classifier()
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\)"):
        InputDropoutClassifier(model, rate)
    with pytest.raises(ValueError, match="rate"):
        pixel_dropout(_images(), rate, BASE.view(3, 1, 1).expand(3, 6, 6), torch.Generator())


def test_bad_samples_seed_and_model_are_refused():
    model = _recorder_classifier()
    for samples in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="samples must be a positive integer"):
            InputDropoutClassifier(model, 0.5, samples=samples)
    with pytest.raises(ValueError, match="seed must be an integer"):
        InputDropoutClassifier(model, 0.5, seed=1.5)
    with pytest.raises(TypeError, match="wraps an overinterp Classifier"):
        InputDropoutClassifier(nn.Linear(3, 3), 0.5)
