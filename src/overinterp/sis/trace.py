"""`BackselectTrace`: the one versioned result format of every backward-selection method.

Per image ``i`` (``P_i`` features):

* ``order[i]`` — feature ids, first removed first (``P_i`` of them);
* ``logodds[i, k]`` — the target's log-odds after removing ``order[i, :k+1]``
  (float32; NaN where a method did not evaluate that prefix);
* ``evaluated[i, k]`` — whether that prefix was evaluated;
* ``target[i]``, ``full_logodds[i]`` (the unmasked image), ``num_features[i]``.

Plus the method and its parameters, the image shape, the baseline, the feature
map (``None`` = one feature per pixel), optional true labels and metadata, and,
for gradient-screened methods, the screening diagnostic ``screen_rank`` /
``screen_width`` (``(N, Pmax)`` int32, −1 where a step was not screened): the rank
of each step's exact best in the gradient screen and the screen's width
(``meta["screening"]`` summarises it per image: ``steps`` screened and
``bottom_quarter_steps`` whose exact best came from the screen's last quarter or
from outside it; ``overinterp.analysis.faithfulness.screening_report`` reads it).
Internally rows are padded to ``Pmax`` (order −1, log-odds NaN); ``order`` and
``logodds`` are dense ``(N, P)`` tensors when all images share ``P``.

Files: one ``torch.save`` dict, written atomically, read back with
``weights_only=True``. ``TRACE_VERSION`` changes whenever the layout does.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from overinterp._atomic import atomic_torch_save, check_seal, seal
from overinterp.sis._inputs import batched_logodds, check_images, prepare_model
from overinterp.sis.features import FeatureMap, resolve_features
from overinterp.sis.scoring import logit

__all__ = ["BackselectTrace", "SISResult", "TRACE_FORMAT", "TRACE_VERSION", "atomic_save", "concat_traces"]

TRACE_FORMAT = "overinterp-backselect-trace"
TRACE_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written."""
    return atomic_torch_save(obj, path)


@dataclass
class SISResult(Sequence[Tensor | None]):
    """SIS of each image: ``result[i]`` is a LongTensor of feature ids (in the
    order they would be added back: last removed first) or ``None`` where the
    full image is below the threshold. It is empty (``numel() == 0``) only with
    ``find_sis(allow_empty=True)``, where the fully masked image already reaches τ.

    Attributes:
        threshold: τ.
        logodds: ``(N,)`` float64 target log-odds of each SIS alone (NaN where
            ``None``); measured by a plain forward pass when verified, else
            read from the trace.
        verified: whether every SIS was re-checked with the model.
        extended: how many SIS fell just short on re-check (float noise) and
            were extended along the trace until they passed.
    """

    sis: list[Tensor | None]
    threshold: float
    logodds: Tensor
    verified: bool
    extended: int = 0

    def __len__(self) -> int:
        return len(self.sis)

    def __getitem__(self, i: int) -> Tensor | None:  # type: ignore[override]
        return self.sis[i]

    def __iter__(self) -> Iterator[Tensor | None]:
        return iter(self.sis)

    @property
    def sizes(self) -> list[int | None]:
        """Number of features of each SIS (``None`` where there is none)."""
        return [None if s is None else int(s.numel()) for s in self.sis]

    @property
    def confidence(self) -> Tensor:
        """``(N,)`` target probability of each SIS alone (NaN where ``None``)."""
        return torch.sigmoid(self.logodds)


