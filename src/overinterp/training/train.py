"""A compact training loop for classifiers on in-memory image tensors.

:func:`fit` trains any ``nn.Module`` that maps images to logits (a
:class:`~overinterp.Classifier` included: it applies its own preprocessing) with
SGD + Nesterov momentum and a linear-warm-up / cosine-decay learning-rate schedule,
keeping the whole dataset on the training device. :func:`evaluate` reports accuracy
and mean confidence without gradients.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["fit", "evaluate", "warmup_cosine", "Augment"]

#: ``augment(batch, generator) -> batch``: a batch transform applied during training only,
#: on the training device; draw any randomness from ``generator`` to stay reproducible.
Augment = Callable[[Tensor, torch.Generator], Tensor]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _check_data(images: Tensor, labels: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be (N,) with N={images.shape[0]}, got shape {tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise ValueError("no images")


def fit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    augment: Augment | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` on ``(images, labels)`` in place; return per-epoch statistics.

    The model is moved to ``device`` and left there, in eval mode. Training is
    deterministic given ``seed`` and the model's initial weights (on CPU).

    Args:
        model: maps ``(N, C, H, W)`` images to logits ``(N, K)``.
        images: ``(N, C, H, W)`` float tensor, in whatever space ``model`` takes.
        labels: ``(N,)`` int64 class indices.
        epochs: passes over the data.
        batch_size: images per SGD step.
        lr: peak learning rate (reached after ``warmup_epochs``, then cosine decay to 0).
        weight_decay: L2 penalty, applied to weights only (not to biases or norm layers).
        momentum: Nesterov momentum.
        warmup_epochs: length of the linear warm-up, in epochs.
        label_smoothing: passed to the cross-entropy loss.
        seed: seeds the shuffling and ``augment``'s generator.
        device: where to train; the data are copied there once.
        augment: optional training-time batch transform, see :data:`Augment`.
        progress: show a tqdm bar.

    Returns:
        One dict per epoch: ``epoch``, ``loss`` and ``accuracy`` (running averages
        over the epoch's training batches), ``lr`` (at the epoch's end) and ``seconds``.
    """
    _check_data(images, labels)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    device = torch.device(device)
    model.to(device)
    x_all = images.to(device=device, dtype=torch.float32)
    y_all = labels.to(device=device, dtype=torch.long)
    n = x_all.shape[0]

    # Decay weights only: biases and BatchNorm parameters (all 1-d) are left alone.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
        nesterov=momentum > 0,
    )
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    schedule = warmup_cosine(total_steps, warmup_steps=max(1, round(warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    # Shuffling uses its own CPU generator, augmentation one on the training device:
    # neither touches the global RNG.
    shuffle_gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator(device=device).manual_seed(seed + 1)

    history: list[dict] = []
    bar = tqdm(total=total_steps, desc="training", unit="step", disable=not progress, leave=False)
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=shuffle_gen).to(device)
            loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                if augment is not None:
                    x = augment(x, augment_gen)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()

                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                bar.update(1)
            stats = {
                "epoch": epoch,
                "loss": float(loss_sum) / seen,
                "accuracy": float(correct) / seen,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            history.append(stats)
            bar.set_postfix(epoch=epoch, loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.3f}")
    finally:
        bar.close()
        model.eval()
    return history


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> dict:
    """Accuracy and mean confidence (mean max softmax probability) of ``model``.

    Runs in eval mode on the model's device; the model's train/eval mode is restored.
    Also returns ``loss`` (mean cross-entropy) and ``n``.
    """
    _check_data(images, labels)
    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    was_training = model.training
    model.eval()
    correct, confidence, loss = 0, 0.0, 0.0
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device=device, dtype=torch.float32)
            y = labels[start : start + batch_size].to(device=device, dtype=torch.long)
            logits = model(x).float()
            correct += int((logits.argmax(1) == y).sum())
            confidence += float(logits.softmax(1).amax(1).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    finally:
        model.train(was_training)
    n = images.shape[0]
    return {"accuracy": correct / n, "mean_confidence": confidence / n, "loss": loss / n, "n": n}
