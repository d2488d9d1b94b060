"""Batched prediction: batching invariance, uint8 and float input, dtype and device, progress, refusals."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from overinterp.models import Classifier
from overinterp.models.predict import model_device, model_dtype, predict_logits


class _Tiny(nn.Module):
    """Per-image arithmetic only (BatchNorm, tanh, a weighted sum over each image): unlike a
    convolution or matrix product, its float64 logits are bit-identical for any batch size."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.weight = nn.Parameter(torch.randn(num_classes, 3, 6, 6))
        self.bias = nn.Parameter(torch.randn(num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return (torch.tanh(self.bn(x)).unsqueeze(1) * self.weight).sum(dim=(2, 3, 4)) + self.bias


def _tiny_model(dtype: torch.dtype = torch.float64) -> Classifier:
    torch.manual_seed(0)
    model = Classifier(_Tiny(), preprocessing=([0.5] * 3, [0.25] * 3))
    # non-trivial BatchNorm statistics, so eval mode matters
    model.network.bn.running_mean.uniform_(-0.2, 0.2)
    model.network.bn.running_var.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def _images(n: int = 7, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 6, 6), generator=g, dtype=torch.uint8)


def test_batch_size_does_not_change_the_logits() -> None:
    model = _tiny_model()
    x = _images().double() / 255
    with torch.inference_mode():
        ref = model(x)
    for b in (1, 3, x.shape[0], 100):
        out = predict_logits(model, x, batch_size=b)
        assert out.shape == (7, 3) and out.dtype == torch.float64 and out.device.type == "cpu"
        assert torch.equal(out, ref)


def test_uint8_images_are_read_as_pixels_and_cast_to_the_model_dtype() -> None:
    model = _tiny_model(torch.float64)
    u8 = _images()
    from_u8 = predict_logits(model, u8, batch_size=3)
    # uint8 → float32 / 255 (as every caller did), then the model's dtype
    expected = predict_logits(model, (u8.float() / 255).double(), batch_size=3)
    assert torch.equal(from_u8, expected)
    # float images in another dtype are cast to the model's
    assert torch.equal(predict_logits(model, u8.float() / 255, batch_size=3), expected)
    # an explicit dtype wins
    model32 = _tiny_model(torch.float32)
    out = predict_logits(model32, u8, dtype=torch.float32)
    assert out.dtype == torch.float32
    assert torch.equal(out, model32(u8.float() / 255).detach())


def test_plain_callable_keeps_the_image_dtype_and_the_output_device() -> None:
    seen: list[tuple[torch.dtype, torch.device]] = []

    def forward(x: Tensor) -> Tensor:
        seen.append((x.dtype, x.device))
        return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)

    x = _images(5).double() / 255
    out = predict_logits(forward, x, batch_size=2, out_device=None)
    assert out.shape == (5, 2) and seen == [(torch.float64, torch.device("cpu"))] * 3
    assert model_device(forward) == torch.device("cpu") and model_device(forward, None) is None
    assert model_dtype(forward) is None


def test_runs_under_inference_mode() -> None:
    modes: list[bool] = []

    def forward(x: Tensor) -> Tensor:
        modes.append(torch.is_inference_mode_enabled())
        return torch.zeros(x.shape[0], 2)

    predict_logits(forward, _images(3).float() / 255, batch_size=2)
    assert modes == [True, True]


