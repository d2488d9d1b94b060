"""The one entry point of backward selection, and the SIS collection built on it."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from overinterp.models.classifier import Classifier, resolve_baseline
from overinterp.models.predict import check_labels
from overinterp.sis._inputs import batched_logits, check_images, check_target, prepare_model
from overinterp.sis.features import resolve_features
from overinterp.sis.methods.base import Method, Problem
from overinterp.sis.methods.exact import Exact
from overinterp.sis.methods.registry import check_model_supports
from overinterp.sis.scoring import check_threshold, target_logodds
from overinterp.sis.trace import BackselectTrace

__all__ = ["backselect", "sis_collection", "SISCollection", "DEFAULT_BATCH_SIZE"]

#: Candidates per forward call. 64 gave the best CPU throughput of ResNet20 here
#: (bench/backselect.py: 3,396 images/s at 64 vs 1,924 at 256, channels_last, 2 threads);
#: raise it on a GPU.
DEFAULT_BATCH_SIZE = 64


def _software_meta(images: Tensor) -> dict[str, Any]:
    from overinterp import __version__

    return {
        "overinterp": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "dtype": str(images.dtype).replace("torch.", ""),
        "device": str(images.device),
        "threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _prepare(
    model: Any,
    images: Tensor,
    target: Any,
    mask_value: Any,
    features: Tensor | None,
    batch_size: int,
    labels: Tensor | None = None,
) -> tuple[Callable[[Tensor], Tensor], Tensor, Tensor, Any, Tensor]:
    """Validate every input before any work; ``labels`` (optional ``(N,)``) must be classes of the model."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    forward = prepare_model(model)
    images = check_images(images, model)
    n, c, h, w = images.shape
    base = resolve_baseline(mask_value, model, (c, h, w), images.dtype, images.device)
    fmap = resolve_features(features, n, h, w, images.device)
    logits = batched_logits(forward, images, batch_size)
    tgt = logits.argmax(1) if target is None else check_target(target, n, logits.shape[1], images.device)
    if labels is not None:
        lab = torch.as_tensor(labels)
        if lab.is_floating_point() or lab.dtype == torch.bool:
            raise TypeError(f"labels must hold integer class indices, got {lab.dtype}")
        lab = lab.flatten()
        if lab.shape[0] != n:
            raise ValueError(f"labels has {lab.shape[0]} entries for {n} images")
        check_labels(lab.to(torch.int64), logits.shape[1])
    return forward, images, base, fmap, tgt


def _run(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    base: Tensor,
    fmap: Any,
    tgt: Tensor,
    method: Method,
    batch_size: int,
    progress: bool,
    available: Tensor | None = None,
) -> BackselectTrace:
    problem = Problem(forward, images, base, tgt, fmap, available)
    start = problem.start_images()
    with torch.inference_mode():
        full = target_logodds(batched_logits(forward, start, batch_size), tgt)
    check_model_supports(method, forward)  # a forward-only model and a gradient method: refused before any work
    out = method.run(problem, batch_size=batch_size, progress=progress)
    c, h, w = images.shape[1:]
    return BackselectTrace(
        order_padded=out.order.cpu(),
        logodds_padded=out.logodds.cpu().float(),
        evaluated=out.evaluated.cpu(),
        num_features=out.num_features.cpu(),
        target=tgt.cpu(),
        full_logodds=full.cpu().float(),
        method=method.describe(),
        image_shape=(c, h, w),
        baseline=base.cpu().float(),
        features=None if fmap.is_pixels else (fmap.shared if fmap.shared is not None else fmap.groups).cpu(),
        meta={**_software_meta(images), **out.stats},
        screen_rank=None if out.screen_rank is None else out.screen_rank.cpu(),
        screen_width=None if out.screen_width is None else out.screen_width.cpu(),
    )


