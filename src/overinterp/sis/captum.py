"""Backward selection as a Captum attribution: the removal rank of every feature as a map.

:class:`BackselectAttribution` follows Captum's conventions —
``BackselectAttribution(model).attribute(inputs, baselines=…, target=…, feature_mask=…)``
returns a tensor of the inputs' shape — so Captum's tools (``visualize_image_attr``,
``NoiseTunnel``, the metrics) take it like any other attribution method.

Convention: a feature removed at position ``k`` (0-based) of an image's ``P``
features gets ``(k + 1) / P`` ∈ ``(0, 1]``, on every pixel and channel it covers.
The last-removed feature (the one the model needs most) gets ``1``; the first
removed gets ``1 / P``. The map is a rank, not a score difference: it does not
multiply by the inputs and has no convergence delta.

Captum is optional (``pip install 'overinterp[captum]'``, Captum 0.9.0). With it
installed, the class is a ``captum.attr.PerturbationAttribution``; without it,
the class works the same, standalone — the attribution needs nothing from
Captum, only the visualisation and Captum's wrappers do.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from overinterp.sis.backselect import DEFAULT_BATCH_SIZE, backselect
from overinterp.sis.methods.base import Method
from overinterp.sis.trace import BackselectTrace

try:
    from captum.attr import PerturbationAttribution as _Base

    HAS_CAPTUM = True
except ImportError:  # pragma: no cover - exercised where captum is absent
    _Base = object  # type: ignore[assignment,misc]
    HAS_CAPTUM = False

__all__ = ["BackselectAttribution", "rank_map", "HAS_CAPTUM"]


def rank_map(trace: BackselectTrace, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(N, C, H, W)`` on the CPU: each pixel's feature's removal rank ``(k + 1) / P`` ∈ (0, 1]
    (computed in float64, then rounded once to ``dtype``)."""
    n = len(trace)
    c, h, w = trace.image_shape
    pmax = trace.order_padded.shape[1]
    col = torch.arange(pmax).view(1, -1)
    nf = trace.num_features.view(-1, 1)
    valid = col < nf
    ranks = torch.zeros(n, pmax + 1, dtype=torch.float64)  # the extra column absorbs the −1 pads
    pos = (col + 1).double() / nf.double()
    ranks.scatter_(1, torch.where(valid, trace.order_padded, pmax), torch.where(valid, pos, 0.0))
    groups = trace.feature_map().groups.flatten(1)  # (N, H·W)
    per_pixel = ranks.gather(1, groups).view(n, 1, h, w)
    return per_pixel.to(dtype).expand(n, c, h, w).contiguous()


def _one_tensor(value: Any, what: str) -> Any:
    """Captum passes one input as a tensor or a 1-tuple; more inputs are not supported."""
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(f"{what}: backward selection takes one input tensor, got a tuple of {len(value)}")
        return value[0]
    return value


def _features(feature_mask: Any, n: int, c: int, h: int, w: int) -> Tensor | None:
    """A Captum feature mask (broadcastable to ``(N, C, H, W)``, equal over channels) →
    ``(H, W)`` or ``(N, H, W)`` ids ``0..G−1``, ranked in the mask's ascending id order."""
    if feature_mask is None:
        return None
    m = torch.as_tensor(feature_mask)
    if m.is_floating_point() or m.is_complex() or m.dtype == torch.bool:
        raise ValueError(f"feature_mask must hold integer feature ids, got dtype {m.dtype}")
    shape = tuple(m.shape)
    if m.dim() == 2:
        m = m.view(1, 1, *shape)
    elif m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4 or m.shape[0] not in (1, n) or m.shape[1] not in (1, c) or tuple(m.shape[2:]) != (h, w):
        raise ValueError(
            f"feature_mask has shape {shape}; inputs are {(n, c, h, w)}: give (H, W), (N, H, W) or "
            f"(1 or N, 1 or C, H, W) with H, W = {(h, w)}"
        )
    if m.shape[1] > 1:
        if not bool((m == m[:, :1]).all()):
            raise ValueError("feature_mask must give all channels of a pixel the same feature id")
        m = m[:, :1]
    m = m[:, 0].to(torch.int64)  # (1 or N, H, W)
    dense = torch.stack([torch.unique(row, return_inverse=True)[1] for row in m])
    if dense.shape[0] == 1:
        return dense[0]
    if all(torch.equal(dense[0], row) for row in dense[1:]):
        return dense[0]
    return dense


