"""Validation of models, images and targets shared by every algorithm."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from overinterp.models.classifier import Classifier, check_eval_mode
from overinterp.models.predict import model_device, predict_logits
from overinterp.sis.scoring import check_logits, target_logodds

__all__ = ["prepare_model", "check_images", "check_target", "batched_logits", "batched_logodds"]


def prepare_model(model: Any) -> Callable[[Tensor], Tensor]:
    """Check ``model`` is callable and in eval mode; return its forward function."""
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a callable returning logits, got {type(model).__name__}")
    check_eval_mode(model)
    return model


def check_images(images: Any, model: Any) -> Tensor:
    """Validate a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) of floating images.

    A :class:`Classifier` takes pixels in ``[0, 1]``; values outside are refused.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (N = 0)")
    if not images.is_floating_point():
        hint = " (uint8 pixels: use images.float() / 255)" if images.dtype == torch.uint8 else ""
        raise TypeError(f"images must be floating point, got {images.dtype}{hint}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf values")
    if isinstance(model, Classifier):
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"a Classifier takes pixels in [0, 1]; these images range over [{lo:.3g}, {hi:.3g}] "
                "(already normalised? pass the raw pixels, the Classifier normalises them)"
            )
    dev = model_device(model, None)
    if dev is not None and dev != images.device:
        raise ValueError(f"images are on {images.device} but the model is on {dev}; move one of them")
    return images


def check_target(target: Any, n: int, num_classes: int, device: torch.device) -> Tensor:
    """Validate targets: an int, or ``(N,)`` integers in ``[0, K)``."""
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target must be an int or shape ({n},), got shape {tuple(t.shape)}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"target classes must lie in [0, {num_classes}), got {t.tolist()[:10]}")
    return t.contiguous()


def batched_logits(forward: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    """``(N, C, H, W)`` → ``(N, K)`` logits on ``x``'s device, evaluated in chunks of
    ``batch_size`` (:func:`~overinterp.models.predict.predict_logits`, in ``x``'s dtype), validated."""
    logits = predict_logits(forward, x, batch_size=batch_size, device=x.device, dtype=x.dtype, out_device=None)
    return check_logits(logits, x.shape[0])


def batched_logodds(forward: Callable[[Tensor], Tensor], x: Tensor, target: Tensor, batch_size: int) -> Tensor:
    """``(N, …)`` images → ``(N,)`` float64 log-odds of ``target``."""
    return target_logodds(batched_logits(forward, x, batch_size), target).double()
