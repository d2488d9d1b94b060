"""The model on its own pixel subsets (paper Figure 2's confidences): a plain forward
pass on masked images — model evaluation, not backward selection."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..inputs import batched_logits, prepare_model
from ..trace import BackselectTrace

__all__ = ["mask_with_baseline", "subset_predictions"]


def mask_with_baseline(images: Tensor, keep: Tensor, baseline: Tensor) -> Tensor:
    """Keep ``keep`` pixels, set the rest to ``baseline`` (what the model saw during selection).

    Args:
        images: ``(N, C, H, W)``; uint8 is read as pixels (÷255), floats are used as they are.
        keep: ``(N, 1, H, W)`` bool.
        baseline: scalar, ``(C,)`` or ``(C, H, W)`` in the images' space.
    Returns:
        ``(N, C, H, W)`` float32.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    b = torch.as_tensor(baseline, dtype=torch.float32, device=x.device)
    if b.dim() == 1:
        b = b.view(-1, 1, 1)
    return torch.where(keep.to(x.device).bool(), x, b.expand(x.shape[1:]))


@torch.no_grad()
def subset_predictions(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    keep: Tensor,
    trace: BackselectTrace,
    *,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """The model on ``images`` reduced to ``keep`` (masked with ``trace.baseline``).

    Returns ``(N,)`` tensors: ``confidence`` (float64, probability of the predicted class on
    the subset), ``target_probability`` (float64, probability of the class predicted on the
    full image, ``trace.target``) and ``prediction`` (int64).
    """
    forward = prepare_model(model)
    x = mask_with_baseline(images, keep, trace.baseline)
    logits = batched_logits(forward, x, batch_size).double()
    p = logits.softmax(dim=1)
    conf, pred = p.max(dim=1)
    target = trace.target.to(p.device).long().view(-1, 1)
    return {"confidence": conf.cpu(), "target_probability": p.gather(1, target).squeeze(1).cpu(),
            "prediction": pred.cpu()}
