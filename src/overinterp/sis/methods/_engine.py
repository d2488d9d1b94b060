"""The one selection engine: every greedy backward-selection method is a :class:`Schedule` run by :func:`select`.

A *step* of an image masks ``r`` of its remaining features. The method's
schedule says how many (``block``), which candidates are scored exactly and how
they are screened (``screen``: none, a reduced-precision forward of every
candidate, or the gradient of the target log-odds w.r.t. the mask); the engine
owns the buffers, batching across images, block ends, non-finite checks, the
memory layout, progress, and the host-sync discipline. The schedule's dry run
(:meth:`Schedule.planned_cost`) is each method's cost model.

How it is fast: candidates of *all* images are streamed through one queue, so
every forward call is full (``batch_size`` candidates) until the very last one,
however few features an image has left; candidates are built on the device by
one gather and one ``where`` per batch into one preallocated buffer; the host
only does integer bookkeeping and never reads a score back per batch (a
gradient-screened round with ``recall`` reads its candidate counts once per
round), so there is no device round-trip per step. Gradient passes batch
``batch_size`` images per call.

On CUDA the per-batch loop never waits for the device: no tensor is read back
(``bool(bad)`` once, after the loop), and each batch's index vectors go to the
device as one pinned host buffer copied with ``non_blocking=True``, so the host
runs ahead, queueing batches while the GPU computes. ``cuda_graph=True`` (or
``OVERINTERP_CUDA_GRAPH=1``; off by default, CUDA only) also captures the
model's forward on the fixed ``(batch_size, C, H, W)`` candidate buffer as a CUDA
graph and replays it (the last, partial batch runs the full graph and ignores
the padding rows); if the capture fails, the forward runs eagerly with a warning.
None of this runs on the CPU, whose results are unchanged bit for bit.

Evaluated prefixes: after a single exactly scored removal the chosen
candidate's log-odds *is* the log-odds of the new prefix. After a step that
masks ``r > 1`` features at once (or one chosen by the gradient alone), the new
state is evaluated by the image's next pass: one extra "state candidate" (no
feature removed) in the next scan, or the next gradient pass; after the last
step, by a final forward (or gradient) pass.

Screening diagnostic: for gradient-screened steps with exact scoring the engine
records, per image and step, the rank in the gradient screen of the step's
exact best and the screen's width (``MethodOutput.screen_rank``/``screen_width``,
kept in the trace); :meth:`Schedule.observe` sees them as they happen.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp.sis.methods.base import MethodOutput, Problem
from overinterp.sis.scoring import target_logodds, target_probability

__all__ = [
    "select",
    "Schedule",
    "StepSize",
    "plan_evaluations",
    "mask_gradient",
    "differentiable_copies",
    "has_conv2d",
    "ceil_fraction",
    "AUTOCAST_DTYPES",
]

#: ``step_size(remaining, total)`` → features to mask at this step (clipped to ``[1, remaining]``).
StepSize = Callable[[int, int], int]

AUTOCAST_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def has_conv2d(model: object) -> bool:
    return isinstance(model, torch.nn.Module) and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def default_channels_last(problem: Problem, channels_last: bool | None) -> bool:
    """``None`` → on for float32/16 models that contain a 2-D convolution, off for float64."""
    if channels_last is not None:
        return bool(channels_last)
    return problem.images.dtype != torch.float64 and has_conv2d(problem.forward)


#: Tests set this to ``"error"`` to make any CUDA synchronisation inside the
#: per-batch loop raise (:func:`torch.cuda.set_sync_debug_mode`).
_SYNC_DEBUG: str | None = None


@contextlib.contextmanager
def _sync_debug(device: torch.device) -> Iterator[None]:
    """Within the loop, apply :data:`_SYNC_DEBUG` on CUDA (a no-op otherwise)."""
    if _SYNC_DEBUG is None or device.type != "cuda":
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(_SYNC_DEBUG)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


class _Uploader:
    """Host int64 index vectors → the device. On CUDA all vectors of one call travel
    as one pinned buffer, copied asynchronously (the caching host allocator keeps a
    pinned block until its copy is done); elsewhere a plain ``.to``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"

    def __call__(self, *parts: Tensor | Sequence[int]) -> list[Tensor]:
        host = [p if isinstance(p, Tensor) else torch.tensor(p, dtype=torch.int64) for p in parts]
        if not self.pinned:
            return [t.to(self.device, non_blocking=True) for t in host]
        sizes = [t.numel() for t in host]
        staging = torch.empty(sum(sizes), dtype=torch.int64, pin_memory=True)
        torch.cat([t.flatten() for t in host], out=staging)
        flat = staging.to(self.device, non_blocking=True)
        return [v.view(t.shape) for v, t in zip(flat.split(sizes), host)]


