"""Ensembles: the mean of the members' logits, as a :class:`~overinterp.Classifier`.

An :class:`Ensemble` takes pixels in ``[0, 1]`` like any Classifier; each
member applies its *own* preprocessing to them, so members trained with
different normalisations can be combined. Masking (SIS, backward selection)
happens in pixel space with the ensemble's baseline, which is the members'
common baseline: members whose baselines differ (e.g. ImageNet vs CIFAR-10
mean pixel) are refused unless ``baseline=`` chooses one explicitly.

An ensemble is defined by a small JSON file::

    {
      "format": "overinterp-ensemble", "format_version": 1,
      "name": "resnet18x5",
      "members": [
        "resnet18-seed0/model.pt",                       # own-format checkpoints …
        {"checkpoint": "resnet20-cifar10.th",            # … or third-party ones, with
         "arch": "resnet20", "preprocessing": "imagenet"} #    their architecture and normalisation
      ],
      "baseline": null                                   # optional: pixel-space masking value
    }

Relative paths are relative to the JSON file. A file written by :func:`save_ensemble` also
carries ``content_sha256`` (the hash of the rest, :func:`overinterp._atomic.seal`), checked on
load; a hand-written file without it is read as it is (its members are checked checkpoints).
:func:`save_ensemble` writes one,
:func:`load_ensemble` reads one, :func:`load_model` takes either a registry
name (+ checkpoint) or an ensemble file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from overinterp._atomic import SEAL_KEY, atomic_write_text, check_seal, seal
from overinterp.models.classifier import Classifier

__all__ = ["Ensemble", "MeanLogits", "load_ensemble", "save_ensemble", "ENSEMBLE_FORMAT", "ENSEMBLE_FORMAT_VERSION"]

ENSEMBLE_FORMAT = "overinterp-ensemble"
ENSEMBLE_FORMAT_VERSION = 1


class MeanLogits(nn.Module):
    """``mean_k member_k(x)``: each member maps pixels to logits ``(N, K)``."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)


def _as_chw(b: Tensor) -> Tensor:
    """A baseline (scalar, ``(C,)`` or ``(C, H, W)``) in a shape that broadcasts against the others."""
    b = b.detach().float().cpu()
    if b.dim() == 0:
        return b.view(1, 1, 1)
    if b.dim() == 1:
        return b.view(-1, 1, 1)
    return b


class Ensemble(Classifier):
    """Mean of the members' logits; a Classifier on pixels in ``[0, 1]``.

    Args:
        members: Classifiers with the same number of classes (each keeps its own
            preprocessing).
        baseline: pixel-space masking value; default: the members' common baseline.
        name: display name (results tables, traces).

    Raises:
        TypeError: a member is not a Classifier.
        ValueError: no members, different numbers of classes, or different
            baselines without ``baseline=``.
    """

    combine = "mean_logits"

    def __init__(
        self,
        members: Sequence[Classifier],
        baseline: float | Sequence[float] | Tensor | None = None,
        *,
        name: str | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for i, m in enumerate(members):
            if not isinstance(m, Classifier):
                raise TypeError(
                    f"ensemble member {i} is a {type(m).__name__}, not an overinterp Classifier: members "
                    "must take pixels in [0, 1] and carry their preprocessing (see create_model)"
                )
        counts = {getattr(m, "num_classes", None) for m in members} - {None}
        if len(counts) > 1:
            raise ValueError(f"ensemble members have different numbers of classes: {sorted(counts)}")
        if baseline is None:
            baseline = self._common_baseline(members, sources)
        names = [m.class_names for m in members if m.class_names is not None]
        super().__init__(
            MeanLogits(members),
            preprocessing=None,
            baseline=baseline,
            name=name or f"ensemble({len(members)})",
            class_names=names[0] if names else None,
        )
        self.sources = list(sources) if sources is not None else None
        if counts:
            self.num_classes = counts.pop()
        self.eval()

    @property
    def members(self) -> nn.ModuleList:
        return self.network.members

    def __len__(self) -> int:
        return len(self.members)

    @staticmethod
    def _common_baseline(members: Sequence[Classifier], sources: Sequence[str] | None) -> Tensor:
        ref = members[0].baseline.detach().float().cpu()
        for m in members[1:]:
            try:
                a, b = torch.broadcast_tensors(_as_chw(ref), _as_chw(m.baseline))
                same = torch.allclose(a, b, atol=1e-6)
            except RuntimeError:
                same = False
            if not same:
                labels = sources if sources is not None else [x.name for x in members]
                shown = "; ".join(
                    f"{lab}: {_short(x.baseline)} ({_describe_pre(x)})" for lab, x in zip(labels, members)
                )
                raise ValueError(
                    "ensemble members mask with different baselines in pixel space — " + shown + ". "
                    "Masking must use one value for the whole ensemble (SIS masks pixels before any "
                    "member sees them); pass baseline= (e.g. 0, or one member's mean pixel) to choose it"
                )
        return ref

    def preprocessing_config(self) -> dict[str, Any]:
        """The members' preprocessing (each applies its own); for fingerprints and records."""
        return {
            "type": "ensemble",
            "combine": self.combine,
            "members": [m.preprocessing_config() for m in self.members],
        }


def _short(t: Tensor) -> str:
    values = t.detach().cpu().flatten().tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in values[:3]) + (", …" if len(values) > 3 else "") + "]"


