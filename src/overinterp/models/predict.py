"""Forward-only batched prediction: the one loop that runs a model over many images.

:func:`predict_logits` runs a model (any callable mapping an image batch to
logits) over ``(N, C, H, W)`` images in batches, under
:func:`torch.inference_mode`, each batch moved to the model's device and
dtype; :func:`model_device` and :func:`model_dtype` say where a model's tensors
live.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, overload

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from overinterp.errors import UserInputError
from overinterp.models.classifier import check_eval_mode

__all__ = [
    "predict_logits",
    "model_device",
    "model_dtype",
    "check_finite_images",
    "check_finite_logits",
    "check_labels",
    "probe_model",
    "model_label",
    "available_device",
]

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
    finite: bool = True,
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
        finite: refuse non-finite images and logits (``FloatingPointError`` naming
            the first such image; ``desc`` names the input).

    Returns:
        ``(N, K)`` logits in the model's output dtype, on ``out_device``.

    Raises:
        ValueError: images not ``(N, C, H, W)`` or empty, ``batch_size < 1``, the
            model in training mode, or a batch's output not ``(B, K)`` with one ``K``.
        TypeError: images neither uint8 nor floating point; a model output that is
            not a floating-point tensor.
        FloatingPointError: with ``finite``, NaN or infinite pixels or logits.
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
    if finite:
        check_finite_images(images, desc)
    dev = model_device(model) if device is None else torch.device(device)
    cast = model_dtype(model) if dtype is None else dtype
    n = int(images.shape[0])
    outs: list[Tensor] = []
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(dev, non_blocking=True)
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
                raise ValueError(
                    f"the model must return logits of shape {want} for a batch of {x.shape[0]} "
                    f"images; it returned shape {tuple(out.shape)}"
                )
            outs.append(out if out_device is None else out.to(out_device))
            bar.update(int(x.shape[0]))
    logits = torch.cat(outs)
    if finite:
        check_finite_logits(logits, desc, model)
    return logits


def available_device(name: str | torch.device) -> torch.device:
    """``name`` as a device; a :class:`~overinterp.errors.UserInputError` when it is not a
    device name or this machine has no such device (no GPU for ``cuda``)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserInputError(f"device {name!r} is not a torch device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"device {name}: no CUDA GPU is available here (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserInputError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"device {name}: MPS is not available here (use cpu)")
    return dev


def _first_bad(values: Tensor) -> tuple[int, str] | None:
    """``(index, "NaN" | "infinite")`` of the first row of ``values`` with a non-finite entry, or ``None``."""
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if not bool(bad.any()):
        return None
    i = int(bad.nonzero()[0, 0])
    return i, "NaN" if bool(values[i].isnan().any()) else "infinite"


def model_label(model: Any) -> str:
    """A short name of ``model`` for messages: its architecture, name or class."""
    return str(getattr(model, "arch", None) or getattr(model, "name", None) or type(model).__name__)


def check_finite_images(images: Tensor, where: str = "images") -> None:
    """``FloatingPointError`` naming the first image with NaN or infinite pixels (uint8 images always pass)."""
    if not images.is_floating_point() or images.shape[0] == 0:
        return
    bad = _first_bad(images)
    if bad is not None:
        raise FloatingPointError(
            f"{where}: image {bad[0]} of {images.shape[0]} has {bad[1]} pixel values; images must be finite"
        )


def check_finite_logits(logits: Tensor, where: str = "predicting", model: Any = None) -> None:
    """``FloatingPointError`` naming the first image whose logits are NaN or infinite."""
    bad = _first_bad(logits)
    if bad is not None:
        who = "the model" if model is None else f"the model ({model_label(model)})"
        raise FloatingPointError(
            f"{where}: {who} returned {bad[1]} logits for image {bad[0]} of {logits.shape[0]}"
            + (" (are its weights finite?)" if bad[1] == "NaN" else "")
        )


def check_labels(labels: Tensor | None, num_classes: int, where: str = "labels") -> None:
    """``UserInputError`` unless every label is a class of a ``num_classes``-way model (0 … K−1)."""
    if labels is None or labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        i = int(((labels < 0) | (labels >= num_classes)).nonzero()[0, 0])
        values = sorted({int(v) for v in bad.tolist()})
        shown = ", ".join(map(str, values[:5])) + (" …" if len(values) > 5 else "")
        raise UserInputError(
            f"{where}: label {int(labels[i])} (image {i}; labels out of range: {shown}) is not a class of the "
            f"model, which has {num_classes} classes (labels 0 … {num_classes - 1})"
        )


def _runs(model: Callable[[Tensor], Tensor], shape: tuple[int, ...], device: torch.device, dtype) -> Tensor | None:
    try:
        return model(torch.zeros((1, *shape), device=device, dtype=dtype))
    except RuntimeError:
        return None


def probe_model(model: Callable[[Tensor], Tensor], image_shape: Sequence[int], *, where: str = "") -> int:
    """Run ``model`` on one blank image of ``image_shape`` ``(C, H, W)``; return its number of classes.

    A network that cannot take such images (too small for its pooling layers, the wrong
    number of channels) raises a ``RuntimeError`` deep inside; here it becomes a
    :class:`~overinterp.errors.UserInputError` naming the architecture and, where larger
    images work, the smallest square size that does. The model's train/eval mode is kept.
    """
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3:
        raise ValueError(f"image shape must be (C, H, W), got {shape}")
    dev = model_device(model)
    dtype = model_dtype(model) or torch.float32
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.inference_mode():
            try:
                out = model(torch.zeros((1, *shape), device=dev, dtype=dtype))
            except RuntimeError as exc:
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                c, h, w = shape
                minimum, lo, size = None, max(h, w), max(h, w, 1)
                while size < 512 and minimum is None:  # doubling, then bisection: lo fails, hi works
                    size = min(2 * size, 512)
                    if _runs(model, (c, size, size), dev, dtype) is not None:
                        minimum = size
                    else:
                        lo = size
                if minimum is not None:
                    hi = minimum
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if _runs(model, (c, mid, mid), dev, dtype) is not None:
                            hi = mid
                        else:
                            lo = mid
                    minimum = hi
                prefix = f"{where}: " if where else ""
                need = (
                    f"; it needs images of at least {minimum}×{minimum} pixels"
                    if minimum is not None
                    else f" (does it take {c}-channel images?)"
                )
                raise UserInputError(
                    f"{prefix}{model_label(model)} cannot classify {c}×{h}×{w} images{need} — the network "
                    f"failed with: {detail}"
                ) from None
    finally:
        if was_training:
            model.train()
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1:
        what = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits (1, K) for one image, got {what}")
    return int(out.shape[1])