class _GraphedForward:
    """``forward`` captured as a CUDA graph on the static input ``buf`` (``(B, C, H, W)``),
    one graph per autocast setting; :meth:`__call__` replays it and returns the first
    ``b`` rows of the static logits. ``ok`` turns False (eager from then on) when a
    capture fails."""

    def __init__(self, forward: Callable[[Tensor], Tensor], buf: Tensor, autocast: torch.dtype | None) -> None:
        self.forward, self.buf, self.autocast = forward, buf, autocast
        self.graphs: dict[bool, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self.ok = True

    def _amp(self, reduced: bool):
        if reduced and self.autocast is not None:  # autocast's weight cache must be off under capture
            return torch.autocast(device_type="cuda", dtype=self.autocast, cache_enabled=False)
        return contextlib.nullcontext()

    def _capture(self, reduced: bool) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        side = torch.cuda.Stream(device=self.buf.device)
        side.wait_stream(torch.cuda.current_stream(self.buf.device))
        with torch.cuda.stream(side), torch.inference_mode(), self._amp(reduced):
            for _ in range(3):  # warm-up (cuDNN autotuning, lazy init) outside the capture
                self.forward(self.buf)
        torch.cuda.current_stream(self.buf.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph), self._amp(reduced):
            out = self.forward(self.buf)
        return graph, out

    def __call__(self, b: int, reduced: bool) -> Tensor | None:
        """Logits ``(b, K)`` of ``buf[:b]``, or ``None`` when graphs are off (run eagerly)."""
        if not self.ok:
            return None
        if reduced not in self.graphs:
            try:
                self.graphs[reduced] = self._capture(reduced)
            except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
                self.ok = False
                warnings.warn(
                    f"CUDA graph capture of the model's forward failed ({type(exc).__name__}: {exc}); "
                    "running it eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
        graph, out = self.graphs[reduced]
        graph.replay()
        return out[:b]


def _use_cuda_graph(cuda_graph: bool | None, device: torch.device) -> bool:
    """``None`` → ``$OVERINTERP_CUDA_GRAPH`` (``1``/``true``/``yes``); only ever on CUDA."""
    if cuda_graph is None:
        cuda_graph = os.environ.get("OVERINTERP_CUDA_GRAPH", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(cuda_graph) and device.type == "cuda"


# ---------------------------------------------------------------------------- schedules

SCREENS = ("none", "reduced", "gradient")


@dataclass
class Schedule:
    """What a greedy method decides; the engine (:func:`select`) does everything else.

    Per image with ``total`` available features, steps run until ``stop(total)``
    features remain. Each step removes ``block(image, remaining, total)`` features
    (clipped to ``[1, remaining − stop]``). Which candidates a step scores
    depends on ``screen``:

    - ``"none"``: every remaining feature, scored exactly (under ``autocast``
      when set, ranked by ``rank_by``); the ``r`` best are masked;
    - ``"reduced"``: every remaining feature under ``autocast``, then the
      ``exact_count`` best re-scored in full precision; the best of those is
      masked (single steps only);
    - ``"gradient"``: one forward+backward pass at the current state ranks the
      remaining features by the gradient of the target log-odds w.r.t. the mask;
      the ``exact_count`` best (plus up to ``recall`` remaining features with the
      best exact scores of earlier steps that the gradient did not pick) are
      scored exactly and the ``r`` best of those masked. ``exact_count = 0``:
      the gradient alone chooses (the ``r`` largest entries; ``noise`` breaks ties).

    Subclasses may adapt per image: ``block`` and ``exact_count`` receive the
    image index (``None`` in :meth:`planned_cost`'s dry run, which must then give
    the per-image cap), and :meth:`observe` sees, once per gradient-screened round
    (every image's step of that round), the rank in the screen of each step's exact
    best (device tensors; reading them on the host costs one device sync per round,
    before the next round's ``exact_count`` calls).

    :meth:`planned_cost` is a dry run of the same functions, so a method's plan
    and its run cannot drift.
    """

    screen: str = "none"
    step: StepSize | None = None
    stop_at: Callable[[int], int] | None = None
    width: Callable[[int, int, int], int] | int | None = None
    recall: int = 0
    rank_by: str = "logodds"
    autocast: torch.dtype | None = None
    noise: float = 0.0
    seed: int = 0
    desc: str = "backselect"

    def __post_init__(self) -> None:
        if self.screen not in SCREENS:
            raise ValueError(f"screen must be one of {SCREENS}, got {self.screen!r}")
        if self.screen != "none" and self.rank_by != "logodds":
            raise ValueError("screened steps rank by log-odds only")
        if self.screen == "reduced" and self.step is not None:
            raise ValueError("a reduced-precision screen takes single steps only")

    def stop(self, total: int) -> int:
        """Features left (never removed) when an image of ``total`` features is done."""
        return 0 if self.stop_at is None else int(self.stop_at(total))

    def block(self, image: int | None, remaining: int, total: int) -> int:
        """Features the next step removes (before clipping)."""
        return 1 if self.step is None else int(self.step(remaining, total))

    def exact_count(self, image: int | None, remaining: int, total: int, r: int) -> int:
        """Screened candidates scored exactly at this step (``"reduced"``/``"gradient"``)."""
        w = self.width(remaining, total, r) if callable(self.width) else int(self.width or 0)
        return min(remaining, int(w))

    def observe(self, images: Tensor, rank: Tensor, width: Tensor) -> None:
        """Hook after gradient-screened steps of ``images`` (``(F,)`` device int64): ``rank`` ``(F,)``,
        position in the gradient screen of the exact best (``≥ width``: a recall candidate)."""

    # ---- host-side dry run
    def clipped(self, image: int | None, remaining: int, total: int, stop: int) -> int:
        return max(1, min(self.block(image, remaining, total), remaining - stop))

    def planned_cost(self, total: int) -> dict[str, int]:
        """Passes for one image of ``total`` features: ``{"forward_backward", "forward"}``
        (with ``recall``, an upper bound of the forward passes)."""
        fb = fwd = 0
        rem, stop, state = total, self.stop(total), False
        while rem > stop:
            r = self.clipped(None, rem, total, stop)
            if self.screen == "gradient":
                fb += 1
                m = self.exact_count(None, rem, total, r)
                fwd += min(rem, m + self.recall) if m else 0
                state = r > 1 or not m
            else:
                fwd += rem + int(state)
                if self.screen == "reduced":
                    fwd += self.exact_count(None, rem, total, r)
                state = r > 1
            rem -= r
        if state:  # the last block end: a final pass (gradient alone) or forward
            fb += int(self.screen == "gradient" and not self.exact_count(None, 1, total, 1))
            fwd += int(self.screen != "gradient" or bool(self.exact_count(None, 1, total, 1)))
        return {"forward_backward": fb, "forward": fwd}

    def steps(self, total: int) -> int:
        """Steps one image of ``total`` features takes."""
        n, rem, stop = 0, total, self.stop(total)
        while rem > stop:
            rem -= self.clipped(None, rem, total, stop)
            n += 1
        return n


def plan_evaluations(count: int, step_size: StepSize | None, rescore_top: int = 0) -> tuple[int, int, int]:
    """Dry run of one image's forward-only schedule: ``(screen/main evals, rescore evals, steps)``."""
    sched = Schedule(step=step_size)
    main = sched.planned_cost(count)["forward"]
    rescore = sum(min(rescore_top, rem) for rem in range(1, count + 1)) if rescore_top else 0
    return main, rescore, sched.steps(count)


# ---------------------------------------------------------------------------- the gradient pass


def differentiable_copies(problem: Problem) -> tuple[Tensor, Tensor]:
    """``(images, baseline)`` usable in autograd (inference tensors cannot be saved for backward)."""
    with torch.inference_mode(False):
        src = problem.images.clone() if problem.images.is_inference() else problem.images
        base = problem.baseline.clone() if problem.baseline.is_inference() else problem.baseline
    return src, base


def mask_gradient(
    problem: Problem, src: Tensor, base: Tensor, act: Tensor, masked: Tensor, idx: Tensor, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """One forward+backward pass at the masked states of images ``act``.

    ``masked`` ``(S, Pmax)`` bool (1 = masked), ``idx`` ``(S, H·W)`` feature id
    of each pixel. Returns the target log-odds ``(S,)`` and its gradient with
    respect to the mask ``(S, Pmax)`` (large: masking that feature raises the
    log-odds most, to first order).
    """
    s_n = act.numel()
    h, w = src.shape[-2:]
    with torch.inference_mode(False), torch.enable_grad():
        m_soft = masked.to(src.dtype).requires_grad_(True)
        pix = m_soft.gather(1, idx).view(s_n, 1, h, w)
        x = src[act] * (1 - pix) + base * pix
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lo = target_logodds(problem.forward(x), problem.target[act])
        if not lo.requires_grad:
            raise TypeError(
                "this method needs a differentiable PyTorch model (its output carries no gradient); "
                "use a forward-only method such as Exact, KStep or Adaptive(head='kstep')"
            )
        (grad,) = torch.autograd.grad(lo.sum(), m_soft)
    return lo.detach(), grad


def _tie_noise(features: Tensor, removed: Tensor, seed: int) -> Tensor:
    """``u ∈ [0, 1)``: a fixed hash of (feature id, features removed so far, seed)."""
    v = torch.sin(features.double() * 12.9898 + removed.double() * 78.233 + seed * 37.719) * 43758.5453
    return v - torch.floor(v)


# ---------------------------------------------------------------------------- the engine


def select(
    problem: Problem,
    schedule: Schedule,
    *,
    batch_size: int,
    progress: bool,
    channels_last: bool | None = None,
    cuda_graph: bool | None = None,
) -> MethodOutput:
    """Greedy backward selection of ``problem`` by ``schedule`` (see the module doc).

    ``channels_last``: ``None``: on for float32/16 models with a 2-D convolution.
    ``cuda_graph``: replay the forward as a CUDA graph (CUDA only; ``None``:
    ``$OVERINTERP_CUDA_GRAPH``).
    """
    return _Engine(problem, schedule, batch_size, channels_last, cuda_graph).run(progress)


class _Queue:
    """Work items ``(image, first index not yet done)`` over each image's current list of ``length(image)``."""

    def __init__(self, length: Callable[[int], int]) -> None:
        self.items: deque[tuple[int, int]] = deque()
        self.length = length

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, i: int) -> None:
        self.items.append((i, 0))

    def take(self, room: int):
        """Up to ``room`` items, image by image: ``(b, image per item, index per item, images
        finished, segments (image, start, length))``; host int64 tensors."""
        seg_img: list[int] = []
        seg_start: list[int] = []
        seg_len: list[int] = []
        finished: list[int] = []
        left = room
        while self.items and left:
            i, start = self.items.popleft()
            total = self.length(i)
            take = min(left, total - start)
            seg_img.append(i)
            seg_start.append(start)
            seg_len.append(take)
            left -= take
            if start + take < total:
                self.items.appendleft((i, start + take))
            else:
                finished.append(i)
        b = room - left
        lens = torch.tensor(seg_len, dtype=torch.int64)
        img_idx = torch.repeat_interleave(torch.tensor(seg_img, dtype=torch.int64), lens)
        offs = torch.repeat_interleave(torch.tensor(seg_start, dtype=torch.int64) - lens.cumsum(0) + lens, lens)
        idx = torch.arange(b, dtype=torch.int64) + offs
        return b, img_idx, idx, finished, (seg_img, seg_start, seg_len, lens)


class _Engine:
    """One run of :func:`select`: the buffers, the work queues and the loop.

    Work items: *scan* candidates (the state candidate and every remaining
    feature: screens ``none``/``reduced``), *exact* candidates (the screened ones
    a step scores in full precision), *gradient* passes (one per image and step)
    and *last* block ends (the final state of a gradient-screened image).
    Priorities keep every forward call full: exact candidates go first once a
    batch of them is pending (or nothing else is), gradient passes run when no
    forward work is queued and then all of them, as one round, so they batch
    across images; an image whose gradient pass leads straight to another keeps
    its place in the batch.
    """

    def __init__(self, problem: Problem, sched: Schedule, batch_size: int, channels_last, cuda_graph) -> None:
        self.p, self.s, self.bs = problem, sched, int(batch_size)
        images, fmap = problem.images, problem.features
        self.device = device = images.device
        n, c, h, w = images.shape
        self.n, self.h, self.w, self.pmax = n, h, w, fmap.max_features
        pmax = self.pmax
        self.counts = problem.available_counts().tolist()  # host: features left per image
        self.totals = list(self.counts)
        self.stops = [sched.stop(t) for t in self.totals]
        self.steps = [0] * n  # features removed so far (= next order position)
        self.need_state = [False] * n  # the current state (a block end) still needs its own evaluation
        self.r = [0] * n  # block size of each image's current step
        self.m_count = [0] * n  # exact candidates of each image's current step
        self.screen_w = [0] * n  # gradient-screened candidates of each image's current step
        self.x_cur = problem.start_images()
        self.score_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        self.order = torch.full((n, pmax), -1, dtype=torch.int64, device=device)
        self.logodds = torch.full((n, pmax), float("nan"), dtype=torch.float32, device=device)
        self.evaluated = torch.zeros((n, pmax), dtype=torch.bool, device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.col = torch.arange(pmax, device=device)
        self.gradient = sched.screen == "gradient"
        if self.gradient:
            self.src, self.base_g = differentiable_copies(problem)
            masked = self.col.view(1, -1) >= fmap.num_features.view(-1, 1)  # 1 = masked (pads too)
            self.masked = masked | ~problem.available if problem.available is not None else masked
            self.shared = fmap.shared.flatten() if fmap.shared is not None else None
            self.groups = fmap.groups.flatten(1) if self.shared is None else None  # (N, H·W)
            self.stale = torch.full((n, pmax), float("-inf"), dtype=self.score_dtype, device=device)
            self.screen_rank = torch.full((n, pmax), -1, dtype=torch.int32, device=device)
            self.screen_width = torch.full((n, pmax), -1, dtype=torch.int32, device=device)
            self.zero_rows = torch.zeros((), dtype=torch.int64, device=device)
        else:
            self.remaining = problem.remaining_table()  # (N, Pmax): present feature ids, ascending
            self.rank = torch.full((n, pmax), float("-inf"), dtype=self.score_dtype, device=device)
            self.lo_buf = self.rank if sched.rank_by == "logodds" else torch.full_like(self.rank, float("nan"))
        self._alloc_cand(0)  # (N, M) exact candidates: positions (reduced) or feature ids (gradient)
        self.channels_last = default_channels_last(problem, channels_last)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        graphed = _use_cuda_graph(cuda_graph, device)
        alloc = torch.zeros if graphed else torch.empty  # a graph reads the whole buffer: keep unused rows finite
        self.buf = alloc((self.bs, c, h, w), dtype=images.dtype, device=device, memory_format=fmt)  # type: ignore[call-overload]
        self.graph = _GraphedForward(problem.forward, self.buf, sched.autocast) if graphed else None
        self.upload = _Uploader(device)
        self.q_scan = _Queue(lambda i: self.counts[i] + int(self.need_state[i]))
        self.q_exact = _Queue(lambda i: self.m_count[i])
        self.q_grad: deque[int] = deque()
        self.q_last: deque[int] = deque()
        self.exact_done: list[int] = []  # gradient screen: images of this round whose candidates are scored
        self.pending_exact = 0
        self.n_scan = self.n_exact = self.n_fb = self.n_last = 0

    # ---- the loop
    def run(self, progress: bool) -> MethodOutput:
        s = self.s
        plan = {t: s.planned_cost(t) for t in set(self.totals)}
        total = sum(plan[t]["forward"] + plan[t]["forward_backward"] for t in self.totals)
        for i in range(self.n):
            if self.counts[i] > self.stops[i]:
                (self.q_grad.append if self.gradient else self.q_scan.add)(i)
        self.bar = tqdm(total=total, unit="pass", unit_scale=True, disable=not progress, desc=s.desc, smoothing=0.05)
        try:
            with _sync_debug(self.device):
                while self.q_grad or self.q_scan or self.q_exact or self.q_last:
                    if self.q_grad and not self.q_scan and not self.q_exact:
                        self._gradient_round()
                    elif self.q_exact and (self.pending_exact >= self.bs or not self.q_scan):
                        self._exact_batch()
                    elif self.q_scan:
                        self._scan_batch()
                    else:
                        self._last_batch()
        finally:
            self.bar.close()
        if bool(self.bad):
            raise FloatingPointError(
                "the model returned NaN or inf logits"
                + (" (or gradients)" if self.gradient else "")
                + " for some masked images"
            )
        return self._output()

    def _output(self) -> MethodOutput:
        s = self.s
        stats: dict = {"channels_last": bool(self.channels_last)}
        if self.gradient:
            stats["forward_backward_passes"] = self.n_fb
            if self.s.width:
                stats["evaluations"] = self.n_exact + self.n_last
                stats["screening"] = self._screening_summary()
            else:
                stats["zero_gradient_passes"] = int(self.zero_rows)
        else:
            stats["evaluations"] = self.n_scan + self.n_exact
            if self.graph is not None:
                stats["cuda_graph"] = self.graph.ok
            if s.screen == "reduced":
                stats["screened_evaluations"] = self.n_scan
                stats["rescored_evaluations"] = self.n_exact
            if s.step is not None:
                stats["steps"] = sum(s.steps(t) for t in self.totals)
        screened = self.gradient and bool(self.s.width)
        return MethodOutput(
            self.order,
            self.logodds,
            self.evaluated,
            torch.tensor(self.steps, dtype=torch.int64, device=self.device),
            stats,
            screen_rank=self.screen_rank if screened else None,
            screen_width=self.screen_width if screened else None,
        )

    def _screening_summary(self) -> dict[str, list[int]]:
        """Per image: gradient-screened steps, and those whose exact best came from the last
        quarter of the screen or from outside it (one host read, after the loop)."""
        steps = self.screen_width > 0
        late = steps & (self.screen_rank.double() >= 0.75 * self.screen_width.double())
        return {"steps": steps.sum(1).tolist(), "bottom_quarter_steps": late.sum(1).tolist()}

    # ---- model calls
    def _amp(self, reduced: bool):
        if reduced and self.s.autocast is not None:
            return torch.autocast(device_type=self.device.type, dtype=self.s.autocast)
        return contextlib.nullcontext()

    def _score(self, x: Tensor, tgt: Tensor, reduced: bool) -> tuple[Tensor, Tensor]:
        """Log-odds and ranking score ``(b,)`` of the candidates ``x`` (``buf[:b]``)."""
        logits = None if self.graph is None else self.graph(x.shape[0], reduced)
        if logits is None:
            with torch.inference_mode(), self._amp(reduced):
                logits = self.p.forward(x)
        lo = target_logodds(logits, tgt)
        self.bad |= ~torch.isfinite(lo).all()
        r = lo if self.s.rank_by == "logodds" else target_probability(logits, tgt)
        return lo.to(self.score_dtype), r.to(self.score_dtype)

    def _candidates(self, img_d: Tensor, fid: Tensor) -> Tensor:
        """``buf[:b]``: the current images of ``img_d`` with feature ``fid`` masked (−1: none)."""
        masks = self.p.features.masks(img_d, fid).unsqueeze(1)
        return torch.where(masks, self.p.baseline, self.x_cur[img_d], out=self.buf[: img_d.shape[0]])

    def _pixel_index(self, act: Tensor) -> Tensor:
        """``(A, H·W)`` feature id of each pixel of images ``act``."""
        if self.shared is not None:
            return self.shared.expand(act.shape[0], -1)
        assert self.groups is not None
        return self.groups[act]

    # ---- screen none/reduced: every remaining feature (+ the state candidate)
    def _scan_batch(self) -> None:
        b, img_idx, idx, finished, (seg_img, seg_start, seg_len, lens) = self.q_scan.take(self.bs)
        shifts = any(self.need_state[i] for i in seg_img)
        if shifts:  # some images have a state candidate at index 0
            st = torch.repeat_interleave(torch.tensor([int(self.need_state[i]) for i in seg_img]), lens)
            pos = idx - st
            rm_local = (pos >= 0).nonzero().flatten()
            st_img_l, st_local_l, at = [], [], 0
            for i, s0, ln in zip(seg_img, seg_start, seg_len):
                if self.need_state[i] and s0 == 0:
                    st_img_l.append(i)
                    st_local_l.append(at)
                at += ln
            st_pos_l = [self.steps[i] - 1 for i in st_img_l]
            img_d, pos_d, st_local, rm_local, st_img, st_pos = self.upload(
                img_idx, pos, st_local_l, rm_local, st_img_l, st_pos_l
            )
        else:
            img_d, pos_d = self.upload(img_idx, idx)
        fid = self.remaining[img_d, pos_d.clamp(min=0)]
        if shifts:
            fid = torch.where(pos_d < 0, torch.full_like(fid, -1), fid)  # -1: no pixel masked
        x = self._candidates(img_d, fid)
        lo, rk = self._score(x, self.p.target[img_d], reduced=self.s.autocast is not None)
        if shifts:
            self.logodds[st_img, st_pos] = lo[st_local].float()
            self.evaluated[st_img, st_pos] = True
            img_d, pos_d, lo, rk = img_d[rm_local], pos_d[rm_local], lo[rm_local], rk[rm_local]
        self.lo_buf[img_d, pos_d] = lo
        if self.s.rank_by == "probability":
            self.rank[img_d, pos_d] = rk
        self.n_scan += b
        self.bar.update(b)
        if finished:
            for i in finished:
                self.need_state[i] = False
            live = [i for i in finished if self.counts[i] > self.stops[i]]  # else: only the final block end
            if live:
                self._scanned(live)

    def _scanned(self, live: list[int]) -> None:
        """Images whose scan is complete: choose (screen none) or pick the candidates to re-score."""
        f_img, f_cnt = self.upload(live, [self.counts[i] for i in live])
        valid = self.col.view(1, -1) < f_cnt.view(-1, 1)
        scores = self.rank[f_img].masked_fill(~valid, float("-inf"))
        if self.s.screen == "none":
            self._choose(live, scores, self.lo_buf[f_img], None)
            return
        ms = [self.s.exact_count(i, self.counts[i], self.totals[i], 1) for i in live]
        mm = max(ms)
        if self.cand.shape[1] < mm:
            self._alloc_cand(max(mm, self.s.exact_count(None, self.pmax, self.pmax, 1)))
        top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :mm]
        self.cand[f_img, :mm] = top.sort(dim=1).values  # ascending positions: ties → lowest id
        for i, m in zip(live, ms):
            self.m_count[i] = m
            self.q_exact.add(i)
            self.pending_exact += m

    def _alloc_cand(self, m: int) -> None:
        """(Re)allocate the exact-candidate tables with ``m`` columns (only between rounds: keeps ``cand``)."""
        old = getattr(self, "cand", None)
        self.cand = torch.zeros((self.n, m), dtype=torch.int64, device=self.device)
        self.cand_score = torch.full((self.n, m), float("-inf"), dtype=self.score_dtype, device=self.device)
        self.cand_rank = torch.zeros((self.n, m), dtype=torch.int64, device=self.device)
        if old is not None:
            self.cand[:, : old.shape[1]] = old

    # ---- candidates scored exactly (after a reduced or a gradient screen)
    def _exact_batch(self) -> None:
        b, img_idx, idx, finished, _ = self.q_exact.take(self.bs)
        self.pending_exact -= b
        img_d, idx_d = self.upload(img_idx, idx)
        c = self.cand[img_d, idx_d]
        fid = c if self.gradient else self.remaining[img_d, c]
        lo, _ = self._score(self._candidates(img_d, fid), self.p.target[img_d], reduced=False)
        self.cand_score[img_d, idx_d] = lo
        self.n_exact += b
        self.bar.update(b)
        if self.gradient:  # nothing else runs before the round's exact candidates are done: choose once
            self.exact_done += finished
            finished = [] if self.q_exact else self.exact_done
        if finished:
            f_img, f_cnt = self.upload(finished, [self.m_count[i] for i in finished])
            mmax = self.cand.shape[1]
            valid = torch.arange(mmax, device=self.device).view(1, -1) < f_cnt.view(-1, 1)
            s = self.cand_score[f_img].masked_fill(~valid, float("-inf"))
            if self.gradient:
                self.exact_done = []
                self._choose_screened(finished, f_img, s, valid)
            else:
                self._choose(finished, s, s, self.cand[f_img])

    # ---- choosing and masking (screens none/reduced)
    def _choose(self, f_list: list[int], scores: Tensor, values: Tensor, colmap: Tensor | None) -> None:
        """``scores``/``values`` ``(F, L)`` over each image's candidates (invalid: −inf);
        ``colmap`` maps a candidate column to its position in ``remaining``."""
        (f_img,) = self.upload(f_list)
        rows = self.remaining[f_img]
        sizes = [self.s.clipped(i, self.counts[i], self.totals[i], self.stops[i]) for i in f_list]
        for r in sorted(set(sizes)):
            part = [k for k, sz in enumerate(sizes) if sz == r]
            sub = slice(None) if len(part) == len(f_list) else self.upload(part)[0]
            sc = scores[sub]
            if r == 1:
                best = sc.argmax(dim=1, keepdim=True)  # first maximum: lowest feature id wins ties
            else:
                best = torch.sort(sc, dim=1, descending=True, stable=True).indices[:, :r]
            val = values[sub].gather(1, best[:, :1]).squeeze(1)
            cols = best if colmap is None else colmap[sub].gather(1, best)
            self._apply_scan([f_list[k] for k in part], cols, val, rows[sub], r)

    def _apply_scan(self, f_list: list[int], cols: Tensor, values: Tensor, rows: Tensor, r: int) -> None:
        """Mask the features at ``cols`` (``(F, r)`` positions into ``remaining``, best first)."""
        f_img, f_step = self.upload(f_list, [self.steps[i] for i in f_list])
        chosen = rows.gather(1, cols)  # (F, r) feature ids
        pmax = self.pmax
        if r == 1:
            self.order[f_img, f_step] = chosen[:, 0]
        else:
            ar = torch.arange(r, device=self.device).view(1, -1)
            self.order[f_img.view(-1, 1), f_step.view(-1, 1) + ar] = chosen
        self.logodds[f_img, f_step] = values.float()
        self.evaluated[f_img, f_step] = True
        if r == 1:
            sel = self.p.features.masks(f_img, chosen[:, 0]).unsqueeze(1)
            shift = self.col[: pmax - 1].view(1, -1)  # drop the chosen column, keeping the ascending order
            keep = shift + (shift >= cols).long()
            self.remaining[f_img, : pmax - 1] = rows.gather(1, keep)
        else:
            gone = torch.zeros((len(f_list), pmax), dtype=torch.bool, device=self.device)
            gone.scatter_(1, chosen, True)
            sel = gone.gather(1, self.p.features.groups[f_img].flatten(1)).view(-1, 1, self.h, self.w)
            self.remaining[f_img] = rows.scatter(1, cols, pmax).sort(dim=1).values
        self.x_cur[f_img] = torch.where(sel, self.p.baseline, self.x_cur[f_img])
        for i in f_list:
            self._advance(i, r, state=r > 1)

    def _advance(self, i: int, r: int, state: bool) -> None:
        """Bookkeeping after image ``i`` masked ``r`` features; queue its next work."""
        self.steps[i] += r
        self.counts[i] -= r
        self.need_state[i] = state
        more = self.counts[i] > self.stops[i]
        if not self.gradient:
            if more or state:
                self.q_scan.add(i)
        elif more:
            self.q_grad.append(i)
        elif state:
            self.q_last.append(i)

    # ---- gradient screen
    def _gradient_round(self) -> None:
        """Gradient passes of every queued image, ``batch_size`` images per call; images whose
        step the gradient alone decides go straight back into the batch."""
        screened: list[tuple[list[int], Tensor, list[int]]] = []
        while self.q_grad:
            batch = [self.q_grad.popleft() for _ in range(min(self.bs, len(self.q_grad)))]
            again, picked = self._gradient_batch(batch)
            self.q_grad.extendleft(reversed(again))
            if picked is not None:
                screened.append(picked)
        if screened:
            self._queue_screened(screened)

    def _gradient_batch(self, active: list[int]):
        s = self.s
        a_n = len(active)
        act = torch.tensor(active, dtype=torch.int64).to(self.device, non_blocking=True)
        ms = self.masked[act]
        lo, grad = mask_gradient(self.p, self.src, self.base_g, act, ms, self._pixel_index(act), self.channels_last)
        self.bad |= ~torch.isfinite(lo).all() | ~torch.isfinite(grad).all()
        self.n_fb += a_n
        self.bar.update(a_n)
        rec = [k for k, i in enumerate(active) if self.need_state[i]]  # the block end this pass evaluated
        if rec:
            rec_k, rec_img, rec_pos = self.upload(
                rec, [active[k] for k in rec], [self.steps[active[k]] - 1 for k in rec]
            )
            self.logodds[rec_img, rec_pos] = lo[rec_k].float()
            self.evaluated[rec_img, rec_pos] = True
        rs = [
            s.clipped(i, self.counts[i], self.totals[i], self.stops[i]) if self.counts[i] > self.stops[i] else 0
            for i in active
        ]
        for i, r in zip(active, rs):
            self.need_state[i] = False
            self.r[i] = r
        live = [k for k in range(a_n) if rs[k] > 0]
        if not live:
            return [], None
        score = grad.masked_fill(ms, float("-inf"))
        ws = [s.exact_count(active[k], self.counts[active[k]], self.totals[active[k]], rs[k]) for k in live]
        if any(ws) and not all(ws):
            raise ValueError("a schedule's exact_count must be 0 for every image or for none")
        if not any(ws):  # the gradient alone chooses
            self._gradient_choose(active, act, ms, grad, score, live, rs)
            return [active[k] for k in live], None
        return [], ([active[k] for k in live], score[self.upload(live)[0]], ws)

    def _gradient_choose(self, active, act, ms, grad, score, live, rs) -> None:
        """Mask the ``r`` features with the largest gradient entries (ties: lowest id; ``noise``)."""
        live_d = self.upload(live)[0]
        self.zero_rows += ((grad == 0) | ms)[live_d].all(1).sum()
        if self.s.noise > 0:
            amax = grad.abs().masked_fill(ms, 0).amax(1, keepdim=True)
            done = torch.tensor([self.steps[i] for i in active], dtype=torch.int64).to(self.device)
            noise = _tie_noise(self.col.view(1, -1), done.view(-1, 1), self.s.seed).to(self.p.images.dtype)
            score = score + self.s.noise * amax * noise
        rmax = max(rs)
        top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :rmax]
        lens = torch.tensor([rs[k] for k in live], dtype=torch.int64)
        rows = torch.repeat_interleave(torch.tensor(live, dtype=torch.int64), lens)
        js = torch.arange(sum(rs[k] for k in live)) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
        pos = torch.repeat_interleave(torch.tensor([self.steps[active[k]] for k in live]), lens) + js
        rows, js, pos = (t.to(self.device, non_blocking=True) for t in (rows, js, pos))
        chosen = top[rows, js]
        img = act[rows]
        self.order[img, pos] = chosen
        self.masked[img, chosen] = True
        for k in live:
            i = active[k]
            self.steps[i] += rs[k]
            self.counts[i] -= rs[k]
            self.need_state[i] = True  # its value comes with the next pass (also after the last block)

    def _queue_screened(self, screened: list[tuple[list[int], Tensor, list[int]]]) -> None:
        """The gradient's best ``exact_count`` (+ ``recall``) candidates of each image, queued for exact scoring."""
        imgs = [i for part in screened for i in part[0]]
        ws = [w for part in screened for w in part[2]]
        score = torch.cat([part[1] for part in screened])  # (A, Pmax)
        a_n, pmax, dev = len(imgs), self.pmax, self.device
        act = torch.tensor(imgs, dtype=torch.int64).to(dev, non_blocking=True)
        mmax = max(ws)
        top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :mmax]  # (A, mmax)
        valid = torch.arange(mmax, device=dev).view(1, -1) < torch.tensor(ws, device=dev).view(-1, 1)
        cand = torch.where(valid, top, torch.full_like(top, pmax))
        grank = torch.arange(mmax, device=dev).view(1, -1).expand(a_n, -1)
        if self.s.recall > 0:  # plus the best by their last exact score (earlier steps) not screened in now
            st = self.stale[act].masked_fill(self.masked[act], float("-inf"))
            pad = torch.full((a_n, 1), float("-inf"), dtype=st.dtype, device=dev)
            st = torch.cat([st, pad], 1).scatter_(1, cand, float("-inf"))[:, :pmax]  # pads hit the extra column
            kk = min(self.s.recall, pmax)
            top2 = torch.sort(st, dim=1, descending=True, stable=True).indices[:, :kk]
            ok2 = st.gather(1, top2) > float("-inf")
            cand = torch.cat([cand, torch.where(ok2, top2, torch.full_like(top2, pmax))], 1)
            grank = torch.cat([grank, mmax + torch.arange(kk, device=dev).view(1, -1).expand(a_n, -1)], 1)
        cand, perm = cand.sort(dim=1)  # ascending ids, pads last
        grank = grank.gather(1, perm)
        m = cand.shape[1]
        if self.cand.shape[1] < m:
            self._alloc_cand(max(m, self.s.exact_count(None, pmax, pmax, pmax) + self.s.recall))
        self.cand[act, :m] = cand
        self.cand[act, m:] = pmax
        self.cand_rank[act, :m] = grank
        counts = (cand < pmax).sum(1).tolist() if self.s.recall > 0 else [min(w, pmax) for w in ws]
        for i, c, w in zip(imgs, counts, ws):
            self.m_count[i] = c
            self.screen_w[i] = w
            self.q_exact.add(i)
            self.pending_exact += c

    def _choose_screened(self, f_list: list[int], f_img: Tensor, exact: Tensor, valid: Tensor) -> None:
        """Mask the ``r`` best exactly scored candidates of each image (best first; ties: lowest id)."""
        dev, pmax = self.device, self.pmax
        rs = [self.r[i] for i in f_list]
        rmax = max(rs)
        cand = self.cand[f_img]
        if self.s.recall > 0:
            self.stale[f_img.view(-1, 1).expand_as(cand)[valid], cand[valid]] = exact[valid]
        best = torch.sort(exact, dim=1, descending=True, stable=True).indices[:, :rmax]
        chosen = cand.gather(1, best)
        values = exact.gather(1, best[:, :1]).squeeze(1)
        take = torch.arange(rmax, device=dev).view(1, -1) < torch.tensor(rs, device=dev).view(-1, 1)
        rows_k, js = take.nonzero(as_tuple=True)
        pos0 = torch.tensor([self.steps[i] for i in f_list], dtype=torch.int64).to(dev, non_blocking=True)
        self.order[f_img[rows_k], pos0[rows_k] + js] = chosen[rows_k, js]
        rank = self.cand_rank[f_img].gather(1, best[:, :1]).squeeze(1)
        width = torch.tensor([self.screen_w[i] for i in f_list], dtype=torch.int64).to(dev, non_blocking=True)
        self.screen_rank[f_img, pos0] = rank.to(torch.int32)
        self.screen_width[f_img, pos0] = width.to(torch.int32)
        self.s.observe(f_img, rank, width)
        single = [k for k, r in enumerate(rs) if r == 1]
        if single:
            sk = torch.tensor(single, dtype=torch.int64).to(dev, non_blocking=True)
            self.logodds[f_img[sk], pos0[sk]] = values[sk].float()
            self.evaluated[f_img[sk], pos0[sk]] = True
        gone = torch.zeros((len(f_list), pmax + 1), dtype=torch.bool, device=dev)
        gone.scatter_(1, torch.where(take, chosen, torch.full_like(chosen, pmax)), True)
        gone = gone[:, :pmax]
        self.masked[f_img] |= gone
        pix = gone.gather(1, self._pixel_index(f_img)).view(-1, 1, self.h, self.w)
        self.x_cur[f_img] = torch.where(pix, self.base_g, self.x_cur[f_img])
        for i, r in zip(f_list, rs):
            self._advance(i, r, state=r > 1)

    # ---- block ends left after the last gradient-screened step: one forward each
    def _last_batch(self) -> None:
        if self.n_last == 0:  # only ever reached at the very end: in image order
            self.q_last = deque(sorted(self.q_last))
        part = [self.q_last.popleft() for _ in range(min(self.bs, len(self.q_last)))]
        img, pos = self.upload(part, [self.steps[i] - 1 for i in part])
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            lo = target_logodds(self.p.forward(self.x_cur[img].contiguous(memory_format=fmt)), self.p.target[img])
        self.bad |= ~torch.isfinite(lo).all()
        self.logodds[img, pos] = lo.float()
        self.evaluated[img, pos] = True
        for i in part:
            self.need_state[i] = False
        self.n_last += len(part)
        self.bar.update(len(part))


def ceil_fraction(fraction: float, total: int) -> int:
    """``ceil(fraction · total)`` robust to float noise (0.15 · 20 = 3, not 4)."""
    return min(total, math.ceil(fraction * total - 1e-9))
