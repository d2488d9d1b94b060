"""The model on its own pixel subsets (paper Figure 2's confidences): a plain forward
pass on masked images — model evaluation, not backward selection."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from overinterp.models.predict import predict_logits

__all__ = ["mask_with_baseline", "subset_predictions"]


def mask_with_baseline(images: Tensor, keep: Tensor, baseline: Tensor) -> Tensor:
    """Keep ``keep`` pixels, set the rest to ``baseline`` (what the model saw during selection).

    Args:
        images: ``(N, C, H, W)``; uint8 is read as pixels (÷255), floats are used as they are.
        keep: ``(N, 1, H, W)`` bool.
        baseline: scalar, ``(C,)`` or ``(C, H, W)`` in the images' space.
    Returns:
        ``(N, C, H, W)``: float32 for uint8 images, else the images' dtype.
    """
    x = images.float() / 255.0 if not images.is_floating_point() else images
    b = torch.as_tensor(baseline, device=x.device).to(x.dtype)
    if b.dim() == 1:
        b = b.view(-1, 1, 1)
    return torch.where(keep.to(x.device).bool(), x, b.expand(x.shape[1:]))


@torch.no_grad()
def subset_predictions(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    keep: Tensor,
    target: Tensor,
    baseline: Tensor,
    *,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """The model on ``images`` ``(N, C, H, W)`` reduced to ``keep`` ``(N, 1, H, W)``, the rest
    set to ``baseline`` (a trace's ``baseline``: what the model saw during selection).

    Returns ``(N,)`` tensors: ``confidence`` (float64, probability of the predicted class on
    the subset), ``target_probability`` (float64, probability of ``target``, e.g. the
    trace's class predicted on the full image) and ``prediction`` (int64).
    """
    x = mask_with_baseline(images, keep, baseline)
    logits = predict_logits(model, x, batch_size=batch_size, dtype=None, out_device=x.device).double()
    p = logits.softmax(dim=1)
    conf, pred = p.max(dim=1)
    target = target.to(p.device).long().view(-1, 1)
    return {
        "confidence": conf.cpu(),
        "target_probability": p.gather(1, target).squeeze(1).cpu(),
        "prediction": pred.cpu(),
    }
