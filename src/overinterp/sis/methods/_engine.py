"""The streaming candidate engine shared by the forward-only greedy methods.

One *step* of an image scores every single removal of a still-present feature
(one forward pass each) and then masks the ``r`` best (highest score; ties go to
the lowest feature id). ``r = 1`` at every step is exact backward selection
(:class:`~overinterp.sis.methods.Exact`); a step-size schedule gives
:class:`~overinterp.sis.methods.KStep` and :class:`~overinterp.sis.methods.Adaptive`.

How it is fast: candidates of *all* images are streamed through one queue, so
every forward call is full (``batch_size`` candidates) until the very last one,
however few features an image has left; candidates are built on the device by
one gather and one ``where`` per batch; the host only does integer bookkeeping
(it never reads a score back), so there is no device round-trip per step.

On CUDA the per-batch loop never waits for the device: no tensor is read back
(``bool(bad)`` once, after the loop), and each batch's index vectors go to the
device as one pinned host buffer copied with ``non_blocking=True``, so the host
runs ahead, queueing batches while the GPU computes. ``cuda_graph=True`` (or
``OVERINTERP_CUDA_GRAPH=1``; off by default, CUDA only) also captures the
model's forward on the fixed ``(batch_size, C, H, W)`` candidate buffer as a CUDA
graph and replays it (the last, partial batch runs the full graph and ignores
the padding rows); if the capture fails, the forward runs eagerly with a warning.
None of this runs on the CPU, whose results are unchanged bit for bit.

Evaluated prefixes: after a single removal the chosen candidate's log-odds *is*
the log-odds of the new prefix. After a step that masks ``r > 1`` features at
once, the new state has not been evaluated; the engine then adds that state as
one extra candidate ("state candidate", no feature removed) to the image's next
step, so every block end is evaluated too (also after the last block).

Screening (:class:`~overinterp.sis.methods.Screened`): the step's candidates are
scored under reduced-precision autocast, the ``m`` best are re-scored in the
model's own precision, and the best of those is taken; the recorded log-odds are
the full-precision ones.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import deque
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp.sis.methods.base import MethodOutput, Problem
from overinterp.sis.scoring import target_logodds, target_probability

__all__ = ["greedy_select", "StepSize", "plan_evaluations", "has_conv2d", "ceil_fraction", "AUTOCAST_DTYPES"]

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


def _clip_step(step_size: StepSize | None, remaining: int, total: int) -> int:
    if step_size is None:
        return 1
    r = int(step_size(remaining, total))
    return max(1, min(r, remaining))


def plan_evaluations(count: int, step_size: StepSize | None, rescore_top: int = 0) -> tuple[int, int, int]:
    """Host-side dry run of one image's schedule: ``(screen/main evals, rescore evals, steps)``."""
    if step_size is None and not rescore_top:
        return count * (count + 1) // 2, 0, count
    main = rescore = steps = 0
    rem, state = count, False
    while rem > 0:
        main += rem + int(state)
        if rescore_top:
            rescore += min(rescore_top, rem)
        r = _clip_step(step_size, rem, count)
        state = r > 1
        rem -= r
        steps += 1
    main += int(state)  # the final block end
    return main, rescore, steps