def _target(target: Any) -> Any:
    """Captum's target forms: None, an int, a list of ints or a tensor (0-d or ``(N,)``)."""
    if isinstance(target, (list, tuple)):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            raise ValueError("target as a list must hold one integer class per input (no tuples: outputs are (N, K))")
        return torch.tensor(target, dtype=torch.int64)
    return target


def _baseline(baselines: Any, n: int, c: int, h: int, w: int) -> Any:
    """Masking value for all inputs: Captum's ``(1 or N, C, H, W)`` form → ``(C, H, W)``
    (rows must be equal); scalars, ``(C,)`` and ``(C, H, W)`` pass through."""
    if not isinstance(baselines, Tensor) or baselines.dim() < 4:
        return baselines
    if baselines.dim() != 4 or baselines.shape[0] not in (1, n) or tuple(baselines.shape[1:]) != (c, h, w):
        raise ValueError(
            f"baselines has shape {tuple(baselines.shape)}; give a scalar, (C,), (C, H, W) or "
            f"(1 or N, C, H, W) for inputs of shape {(n, c, h, w)}"
        )
    if not all(torch.equal(baselines[0], b) for b in baselines[1:]):
        raise ValueError("baselines differ between inputs; backward selection masks all inputs with one baseline")
    return baselines[0]


class BackselectAttribution(_Base):  # type: ignore[misc,valid-type]
    """Backward selection's removal rank per feature, as a Captum-style attribution.

    Args:
        forward_func: an ``nn.Module`` in eval mode returning logits ``(B, K)``,
            or a :class:`~overinterp.models.Classifier` (inputs are then pixels in
            ``[0, 1]`` and the default baseline is the classifier's).
        method: the backward-selection method (default :class:`~overinterp.Exact`);
            :class:`~overinterp.Fast` for images of many features.
        batch_size: candidates per forward call.
        progress: show backward selection's progress bar.

    After :meth:`attribute`, ``last_trace`` holds the run's
    :class:`~overinterp.BackselectTrace` (order, log-odds, FindSIS).
    """

    def __init__(
        self,
        forward_func: Any,
        method: Method | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> None:
        if HAS_CAPTUM:
            super().__init__(forward_func)
        else:
            self.forward_func = forward_func
        self.method = method
        self.batch_size = batch_size
        self.progress = progress
        self.last_trace: BackselectTrace | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        baselines: float | Sequence[float] | Tensor | tuple[Tensor] | None = None,
        target: int | Sequence[int] | Tensor | None = None,
        feature_mask: Tensor | tuple[Tensor] | None = None,
    ) -> Tensor | tuple[Tensor]:
        """Removal rank ``(k + 1) / P`` ∈ (0, 1] of each pixel's feature (1: removed last, most needed).

        Args:
            inputs: ``(N, C, H, W)`` floating images (or a 1-tuple of them), on
                the model's device.
            baselines: masking value in the inputs' space: a scalar, ``(C,)``,
                ``(C, H, W)`` or ``(1 or N, C, H, W)`` with equal rows (one baseline
                masks all inputs); default: the Classifier's baseline, else 0.
            target: class per input: an int, a list of ``N`` ints or a tensor
                (0-d or ``(N,)``); default: the predicted class.
            feature_mask: integer feature id per pixel, broadcastable to the
                inputs and equal over channels: ``(H, W)``, ``(1 or N, H, W)`` or
                ``(1 or N, 1 or C, H, W)``; any ids, ranked as features in
                ascending id order (ties in score go to the lowest id). Default:
                one feature per pixel.

        Returns:
            ``(N, C, H, W)`` in the inputs' dtype and device (a 1-tuple when
            ``inputs`` was one).
        """
        as_tuple = isinstance(inputs, tuple)
        x = _one_tensor(inputs, "inputs")
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"inputs must be a tensor (N, C, H, W), got {shape}")
        n, c, h, w = x.shape
        features = _features(_one_tensor(feature_mask, "feature_mask"), n, c, h, w)
        trace = backselect(
            self.forward_func,
            x,
            _target(target),
            method=self.method,
            mask_value=_baseline(_one_tensor(baselines, "baselines"), n, c, h, w),
            features=features,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        self.last_trace = trace
        out = rank_map(trace, x.dtype).to(x.device)
        return (out,) if as_tuple else out
