"""Exact backward selection (BackSelect of Carter et al. 2019).

Each step evaluates every single removal of a still-present feature and masks
the one that keeps the target most likely (highest log-odds; ties go to the
lowest feature id). Cost: ``P(P+1)/2`` forward passes per image.

How it is fast: candidates of *all* images are streamed through one queue, so
every forward call is full (``batch_size`` candidates) until the very last one,
however few features an image has left; candidates are built on the device by
one gather and one ``where`` per batch; the host only does integer bookkeeping
(it never reads a score back), so there is no device round-trip per step.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..scoring import target_logodds, target_probability
from .base import Method, MethodOutput, Problem

__all__ = ["Exact"]

_AUTOCAST = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Exact(Method):
    """Exact greedy backward selection.

    Args:
        rank_by: ``"logodds"`` (default, the project's contract) or
            ``"probability"`` (the original pipeline's ranking by softmax ``p``,
            kept for comparison; it ties once ``p`` rounds to 1).
        channels_last: build candidates in channels-last memory layout. ``None``
            (default): on for float32/16 models that contain a 2-D convolution
            (bench/backselect.py measured it faster for CIFAR ResNets on CPU),
            off for float64. The choice made is recorded in ``trace.meta``.
        autocast: ``None`` (default, full precision) or ``"bfloat16"`` /
            ``"float16"``: run the forward under ``torch.autocast``; scores are
            then approximate.
    """

    rank_by: Literal["logodds", "probability"] = "logodds"
    channels_last: bool | None = None
    autocast: str | None = None

    name: ClassVar[str] = "exact"

    def __post_init__(self) -> None:
        if self.rank_by not in ("logodds", "probability"):
            raise ValueError(f"rank_by must be 'logodds' or 'probability', got {self.rank_by!r}")
        if self.autocast is not None and self.autocast not in _AUTOCAST:
            raise ValueError(f"autocast must be None or one of {sorted(_AUTOCAST)}, got {self.autocast!r}")

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        return run_exact(
            problem,
            batch_size=batch_size,
            progress=progress,
            rank_by=self.rank_by,
            channels_last=self.channels_last,
            autocast=None if self.autocast is None else _AUTOCAST[self.autocast],
        )


def run_exact(
    problem: Problem,
    *,
    batch_size: int,
    progress: bool,
    rank_by: str = "logodds",
    channels_last: bool | None = None,
    autocast: torch.dtype | None = None,
) -> MethodOutput:
    """Run exact backward selection on ``problem``; see :class:`Exact`."""
    images, base, target, fmap = problem.images, problem.baseline, problem.target, problem.features
    device = images.device
    n, c, h, w = images.shape
    pmax = fmap.max_features

    x_cur = problem.start_images()  # (N, C, H, W): current partially masked images
    remaining = problem.remaining_table()  # (N, Pmax): present feature ids, ascending
    counts = problem.available_counts().tolist()  # host: features left per image

    score_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    rank = torch.full((n, pmax), float("-inf"), dtype=score_dtype, device=device)
    lo_buf = rank if rank_by == "logodds" else torch.full_like(rank, float("nan"))
    order = torch.full((n, pmax), -1, dtype=torch.int64, device=device)
    logodds = torch.full((n, pmax), float("nan"), dtype=torch.float32, device=device)
    evaluated = torch.zeros((n, pmax), dtype=torch.bool, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    col = torch.arange(pmax, device=device)
    steps = [0] * n

    if channels_last is None:
        channels_last = images.dtype != torch.float64 and _has_conv2d(problem.forward)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    buf = torch.empty((batch_size, c, h, w), dtype=images.dtype, device=device, memory_format=memory_format)
    amp = (
        torch.autocast(device_type=device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )

    # Work queue: (image, first candidate position not yet evaluated in its current step).
    queue: deque[tuple[int, int]] = deque((i, 0) for i in range(n) if counts[i] > 0)
    total = sum(k * (k + 1) // 2 for k in counts)
    bar = tqdm(total=total, unit="eval", unit_scale=True, disable=not progress, desc="backselect", smoothing=0.05)
    try:
        while queue:
            # 1. Fill one batch from the front of the queue.
            seg_img: list[int] = []
            seg_start: list[int] = []
            seg_len: list[int] = []
            finished: list[int] = []
            room = batch_size
            while queue and room:
                i, start = queue.popleft()
                take = min(room, counts[i] - start)
                seg_img.append(i)
                seg_start.append(start)
                seg_len.append(take)
                room -= take
                if start + take < counts[i]:
                    queue.appendleft((i, start + take))
                else:
                    finished.append(i)
            b = batch_size - room
            lens = torch.tensor(seg_len, dtype=torch.int64)
            img_idx = torch.repeat_interleave(torch.tensor(seg_img, dtype=torch.int64), lens)
            offs = torch.repeat_interleave(torch.tensor(seg_start, dtype=torch.int64) - lens.cumsum(0) + lens, lens)
            pos = torch.arange(b, dtype=torch.int64) + offs
            img_idx = img_idx.to(device, non_blocking=True)
            pos = pos.to(device, non_blocking=True)

            # 2. Build candidates on the device and score them.
            fid = remaining[img_idx, pos]
            masks = fmap.masks(img_idx, fid).unsqueeze(1)
            x = torch.where(masks, base, x_cur[img_idx], out=buf[:b])
            with torch.inference_mode(), amp:
                logits = problem.forward(x)
            tgt = target[img_idx]
            lo = target_logodds(logits, tgt)
            bad |= ~torch.isfinite(lo).all()
            lo_buf[img_idx, pos] = lo.to(score_dtype)
            if rank_by == "probability":
                rank[img_idx, pos] = target_probability(logits, tgt).to(score_dtype)
            bar.update(b)

            # 3. Images whose step is complete: mask their best feature.
            if finished:
                f_img = torch.tensor(finished, dtype=torch.int64).to(device, non_blocking=True)
                f_cnt = torch.tensor([counts[i] for i in finished], dtype=torch.int64).to(device, non_blocking=True)
                f_step = torch.tensor([steps[i] for i in finished], dtype=torch.int64).to(device, non_blocking=True)
                valid = col.view(1, -1) < f_cnt.view(-1, 1)
                scores = rank[f_img].masked_fill(~valid, float("-inf"))
                best = scores.argmax(dim=1)  # first maximum: ids ascending, so lowest id wins ties
                rows = remaining[f_img]
                chosen = rows.gather(1, best.view(-1, 1)).squeeze(1)
                order[f_img, f_step] = chosen
                logodds[f_img, f_step] = lo_buf[f_img, best].float()
                evaluated[f_img, f_step] = True
                sel = fmap.masks(f_img, chosen).unsqueeze(1)
                x_cur[f_img] = torch.where(sel, base, x_cur[f_img])
                # drop the chosen column from each row, keeping the ascending order
                shift = col[: pmax - 1].view(1, -1)
                keep = shift + (shift >= best.view(-1, 1)).long()
                remaining[f_img, : pmax - 1] = rows.gather(1, keep)
                for i in finished:
                    steps[i] += 1
                    counts[i] -= 1
                    if counts[i] > 0:
                        queue.append((i, 0))
    finally:
        bar.close()
    if bool(bad):
        raise FloatingPointError("the model returned NaN or inf logits for some masked images")
    stats = {"channels_last": bool(channels_last), "evaluations": total}
    return MethodOutput(order, logodds, evaluated, torch.tensor(steps, dtype=torch.int64, device=device), stats)


def _has_conv2d(model: object) -> bool:
    return isinstance(model, torch.nn.Module) and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
