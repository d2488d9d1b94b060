"""Forward-only batched prediction: the one loop that runs a model over many images.

:func:`predict_logits` runs a model (any callable mapping an image batch to
logits) over ``(N, C, H, W)`` images in batches, under
:func:`torch.inference_mode`, each batch moved to the model's device and
dtype; :func:`model_device` and :func:`model_dtype` say where a model's tensors
live.
"""

from __future__ import annotations

from typing import Any, Callable, overload

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from overinterp.models.classifier import check_eval_mode

__all__ = ["predict_logits", "model_device", "model_dtype"]

_CPU = torch.device("cpu")


@overload
def model_device(model: Any) -> torch.device: ...


@overload
def model_device(model: Any, default: None) -> torch.device | None: ...


@overload
def model_device(model: Any, default: torch.device | str) -> torch.device: ...


def model_device(model: Any, default: torch.device | str | None = _CPU) -> torch.device | None:
    """The device of a module's first parameter (else first buffer); ``default``
    for a module without tensors or a plain callable."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None if default is None else torch.device(default)


def model_dtype(model: Any) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter; ``None`` for a
    module without one (e.g. a black box) or a plain callable."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def predict_logits(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    out_device: torch.device | str | None = "cpu",
    progress: bool = False,
    desc: str = "predicting",
) -> Tensor:
    """``model`` on ``images`` ``(N, C, H, W)`` in batches → logits ``(N, K)``.

    Each batch is moved to ``device`` (default: :func:`model_device`); uint8
    images are read as pixels (``x.float() / 255``, after the move) and then,
    like float images, cast to ``dtype`` (default: :func:`model_dtype`; a model
    without floating parameters gets the images' own float dtype). Runs under
    :func:`torch.inference_mode`; the model must be in eval mode (see
    :func:`~overinterp.models.classifier.check_eval_mode`), so a batch's logits do not
    depend on the rest of the batch and any ``batch_size`` gives the same result.

    Args:
        model: maps a batch ``(B, C, H, W)`` to logits ``(B, K)``.
        images: ``(N, C, H, W)``, uint8 or floating point, on any device.
        batch_size: images per forward pass.
        device: where the batches go; default: the model's device.
        dtype: floating dtype of the batches; default: the model's.
        out_device: where the logits are returned; ``None`` keeps them on ``device``.
        progress: show a tqdm bar (``desc``, in images).

    Returns:
        ``(N, K)`` logits in the model's output dtype, on ``out_device``.

    Raises:
        ValueError: images not ``(N, C, H, W)`` or empty, ``batch_size < 1``, the
            model in training mode, or a batch's output not ``(B, K)`` with one ``K``.
        TypeError: images neither uint8 nor floating point; a model output that is
            not a floating-point tensor.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (images → logits), got {type(model).__name__}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("no images to predict (N = 0)")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_eval_mode(model)
    dev = model_device(model) if device is None else torch.device(device)
    cast = model_dtype(model) if dtype is None else dtype
    n = int(images.shape[0])
    outs: list[Tensor] = []
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].to(dev, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            if cast is not None:
                x = x.to(cast)
            out = model(x)
            if not isinstance(out, Tensor) or not out.is_floating_point():
                what = out.dtype if isinstance(out, Tensor) else type(out).__name__
                raise TypeError(f"the model must return a floating-point tensor of logits (N, classes), got {what}")
            if out.dim() != 2 or out.shape[0] != x.shape[0] or (outs and out.shape[1] != outs[0].shape[1]):
                want = f"({x.shape[0]}, {outs[0].shape[1] if outs else 'K'})"
                raise ValueError(f"the model must return logits of shape {want} for a batch of {x.shape[0]} "
                                 f"images; it returned shape {tuple(out.shape)}")
            outs.append(out if out_device is None else out.to(out_device))
            bar.update(int(x.shape[0]))
    return torch.cat(outs)