@dataclass
class BackselectTrace:
    """Result of :func:`overinterp.sis.backselect`; see the module docstring."""

    order_padded: Tensor
    logodds_padded: Tensor
    evaluated: Tensor
    num_features: Tensor
    target: Tensor
    full_logodds: Tensor
    method: dict[str, Any]
    image_shape: tuple[int, int, int]
    baseline: Tensor
    features: Tensor | None = None
    labels: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    screen_rank: Tensor | None = None
    screen_width: Tensor | None = None

    # ---- shape helpers -------------------------------------------------
    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def uniform(self) -> bool:
        """True when every image has the same number of features ``P``."""
        return bool((self.num_features == self.num_features[0]).all()) if len(self) else True

    @property
    def P(self) -> int | Tensor:
        """``P`` when shared by all images, else the ``(N,)`` counts."""
        return int(self.num_features[0]) if self.uniform else self.num_features

    def _dense_or_rows(self, t: Tensor) -> Tensor | list[Tensor]:
        if self.uniform:
            return t[:, : self.P]  # type: ignore[misc]
        return [t[i, : int(k)] for i, k in enumerate(self.num_features)]

    @property
    def order(self) -> Tensor | list[Tensor]:
        """Removal order: ``(N, P)`` int64, or a list of ``(P_i,)`` when P differs."""
        return self._dense_or_rows(self.order_padded)

    @property
    def logodds(self) -> Tensor | list[Tensor]:
        """Target log-odds after each removal: ``(N, P)`` float32 (or a list)."""
        return self._dense_or_rows(self.logodds_padded)

    @property
    def probability(self) -> Tensor | list[Tensor]:
        """Target probability after each removal (sigmoid of the log-odds; saturates in float32)."""
        p = torch.sigmoid(self.logodds_padded.double())
        return self._dense_or_rows(p)

    def feature_map(self) -> FeatureMap:
        c, h, w = self.image_shape
        return resolve_features(self.features, len(self), h, w, torch.device("cpu"))

    # ---- FindSIS -------------------------------------------------------
    def _prefix_values(self) -> tuple[Tensor, Tensor]:
        """``(N, Pmax)`` value of keeping ``order[j:]`` (j = 0 is the full image) and validity."""
        n, pmax = self.order_padded.shape
        values = torch.cat([self.full_logodds.double().view(-1, 1), self.logodds_padded[:, : pmax - 1].double()], 1)
        ok = torch.cat([torch.ones(n, 1, dtype=torch.bool), self.evaluated[:, : pmax - 1]], 1)
        ok &= torch.arange(pmax).view(1, -1) < self.num_features.view(-1, 1)
        return values, ok

    def find_sis(
        self,
        threshold: float,
        model: Callable[[Tensor], Tensor] | None = None,
        images: Tensor | None = None,
        *,
        batch_size: int = 256,
        allow_empty: bool = False,
    ) -> SISResult:
        """FindSIS on every image: walk back from the last-removed feature, adding
        features until the target probability reaches ``threshold``.

        A probability ``p ≥ τ`` is tested as ``log-odds ≥ log(τ/(1−τ))`` (the
        same order, no float32 saturation). With ``model`` and ``images`` (the
        ones the trace was made from) every SIS is re-verified with a plain
        forward pass; one that falls just short (float noise between batch
        layouts) is extended along the trace until it passes, and counted in
        ``extended``.

        ``allow_empty`` (the original FindSIS): where the full image reaches τ and
        so does the fully masked one, the SIS is empty (``numel() == 0``, its
        log-odds the fully masked image's). Without it (the default) a SIS has at
        least one feature: the walk starts from the last-removed one. The empty
        set is taken from the trace's last evaluated prefix, or, when verifying,
        from a forward pass on the fully masked image (falling back to the usual
        walk where that one is short of τ).
        """
        thr = logit(threshold)
        values, ok = self._prefix_values()
        n, pmax = values.shape
        hit = ok & (values >= thr)
        # largest j with a hit; j = -1 when none (the full image is below τ)
        idx = torch.arange(pmax).view(1, -1).expand(n, pmax)
        start = torch.where(hit, idx, torch.full_like(idx, -1)).max(dim=1).values
        start = torch.where(hit[:, 0], start, torch.full_like(start, -1))  # f(x) < τ: no SIS
        stored = values.gather(1, start.clamp(min=0).view(-1, 1)).squeeze(1)
        if allow_empty and model is None and images is None:
            # the value of keeping nothing: the log-odds after the last removal, where evaluated
            last = (self.num_features - 1).clamp(min=0).view(-1, 1)
            empty_value = self.logodds_padded.double().gather(1, last).squeeze(1)
            empty_ok = self.evaluated.gather(1, last).squeeze(1) & (self.num_features > 0)
            empty = (start >= 0) & empty_ok & (empty_value >= thr)
            start = torch.where(empty, self.num_features, start)
            stored = torch.where(empty, empty_value, stored)
        starts = start.tolist()
        measured = torch.where(start >= 0, stored, torch.full_like(stored, float("nan")))
        if model is None and images is None:
            sis = [
                None if j < 0 else self.order_padded[i, j : int(self.num_features[i])].clone()
                for i, j in enumerate(starts)
            ]
            return SISResult(sis, float(threshold), measured, verified=False)
        if model is None or images is None:
            raise ValueError("verification needs both model and images")
        return self._verify(threshold, thr, starts, model, images, batch_size, allow_empty)

    def _verify(
        self,
        threshold: float,
        thr: float,
        starts: list[int],
        model: Callable[[Tensor], Tensor],
        images: Tensor,
        batch_size: int,
        allow_empty: bool = False,
    ) -> SISResult:
        forward = prepare_model(model)
        images = check_images(images, model)
        if images.shape[0] != len(self) or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"images have shape {tuple(images.shape)}, the trace was made from "
                f"{(len(self),) + tuple(self.image_shape)}"
            )
        device = images.device
        base = self.baseline.to(device=device, dtype=images.dtype)
        groups = self.feature_map().groups.to(device)
        target = self.target.to(device)
        nf = self.num_features.tolist()
        starts = list(starts)
        result = torch.full((len(self),), float("nan"), dtype=torch.float64)
        extended = 0
        todo = [i for i, j in enumerate(starts) if j >= 0]
        if allow_empty and todo:  # the original FindSIS: is the fully masked image already sufficient?
            sel = torch.tensor(todo, device=device)
            masked = torch.zeros_like(images[sel]) + base  # every feature masked
            lo = batched_logodds(forward, masked, target[sel], batch_size).cpu()
            for r, i in enumerate(todo):
                if float(lo[r]) >= thr:
                    starts[i], result[i] = nf[i], float(lo[r])
            todo = [i for i in todo if starts[i] < nf[i]]
        was_extended = set()
        while todo:
            keep = torch.zeros(len(todo), self.order_padded.shape[1], dtype=torch.bool)
            for r, i in enumerate(todo):
                keep[r, self.order_padded[i, starts[i] : nf[i]]] = True
            keep = keep.to(device)
            sel = torch.tensor(todo, device=device)
            pix = keep.gather(1, groups[sel].flatten(1)).view(len(todo), 1, *images.shape[2:])
            x = torch.where(pix, images[sel], base)
            lo = batched_logodds(forward, x, target[sel], batch_size).cpu()
            retry = []
            for r, i in enumerate(todo):
                if float(lo[r]) >= thr:
                    result[i] = lo[r]
                elif starts[i] > 0:
                    starts[i] -= 1  # add the next feature back along the trace
                    was_extended.add(i)
                    retry.append(i)
                else:
                    starts[i] = -1  # even the full image is short of τ on re-check
            todo = retry
        extended = len([i for i in was_extended if starts[i] >= 0])
        sis = [None if j < 0 else self.order_padded[i, j : nf[i]].clone() for i, j in enumerate(starts)]
        return SISResult(sis, float(threshold), result, verified=True, extended=extended)

    # ---- masks ---------------------------------------------------------
    def features_to_pixels(self, keep: Tensor) -> Tensor:
        """``(N, Pmax)`` bool over features → ``(N, 1, H, W)`` bool over pixels."""
        c, h, w = self.image_shape
        groups = self.feature_map().groups
        return keep.gather(1, groups.flatten(1)).view(len(self), 1, h, w)

    def keep_mask(self, fraction: float) -> Tensor:
        """``(N, 1, H, W)`` bool: the last-removed ``ceil(fraction·P)`` features (52 of 1,024 at 5%)."""
        if not (0.0 <= float(fraction) <= 1.0):
            raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
        n, pmax = self.order_padded.shape
        keep = torch.zeros(n, pmax, dtype=torch.bool)
        for i, p in enumerate(self.num_features.tolist()):
            k = min(p, math.ceil(fraction * p - 1e-9))
            if k:
                keep[i, self.order_padded[i, p - k : p]] = True
        return self.features_to_pixels(keep)

    def sis_mask(self, sis: SISResult | Sequence[Tensor | None]) -> Tensor:
        """``(N, 1, H, W)`` bool pixels of each image's SIS (all False where ``None``)."""
        keep = torch.zeros(self.order_padded.shape, dtype=torch.bool)
        for i, s in enumerate(sis):
            if s is not None:
                keep[i, s] = True
        return self.features_to_pixels(keep)

    # ---- files ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "order": self.order_padded.cpu(),
            "logodds": self.logodds_padded.cpu().float(),
            "evaluated": self.evaluated.cpu(),
            "num_features": self.num_features.cpu(),
            "target": self.target.cpu(),
            "full_logodds": self.full_logodds.cpu().float(),
            "method": self.method,
            "image_shape": list(self.image_shape),
            "baseline": self.baseline.cpu().float(),
            "features": None if self.features is None else self.features.cpu(),
            "labels": None if self.labels is None else self.labels.cpu(),
            "meta": self.meta,
            "screen_rank": None if self.screen_rank is None else self.screen_rank.cpu(),
            "screen_width": None if self.screen_width is None else self.screen_width.cpu(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace to ``path`` atomically (temp file + rename), sealed with its content's
        sha256 (:func:`overinterp._atomic.seal`), which :meth:`load` checks."""
        return atomic_save(seal(self.to_dict()), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "trace") -> "BackselectTrace":
        if not isinstance(d, dict) or d.get("format") != TRACE_FORMAT:
            raise ValueError(f"{source} is not an overinterp backselect trace")
        version = d.get("version")
        if not isinstance(version, int) or version > TRACE_VERSION or version < 1:
            raise ValueError(
                f"{source} has trace format version {version!r}; this overinterp reads versions 1..{TRACE_VERSION}"
            )
        return cls(
            order_padded=d["order"],
            logodds_padded=d["logodds"],
            evaluated=d["evaluated"],
            num_features=d["num_features"],
            target=d["target"],
            full_logodds=d["full_logodds"],
            method=d["method"],
            image_shape=tuple(d["image_shape"]),  # type: ignore[arg-type]
            baseline=d["baseline"],
            features=d.get("features"),
            labels=d.get("labels"),
            meta=d.get("meta") or {},
            screen_rank=d.get("screen_rank"),
            screen_width=d.get("screen_width"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BackselectTrace":
        """Read a trace written by :meth:`save`.

        Raises:
            IntegrityError: (a ``ValueError``) the content does not match its sha256 (corrupt file);
                a trace written before seals loads with a warning that it cannot be checked.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trace file at {path}")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means unreadable
            raise ValueError(f"cannot read trace file {path}: {exc}") from exc
        version = d.get("version") if isinstance(d, dict) and d.get("format") == TRACE_FORMAT else None
        if isinstance(version, int) and 1 <= version <= TRACE_VERSION:  # others: refused by from_dict
            d = check_seal(d, f"trace file {path}", required=False)
        return cls.from_dict(d, source=str(path))

    def to_cpu(self) -> "BackselectTrace":
        d = self.to_dict()
        return BackselectTrace.from_dict(d)

    def select(self, rows: Sequence[int]) -> "BackselectTrace":
        """The trace of images ``rows`` (in that order): every per-image tensor and the screening
        diagnostic's per-image lists (``meta["screening"]``) selected alike; a shared ``(H, W)``
        feature map stays, and the rest of ``meta`` is copied as it is."""
        idx = torch.as_tensor(list(rows), dtype=torch.int64)
        feats = self.features
        if feats is not None and feats.dim() == 3:
            feats = feats[idx]
        meta = dict(self.meta)
        if isinstance(meta.get("screening"), dict):
            meta["screening"] = {k: [v[int(i)] for i in idx] for k, v in meta["screening"].items()}
        return dataclasses.replace(
            self,
            order_padded=self.order_padded[idx],
            logodds_padded=self.logodds_padded[idx],
            evaluated=self.evaluated[idx],
            num_features=self.num_features[idx],
            target=self.target[idx],
            full_logodds=self.full_logodds[idx],
            features=feats,
            labels=None if self.labels is None else self.labels[idx],
            meta=meta,
            screen_rank=None if self.screen_rank is None else self.screen_rank[idx],
            screen_width=None if self.screen_width is None else self.screen_width[idx],
        )


def concat_traces(traces: Sequence[BackselectTrace], meta: dict[str, Any] | None = None) -> BackselectTrace:
    """One trace over the images of ``traces`` in order (e.g. a dataset job's shards).

    All must share the method, image shape and baseline; padded arrays are
    re-padded to the largest ``P``. Per-image group maps are stacked; a shared
    ``(H, W)`` map must be the same in all.
    """
    if not traces:
        raise ValueError("no traces to concatenate")
    first = traces[0]
    for i, t in enumerate(traces[1:], 1):
        if t.method != first.method or tuple(t.image_shape) != tuple(first.image_shape):
            raise ValueError(f"trace {i} has another method or image shape than trace 0; refusing to mix them")
        if not torch.equal(t.baseline.float(), first.baseline.float()):
            raise ValueError(f"trace {i} has another masking baseline than trace 0; refusing to mix them")
    pmax = max(int(t.order_padded.shape[1]) for t in traces)

    def pad(x: Tensor, value: Any) -> Tensor:
        extra = pmax - x.shape[1]
        return x if extra == 0 else torch.cat([x, x.new_full((x.shape[0], extra), value)], 1)

    shared = [t.features for t in traces if t.features is not None and t.features.dim() == 2]
    if any(t.features is None for t in traces) and any(t.features is not None for t in traces):
        raise ValueError("some traces use pixel features and others group maps; refusing to mix them")
    if first.features is None:
        features = None
    elif len(shared) == len(traces) and all(torch.equal(f, shared[0]) for f in shared):
        features = shared[0]
    else:
        c, h, w = first.image_shape
        features = torch.cat([t.features.expand(len(t), h, w) if t.features.dim() == 2 else t.features for t in traces])  # type: ignore[union-attr]
    labels = None
    if all(t.labels is not None for t in traces):
        labels = torch.cat([t.labels for t in traces])  # type: ignore[misc]
    screen = [None, None]
    if all(t.screen_rank is not None and t.screen_width is not None for t in traces):
        screen = [torch.cat([pad(getattr(t, f), -1) for t in traces]) for f in ("screen_rank", "screen_width")]
    return BackselectTrace(
        order_padded=torch.cat([pad(t.order_padded, -1) for t in traces]),
        logodds_padded=torch.cat([pad(t.logodds_padded, float("nan")) for t in traces]),
        evaluated=torch.cat([pad(t.evaluated, False) for t in traces]),
        num_features=torch.cat([t.num_features for t in traces]),
        target=torch.cat([t.target for t in traces]),
        full_logodds=torch.cat([t.full_logodds for t in traces]),
        method=first.method,
        image_shape=first.image_shape,
        baseline=first.baseline,
        features=features,
        labels=labels,
        meta=_concat_meta(traces, meta),
        screen_rank=screen[0],
        screen_width=screen[1],
    )


def _concat_meta(traces: Sequence[BackselectTrace], meta: dict[str, Any] | None) -> dict[str, Any]:
    """The first trace's meta (or ``meta``); per-image entries (``screening``: lists, one value
    per image) are concatenated over the traces, or dropped when some trace lacks them."""
    out = dict(meta if meta is not None else traces[0].meta)
    if "screening" in out or meta is None:
        per = [t.meta.get("screening") for t in traces]
        if all(isinstance(p, dict) for p in per) and all(set(p) == set(per[0]) for p in per):
            out["screening"] = {k: [v for p, t in zip(per, traces) for v in p[k][: len(t)]] for k in per[0]}
        else:
            out.pop("screening", None)
    return out