def _describe_pre(m: Classifier) -> str:
    try:
        c = m.preprocessing_config()
    except TypeError:
        return type(m.preprocessing).__name__
    if c.get("type") == "normalize":
        return "normalize mean " + _short(torch.tensor(c["mean"]))
    return c.get("type", "?")


# --------------------------------------------------------------------------- files


def _member_spec(entry: Any, index: int, source: Path) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"checkpoint": entry}
    if isinstance(entry, Mapping) and isinstance(entry.get("checkpoint"), str):
        unknown = set(entry) - {"checkpoint", "arch", "preprocessing", "num_classes", "arch_kwargs"}
        if unknown:
            raise ValueError(f"ensemble file {source}: member {index} has unknown fields {sorted(unknown)}")
        return dict(entry)
    raise ValueError(
        f"ensemble file {source}: member {index} must be a checkpoint path or an object with "
        f"'checkpoint' (and optionally 'arch', 'preprocessing', 'num_classes'), got {entry!r}"
    )


def load_ensemble(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Ensemble:
    """Build the :class:`Ensemble` an ensemble JSON file describes (in eval mode).

    Raises:
        FileNotFoundError: the file, or a member checkpoint, does not exist (named).
        ValueError: malformed file, a member that does not load (named), or
            mixed baselines without ``"baseline"`` in the file.
    """
    from overinterp.models import create_model  # late: models/__init__ imports this module

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ensemble file not found: {p}")
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"ensemble file {p} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("format") != ENSEMBLE_FORMAT:
        raise ValueError(f'{p} is not an overinterp ensemble file (needs "format": "{ENSEMBLE_FORMAT}")')
    if SEAL_KEY in spec:
        spec = check_seal(spec, f"ensemble file {p}", required=True)
    version = spec.get("format_version")
    if not isinstance(version, int) or version < 1 or version > ENSEMBLE_FORMAT_VERSION:
        raise ValueError(f"ensemble file {p}: unsupported format_version {version!r} (this overinterp reads 1)")
    if spec.get("combine", "mean_logits") != "mean_logits":
        raise ValueError(f"ensemble file {p}: combine must be 'mean_logits', got {spec.get('combine')!r}")
    entries = spec.get("members")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"ensemble file {p}: 'members' must be a non-empty list")
    members, sources = [], []
    for i, entry in enumerate(entries):
        m = _member_spec(entry, i, p)
        ckpt = Path(m["checkpoint"]).expanduser()
        if not ckpt.is_absolute():
            ckpt = p.parent / ckpt
        if not ckpt.exists():
            raise FileNotFoundError(f"ensemble file {p}: member {i} checkpoint not found: {ckpt}")
        try:
            model = create_model(
                m.get("arch"),
                num_classes=m.get("num_classes"),
                checkpoint=ckpt,
                preprocessing=m.get("preprocessing"),
                **dict(m.get("arch_kwargs") or {}),
            )
        except ValueError as exc:
            raise ValueError(f"ensemble file {p}: member {i} ({ckpt}): {exc}") from exc
        members.append(model)
        sources.append(str(ckpt))
    ensemble = Ensemble(members, spec.get("baseline"), name=spec.get("name") or p.stem, sources=sources)
    ensemble.checkpoint = str(p)
    ensemble.record_source(p)
    if device is not None:
        ensemble.to(device)
    return ensemble.eval()


def save_ensemble(
    path: str | os.PathLike[str],
    members: Sequence[str | os.PathLike[str] | Mapping[str, Any]],
    *,
    name: str | None = None,
    baseline: float | Sequence[float] | None = None,
    relative: bool = True,
) -> Path:
    """Write an ensemble JSON file (atomically) listing member checkpoints.

    Paths are stored relative to the file's folder when ``relative`` (and possible).
    """
    target = Path(path)
    out_members: list[Any] = []
    for entry in members:
        m = dict(entry) if isinstance(entry, Mapping) else {"checkpoint": os.fspath(entry)}
        ckpt = Path(m["checkpoint"])
        if relative:
            try:
                m["checkpoint"] = os.path.relpath(ckpt.resolve(), target.parent.resolve())
            except ValueError:  # another drive (Windows)
                m["checkpoint"] = str(ckpt.resolve())
        out_members.append(m["checkpoint"] if set(m) == {"checkpoint"} else m)
    spec = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "name": name or target.stem,
        "combine": "mean_logits",
        "members": out_members,
    }
    if baseline is not None:
        spec["baseline"] = baseline
    atomic_write_text(target, json.dumps(seal(spec), indent=2) + "\n")
    return target
