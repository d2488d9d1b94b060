"""How fast is this model here? One probe of a model's raw forward and forward+backward speed,
used by the audit's plan (:func:`overinterp.experiments.audit.plan_audit`) and by the cost that
``check-method`` prints in advance (:func:`overinterp.experiments.check_method.plan_check`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Throughput", "probe_throughput"]


@dataclass(frozen=True)
class Throughput:
    """Measured raw speed of a model on this machine.

    ``forwards_per_s``: images per second of plain forward passes at
    ``batch_size`` in ``layout``; ``fb_cost``: one forward+backward pass per image
    in forward passes (``None``: the model is forward-only).
    """

    forwards_per_s: float
    fb_cost: float | None
    batch_size: int
    layout: str
    seconds: float

    def image_seconds(self, cost: dict[str, int], efficiency: float = 0.92) -> float | None:
        """Seconds for one image of ``cost`` (``planned_cost``); ``efficiency``: the
        engine's candidate evaluations per second / raw forwards (0.92–0.97 measured)."""
        fb = int(cost.get("forward_backward", 0))
        if fb and self.fb_cost is None:
            return None
        equiv = int(cost.get("forward", 0)) + fb * (self.fb_cost or 0.0)
        return equiv / (self.forwards_per_s * efficiency)

    @property
    def forward_seconds(self) -> float:
        """Seconds per image of a plain forward pass."""
        return 1.0 / self.forwards_per_s


def _has_conv(model: Callable[[Tensor], Tensor]) -> bool:
    return isinstance(model, nn.Module) and any(isinstance(m, nn.Conv2d) for m in model.modules())


def _timed(fn: Callable[[], Any], seconds: float, min_calls: int = 2) -> float:
    """Mean seconds per call of ``fn`` over at least ``min_calls`` calls and ``seconds``."""
    fn()  # warm-up (allocations, kernel choice)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def probe_throughput(
    model: Callable[[Tensor], Tensor],
    image_shape: Sequence[int],
    *,
    batch_size: int = 64,
    seconds: float = 3.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Throughput:
    """Time ``model`` on random ``(batch_size, *image_shape)`` pixels in ``[0, 1]``.

    Forward passes run in the layout the engine uses (channels-last for float32
    conv nets); the forward+backward pass is timed with gradients w.r.t. the
    inputs, as gradient methods take them, and is ``None`` when the model cannot
    be differentiated (forward-only formats). A slow model (``batch_size`` single-image passes
    would outlast ``seconds``) is timed on a smaller batch, so that the probe stays near ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"probe seconds must be > 0, got {seconds}")
    start = time.perf_counter()
    dev = torch.device(device)
    one = torch.rand((1, *image_shape), generator=torch.Generator().manual_seed(0), dtype=dtype).to(dev)
    with torch.inference_mode():
        model(one)  # warm-up
        t0 = time.perf_counter()
        model(one)
        t_one = time.perf_counter() - t0
    if batch_size * t_one > seconds:  # one batch would outlast the probe: a smaller batch
        batch_size = max(1, int(seconds / 2 / max(t_one, 1e-9)))
    x = torch.rand((batch_size, *image_shape), generator=torch.Generator().manual_seed(0), dtype=dtype).to(dev)
    layout = "channels_last" if dtype != torch.float64 and _has_conv(model) else "contiguous"
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode():
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t_fwd = _timed(forward, seconds * 0.6) / batch_size

    def forward_backward() -> None:
        xi = x.detach().requires_grad_(True)
        out = model(xi)
        torch.log_softmax(out.float(), 1)[:, 0].sum().backward()  # as the target log-odds' gradient
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    fb_cost: float | None
    if getattr(model, "supports_gradients", True) is False:  # ONNX, TFLite, black boxes
        return Throughput(1.0 / t_fwd, None, batch_size, layout, time.perf_counter() - start)
    try:
        with torch.enable_grad():
            t_fb = _timed(forward_backward, seconds * 0.4) / batch_size
        fb_cost = max(1.0, t_fb / t_fwd)
    except (RuntimeError, TypeError, NotImplementedError):  # forward-only (TFLite, ONNX, numpy) models
        fb_cost = None
    return Throughput(
        forwards_per_s=1.0 / t_fwd,
        fb_cost=fb_cost,
        batch_size=batch_size,
        layout=layout,
        seconds=time.perf_counter() - start,
    )