def backselect(
    model: Any,
    images: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    method: Method | None = None,
    mask_value: float | Sequence[float] | Tensor | None = None,
    features: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    labels: Tensor | None = None,
) -> BackselectTrace:
    """Backward selection on many images at once.

    Args:
        model: an ``nn.Module`` in eval mode (or callable) returning logits
            ``(B, K)``, or a :class:`Classifier` taking pixels in ``[0, 1]``.
        images: ``(N, C, H, W)`` (or one ``(C, H, W)``) floating images, on the
            model's device.
        target: class per image (int or ``(N,)``); default: the predicted class.
        method: :class:`Exact` (default) or another method.
        mask_value: baseline in the space the model takes: scalar, ``(C,)`` or
            ``(C, H, W)``; default: the Classifier's baseline, else 0.
        features: ``None`` (one feature per pixel, id = row·W + col) or an
            integer group map ``(H, W)`` / ``(N, H, W)`` with ids ``0..G−1``.
        batch_size: candidates per forward call.
        progress: show a progress bar with ETA.
        labels: optional ``(N,)`` true labels in ``[0, K)``, stored in the trace
            (refused before any work when outside the model's classes).

    Returns:
        A :class:`BackselectTrace` (on the CPU).
    """
    method = Exact() if method is None else method
    if not isinstance(method, Method):
        raise TypeError(f"method must be an overinterp method such as Exact(), got {type(method).__name__}")
    forward, images, base, fmap, tgt = _prepare(model, images, target, mask_value, features, batch_size, labels)
    trace = _run(forward, images, base, fmap, tgt, method, batch_size, progress)
    if labels is not None:
        trace.labels = torch.as_tensor(labels).to(torch.int64).flatten().cpu()
    if isinstance(model, Classifier):
        trace.meta["model"] = model.name
    return trace


@dataclass
class SISCollection(Sequence[list[Tensor]]):
    """Disjoint SIS of each image: ``collection[i]`` is a list of LongTensors of
    feature ids (first found first; empty where the image is below τ).

    ``extended`` counts SIS that were extended along their trace on re-check.
    """

    sis: list[list[Tensor]]
    threshold: float
    extended: int = 0

    def __len__(self) -> int:
        return len(self.sis)

    def __getitem__(self, i: int) -> list[Tensor]:  # type: ignore[override]
        return self.sis[i]

    def __iter__(self) -> Iterator[list[Tensor]]:
        return iter(self.sis)

    @property
    def counts(self) -> list[int]:
        return [len(s) for s in self.sis]


def sis_collection(
    model: Any,
    images: Tensor,
    threshold: float,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    method: Method | None = None,
    mask_value: float | Sequence[float] | Tensor | None = None,
    features: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    max_sis: int | None = None,
    allow_empty: bool = False,
) -> SISCollection:
    """SIScollection: each image's disjoint sufficient input subsets.

    Repeat on all images still active at once: backward-select the features not
    yet in any SIS (those are masked for good), take the SIS at ``threshold``
    (re-verified), until the remaining features alone fall below τ.

    ``allow_empty`` (the original pipeline, see :meth:`BackselectTrace.find_sis`):
    an image whose fully masked version already reaches τ gets one empty SIS and
    no more (every subset is then sufficient). Without it, its SIS have at least
    one feature each.
    """
    tau = check_threshold(threshold)
    method = Exact() if method is None else method
    forward, images, base, fmap, tgt = _prepare(model, images, target, mask_value, features, batch_size)
    n, pmax = images.shape[0], fmap.max_features
    ids = torch.arange(pmax, device=images.device).view(1, -1)
    available = ids < fmap.num_features.view(-1, 1)
    found: list[list[Tensor]] = [[] for _ in range(n)]
    active = list(range(n))
    extended = 0
    while active and (max_sis is None or len(found[active[0]]) < max_sis):
        sel = torch.tensor(active, device=images.device)
        sub_fmap = type(fmap)(fmap.groups[sel], fmap.num_features[sel], fmap.shared, fmap.is_pixels)
        avail = available[sel][:, : sub_fmap.max_features]  # the active images may have fewer features
        trace = _run(forward, images[sel], base, sub_fmap, tgt[sel], method, batch_size, progress, avail)
        res = trace.find_sis(tau, model, images[sel], batch_size=batch_size, allow_empty=allow_empty)
        extended += res.extended
        still = []
        for r, i in enumerate(active):
            s = res[r]
            if s is None:
                continue
            found[i].append(s)
            available[i, s.to(images.device)] = False
            if s.numel() and bool(available[i].any()) and (max_sis is None or len(found[i]) < max_sis):
                still.append(i)
        active = still
    return SISCollection(found, tau, extended)