def greedy_select(
    problem: Problem,
    *,
    batch_size: int,
    progress: bool,
    step_size: StepSize | None = None,
    rank_by: str = "logodds",
    channels_last: bool | None = None,
    autocast: torch.dtype | None = None,
    rescore_top: int = 0,
    desc: str = "backselect",
    cuda_graph: bool | None = None,
) -> MethodOutput:
    """Greedy backward selection over ``problem``.

    Args:
        step_size: ``None``: one feature per step (exact). Else a schedule
            ``(remaining, total) -> r``.
        rank_by: ``"logodds"`` or ``"probability"`` (exact only).
        autocast: run the scoring forward under ``torch.autocast`` with this dtype.
        rescore_top: ``m > 0``: screening — the scores computed under
            ``autocast`` only pick the ``m`` best candidates, which are
            re-scored without autocast; the step takes the best of those.
        cuda_graph: replay the forward as a CUDA graph (CUDA only; ``None``:
            ``$OVERINTERP_CUDA_GRAPH``); see the module doc.
    """
    images, base, target, fmap = problem.images, problem.baseline, problem.target, problem.features
    device = images.device
    n, c, h, w = images.shape
    pmax = fmap.max_features
    screening = rescore_top > 0
    if screening and (step_size is not None or rank_by != "logodds"):
        raise ValueError("screening supports single steps ranked by log-odds only")

    x_cur = problem.start_images()  # (N, C, H, W): current partially masked images
    remaining = problem.remaining_table()  # (N, Pmax): present feature ids, ascending
    counts = problem.available_counts().tolist()  # host: features left per image
    totals = list(counts)

    score_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    rank = torch.full((n, pmax), float("-inf"), dtype=score_dtype, device=device)
    lo_buf = rank if rank_by == "logodds" else torch.full_like(rank, float("nan"))
    order = torch.full((n, pmax), -1, dtype=torch.int64, device=device)
    logodds = torch.full((n, pmax), float("nan"), dtype=torch.float32, device=device)
    evaluated = torch.zeros((n, pmax), dtype=torch.bool, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    col = torch.arange(pmax, device=device)
    steps = [0] * n  # features removed so far (= next order position)
    need_state = [False] * n  # the current state (a block end) still needs its own evaluation
    if screening:
        m = int(rescore_top)
        cand = torch.zeros((n, m), dtype=torch.int64, device=device)  # positions into `remaining`
        rank2 = torch.full((n, m), float("-inf"), dtype=score_dtype, device=device)
        m_count = [0] * n

    channels_last = default_channels_last(problem, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    graphed = _use_cuda_graph(cuda_graph, device)
    # a graph always reads the whole buffer: zeros keep unused rows finite
    alloc = torch.zeros if graphed else torch.empty
    buf = alloc((batch_size, c, h, w), dtype=images.dtype, device=device, memory_format=memory_format)
    graph = _GraphedForward(problem.forward, buf, autocast) if graphed else None
    upload = _Uploader(device)

    def amp(on: bool):
        if on and autocast is not None:
            return torch.autocast(device_type=device.type, dtype=autocast)
        return contextlib.nullcontext()

    plans: dict[int, tuple[int, int, int]] = {}
    for k in set(counts):
        plans[k] = plan_evaluations(k, step_size, rescore_top)
    total_main = sum(plans[k][0] for k in counts)
    total_rescore = sum(plans[k][1] for k in counts)
    n_main = n_rescore = 0

    # Work queues: (image, first candidate index not yet evaluated in its current phase).
    q_main: deque[tuple[int, int]] = deque((i, 0) for i in range(n) if counts[i] > 0)
    q_rescore: deque[tuple[int, int]] = deque()
    pending_rescore = 0

    def main_len(i: int) -> int:
        return counts[i] + int(need_state[i])

    def fill(queue: deque[tuple[int, int]], length: Callable[[int], int]):
        seg_img: list[int] = []
        seg_start: list[int] = []
        seg_len: list[int] = []
        finished: list[int] = []
        room = batch_size
        while queue and room:
            i, start = queue.popleft()
            total = length(i)
            take = min(room, total - start)
            seg_img.append(i)
            seg_start.append(start)
            seg_len.append(take)
            room -= take
            if start + take < total:
                queue.appendleft((i, start + take))
            else:
                finished.append(i)
        b = batch_size - room
        lens = torch.tensor(seg_len, dtype=torch.int64)
        img_idx = torch.repeat_interleave(torch.tensor(seg_img, dtype=torch.int64), lens)
        offs = torch.repeat_interleave(torch.tensor(seg_start, dtype=torch.int64) - lens.cumsum(0) + lens, lens)
        idx = torch.arange(b, dtype=torch.int64) + offs  # candidate index within the image's phase
        return b, img_idx, idx, finished, seg_img, seg_start, seg_len, lens

    def score(x: Tensor, tgt: Tensor, reduced: bool) -> tuple[Tensor, Tensor]:
        nonlocal bad
        logits = None if graph is None else graph(x.shape[0], reduced)
        if logits is None:
            with torch.inference_mode(), amp(reduced):
                logits = problem.forward(x)
        lo = target_logodds(logits, tgt)
        bad |= ~torch.isfinite(lo).all()
        r = lo if rank_by == "logodds" else target_probability(logits, tgt)
        return lo.to(score_dtype), r.to(score_dtype)

    def apply(f_img_list: list[int], cols: Tensor, values: Tensor, rows: Tensor, r: int) -> None:
        """Mask the features at ``cols`` (``(F, r)`` positions into ``remaining``, best
        first) of images ``f_img_list``; record order, best value, evaluated."""
        f_img, f_step = upload(f_img_list, [steps[i] for i in f_img_list])
        chosen = rows.gather(1, cols)  # (F, r) feature ids
        if r == 1:
            order[f_img, f_step] = chosen[:, 0]
        else:
            order[f_img.view(-1, 1), f_step.view(-1, 1) + torch.arange(r, device=device).view(1, -1)] = chosen
        logodds[f_img, f_step] = values.float()
        evaluated[f_img, f_step] = True
        if r == 1:
            sel = fmap.masks(f_img, chosen[:, 0]).unsqueeze(1)
            # drop the chosen column from each row, keeping the ascending order
            shift = col[: pmax - 1].view(1, -1)
            keep = shift + (shift >= cols).long()
            remaining[f_img, : pmax - 1] = rows.gather(1, keep)
        else:
            gone = torch.zeros((len(f_img_list), pmax), dtype=torch.bool, device=device)
            gone.scatter_(1, chosen, True)
            sel = gone.gather(1, fmap.groups[f_img].flatten(1)).view(-1, 1, h, w)
            remaining[f_img] = rows.scatter(1, cols, pmax).sort(dim=1).values
        x_cur[f_img] = torch.where(sel, base, x_cur[f_img])
        for i in f_img_list:
            steps[i] += r
            counts[i] -= r
            need_state[i] = r > 1
            if counts[i] > 0 or need_state[i]:
                q_main.append((i, 0))

    def choose(f_list: list[int], scores: Tensor, values: Tensor, colmap: Tensor | None) -> None:
        """``scores``/``values`` ``(F, L)`` over each image's candidates (invalid: −inf);
        ``colmap`` maps a candidate column to its position in ``remaining``."""
        (f_img,) = upload(f_list)
        rows = remaining[f_img]
        sizes = [_clip_step(step_size, counts[i], totals[i]) for i in f_list]
        for r in sorted(set(sizes)):
            part = [k for k, s in enumerate(sizes) if s == r]
            if len(part) == len(f_list):
                sub = slice(None)
            else:
                (sub,) = upload(part)
            s = scores[sub]
            if r == 1:
                best = s.argmax(dim=1, keepdim=True)  # first maximum: lowest feature id wins ties
            else:
                best = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :r]
            val = values[sub].gather(1, best[:, :1]).squeeze(1)
            cols = best if colmap is None else colmap[sub].gather(1, best)
            apply([f_list[k] for k in part], cols, val, rows[sub], r)

    bar = tqdm(
        total=total_main + total_rescore, unit="eval", unit_scale=True, disable=not progress, desc=desc, smoothing=0.05
    )
    try:
        with _sync_debug(device):
            while q_main or q_rescore:
                if q_rescore and (pending_rescore >= batch_size or not q_main):
                    # ---- re-score the screened candidates in full precision
                    b, img_idx, idx, finished, *_ = fill(q_rescore, lambda i: m_count[i])
                    pending_rescore -= b
                    img_d, idx_d = upload(img_idx, idx)
                    pos = cand[img_d, idx_d]
                    masks = fmap.masks(img_d, remaining[img_d, pos]).unsqueeze(1)
                    x = torch.where(masks, base, x_cur[img_d], out=buf[:b])
                    lo, _ = score(x, target[img_d], reduced=False)
                    rank2[img_d, idx_d] = lo
                    n_rescore += b
                    bar.update(b)
                    if finished:
                        f_img, f_cnt = upload(finished, [m_count[i] for i in finished])
                        valid = torch.arange(m, device=device).view(1, -1) < f_cnt.view(-1, 1)
                        s = rank2[f_img].masked_fill(~valid, float("-inf"))
                        choose(finished, s, s, cand[f_img])
                    continue

                # ---- main phase: (state candidate +) every single removal
                b, img_idx, idx, finished, seg_img, seg_start, seg_len, lens = fill(q_main, main_len)
                shifts = any(need_state[i] for i in seg_img)
                if shifts:  # some images have a state candidate at index 0
                    st = torch.repeat_interleave(torch.tensor([int(need_state[i]) for i in seg_img]), lens)
                    pos = idx - st
                    rm_local = (pos >= 0).nonzero().flatten()
                    # state candidates: the first candidate of a segment that starts an image's phase
                    st_img_l, st_local_l, at = [], [], 0
                    for i, s0, ln in zip(seg_img, seg_start, seg_len):
                        if need_state[i] and s0 == 0:
                            st_img_l.append(i)
                            st_local_l.append(at)
                        at += ln
                    st_pos_l = [steps[i] - 1 for i in st_img_l]
                    img_d, pos_d, st_local, rm_local, st_img, st_pos = upload(
                        img_idx, pos, st_local_l, rm_local, st_img_l, st_pos_l
                    )
                else:
                    pos = idx
                    img_d, pos_d = upload(img_idx, pos)
                fid = remaining[img_d, pos_d.clamp(min=0)]
                if shifts:
                    fid = torch.where(pos_d < 0, torch.full_like(fid, -1), fid)  # -1: no pixel masked
                masks = fmap.masks(img_d, fid).unsqueeze(1)
                x = torch.where(masks, base, x_cur[img_d], out=buf[:b])
                lo, rk = score(x, target[img_d], reduced=screening or autocast is not None)
                if shifts:
                    logodds[st_img, st_pos] = lo[st_local].float()
                    evaluated[st_img, st_pos] = True
                    img_r, pos_r = img_d[rm_local], pos_d[rm_local]
                    lo_buf[img_r, pos_r] = lo[rm_local]
                    if rank_by == "probability":
                        rank[img_r, pos_r] = rk[rm_local]
                else:
                    lo_buf[img_d, pos_d] = lo
                    if rank_by == "probability":
                        rank[img_d, pos_d] = rk
                n_main += b
                bar.update(b)

                # ---- images whose main phase is complete
                if finished:
                    for i in finished:
                        need_state[i] = False
                    live = [i for i in finished if counts[i] > 0]  # counts 0: only the final block end
                    if not live:
                        continue
                    f_img, f_cnt = upload(live, [counts[i] for i in live])
                    valid = col.view(1, -1) < f_cnt.view(-1, 1)
                    scores = rank[f_img].masked_fill(~valid, float("-inf"))
                    if screening:
                        mm = min(m, pmax)
                        top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :mm]
                        top = top.sort(dim=1).values  # ascending positions: ties → lowest id
                        cand[f_img, :mm] = top
                        for i in live:
                            m_count[i] = min(m, counts[i])
                            q_rescore.append((i, 0))
                            pending_rescore += m_count[i]
                    else:
                        choose(live, scores, lo_buf[f_img], None)
    finally:
        bar.close()
    if bool(bad):
        raise FloatingPointError("the model returned NaN or inf logits for some masked images")
    stats: dict = {"channels_last": bool(channels_last), "evaluations": n_main + n_rescore}
    if graph is not None:
        stats["cuda_graph"] = graph.ok
    if screening:
        stats["screened_evaluations"] = n_main
        stats["rescored_evaluations"] = n_rescore
    if step_size is not None:
        stats["steps"] = sum(plans[k][2] for k in totals)
    return MethodOutput(order, logodds, evaluated, torch.tensor(steps, dtype=torch.int64, device=device), stats)


def ceil_fraction(fraction: float, total: int) -> int:
    """``ceil(fraction · total)`` robust to float noise (0.15 · 20 = 3, not 4)."""
    return min(total, math.ceil(fraction * total - 1e-9))