def test_progress_bar_on_and_off(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_model()
    x = _images()
    quiet = predict_logits(model, x, batch_size=2, progress=False, desc="scoring")
    assert "scoring" not in capsys.readouterr().err
    loud = predict_logits(model, x, batch_size=2, progress=True, desc="scoring")
    assert "scoring" in capsys.readouterr().err
    assert torch.equal(quiet, loud)

    import overinterp.models.predict as predict

    bars: list[dict[str, Any]] = []

    class Recorder(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            bars.append({"kwargs": kwargs, "updates": []})

        def update(self, n: float | None = 1) -> bool | None:
            bars[-1]["updates"].append(n)
            return super().update(n)

    monkeypatch.setattr(predict, "tqdm", Recorder)
    predict_logits(model, x, batch_size=3, progress=True, desc="scoring")
    predict_logits(model, x, batch_size=3)
    assert [(b["kwargs"]["total"], b["kwargs"]["disable"], b["kwargs"]["desc"]) for b in bars] == [
        (7, False, "scoring"),
        (7, True, "predicting"),
    ]
    assert bars[0]["updates"] == [3, 3, 1]


def test_refuses_a_model_in_training_mode_and_bad_inputs() -> None:
    model = _tiny_model()
    x = _images()
    model.network.bn.train()
    with pytest.raises(ValueError, match="training mode"):
        predict_logits(model, x)
    model.eval()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        predict_logits(model, x[0])
    with pytest.raises(ValueError, match="no images"):
        predict_logits(model, x[:0])
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, x, batch_size=0)
    with pytest.raises(TypeError, match="uint8 or floating"):
        predict_logits(model, x.long())


def test_refuses_outputs_that_are_not_logits_of_the_batch() -> None:
    x = _images(4).float() / 255
    with pytest.raises(ValueError, match=r"shape \(2, K\)"):
        predict_logits(lambda b: torch.zeros(b.shape[0] + 1, 3), x, batch_size=2)
    calls = iter([3, 4])
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        predict_logits(lambda b: torch.zeros(b.shape[0], next(calls)), x, batch_size=2)
    with pytest.raises(TypeError, match="floating-point tensor"):
        predict_logits(lambda b: torch.zeros(b.shape[0], 3, dtype=torch.long), x)
    with pytest.raises(TypeError, match="floating-point tensor"):
        predict_logits(lambda b: b.numpy(), x)  # type: ignore[arg-type, return-value]


def test_model_device_and_dtype_of_modules() -> None:
    model = _tiny_model(torch.float64)
    assert model_device(model) == torch.device("cpu") and model_dtype(model) == torch.float64
    buffers_only = nn.Module()
    buffers_only.register_buffer("b", torch.zeros(1))
    assert model_device(buffers_only) == torch.device("cpu") and model_dtype(buffers_only) is None
    assert model_device(nn.Identity(), None) is None and model_device(nn.Identity(), "meta") == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_go_to_the_model_device_and_logits_come_back_to_the_cpu() -> None:
    model = _tiny_model(torch.float32)
    x = _images()
    cpu = predict_logits(model, x, batch_size=3)
    model.cuda()
    assert model_device(model).type == "cuda"
    out = predict_logits(model, x, batch_size=3)
    assert out.device.type == "cpu" and torch.allclose(out, cpu, atol=1e-4)
    kept = predict_logits(model, x, batch_size=3, out_device=None)
    assert kept.device.type == "cuda" and torch.equal(kept.cpu(), out)


def test_non_finite_images_and_logits_are_refused():
    from overinterp.models.predict import check_labels, probe_model

    net = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))).eval()
    x = torch.rand(5, 3, 2, 2)
    x[3, 1, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="test set: image 3 of 5 has infinite pixel values"):
        predict_logits(net, x, desc="test set")
    with torch.no_grad():
        net.network[1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="returned NaN logits for image 0 of 5"):
        predict_logits(net, torch.rand(5, 3, 2, 2))
    assert predict_logits(net, torch.rand(5, 3, 2, 2), finite=False).isnan().all()
    assert probe_model(net, (3, 2, 2)) == 3
    with pytest.raises(ValueError, match="cannot classify 3×4×4 images"):
        probe_model(net, (3, 4, 4))
    check_labels(torch.tensor([0, 2, 1]), 3)
    with pytest.raises(ValueError, match="label 3 .* 3 classes"):
        check_labels(torch.tensor([0, 3]), 3)
