"""Study builder: a human classification benchmark from stored backward-selection traces.

A study (paper §3.4) is ``per_class`` test images per class (10 × 10 = 100 by
default). Each image is assigned to one model that classifies it correctly with
confidence ≥ ``min_confidence`` (0.99): ``target == label`` and
``sigmoid(full_logodds) ≥ 0.99``. Its nested pixel subsets (5%, 30%, 50% by
default: the last-removed ``ceil(f·P)`` features of that model's trace, so each
subset contains the smaller ones) are saved as PNGs, the masked pixels drawn in
neutral grey (or another :data:`~overinterp.analysis.MASK_STYLES` style).
Models are mixed in set proportions (the paper: about 35/35/30).

**Layout of a study folder**

* ``study.json`` — the manifest (:data:`STUDY_FORMAT`, version :data:`STUDY_VERSION`):
  study id, seed, classes, fractions, models (name, proportion, quota, source,
  eligible images per class) and the items: per image its model, label,
  dataset position and one stimulus per fraction. It holds the labels and is
  never served.
* ``images/<token>.png`` — one PNG per stimulus at the images' own resolution.
  Tokens are random (``secrets``): file names and URLs reveal neither the class
  nor which image it is, nor which stimuli show the same image.

Which images are chosen and which model each gets depend only on the seed and
the inputs; the tokens are fresh on every build.
"""

from __future__ import annotations

import io
import json
import math
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from overinterp._atomic import atomic_write_bytes, atomic_write_text
from overinterp.sis.trace import BackselectTrace

__all__ = [
    "STUDY_FORMAT",
    "STUDY_VERSION",
    "DEFAULT_FRACTIONS",
    "ModelSource",
    "source_from_files",
    "source_from_job",
    "eligible_mask",
    "build_study",
    "load_manifest",
    "subset_label",
]

STUDY_FORMAT = "overinterp-human-study"
STUDY_VERSION = 1
DEFAULT_FRACTIONS = (0.05, 0.30, 0.50)
MANIFEST = "study.json"


def subset_label(fraction: float) -> str:
    """``0.05`` → ``"bs5"``: the ``evaluate_on`` name of a backward-selection pixel subset."""
    return f"bs{round(100 * float(fraction), 6):g}"


@dataclass
class ModelSource:
    """One model's material for a study.

    Attributes:
        name: model name shown in the manifest and results (``resnet20`` …).
        trace: its backward-selection trace over ``images`` (same order).
        images: uint8 ``(N, 3, H, W)``.
        labels: int64 ``(N,)`` true classes.
        classes: class names in label order.
        dataset: where the images come from (``cifar10:test``, a file path …).
        positions: int64 ``(N,)`` dataset position of each image: the same
            ``(dataset, position)`` in two sources is the same image.
        source: free description for the manifest (paths).
    """

    name: str
    trace: BackselectTrace
    images: Tensor
    labels: Tensor
    classes: list[str]
    dataset: str
    positions: Tensor
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.trace)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"model {self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.images.shape[0] != n:
            raise ValueError(
                f"model {self.name}: the trace has {n} images but {self.images.shape[0]} images were given"
            )
        if tuple(self.images.shape[1:]) != tuple(self.trace.image_shape):
            raise ValueError(
                f"model {self.name}: images {tuple(self.images.shape[1:])} do not match the trace's "
                f"image shape {tuple(self.trace.image_shape)}"
            )
        self.labels = torch.as_tensor(self.labels).long().view(-1)
        self.positions = torch.as_tensor(self.positions).long().view(-1)
        if self.labels.shape[0] != n or self.positions.shape[0] != n:
            raise ValueError(
                f"model {self.name}: need {n} labels and positions, got {self.labels.shape[0]} "
                f"and {self.positions.shape[0]}"
            )
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"model {self.name}: labels outside 0..{len(self.classes) - 1} ({len(self.classes)} classes)"
            )
        if len(set(self.positions.tolist())) != n:
            raise ValueError(f"model {self.name}: the same dataset position appears twice")


def _to_uint8(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.contiguous()
    return (images.float().clamp(0, 1) * 255.0).round().to(torch.uint8).contiguous()


def _default_classes(labels: Tensor, trace: BackselectTrace) -> list[str]:
    from overinterp.data.base import CIFAR10_CLASSES

    names = trace.meta.get("classes") if isinstance(trace.meta, dict) else None
    if isinstance(names, (list, tuple)) and names:
        return [str(c) for c in names]
    k = int(labels.max()) + 1 if labels.numel() else 0
    if k <= len(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return [str(i) for i in range(k)]


def _merge_labels(name: str, trace: BackselectTrace, labels: Tensor | None) -> Tensor:
    if trace.labels is not None and labels is not None:
        if not torch.equal(trace.labels.long().view(-1), labels.long().view(-1)):
            raise ValueError(f"model {name}: the trace's labels differ from the images' labels")
    chosen = trace.labels if trace.labels is not None else labels
    if chosen is None:
        raise ValueError(f"model {name}: neither the trace nor the images carry labels")
    return chosen.long().view(-1)


def source_from_files(
    name: str,
    trace_path: str | Path,
    images: str | Path,
    *,
    classes: Sequence[str] | None = None,
) -> ModelSource:
    """A :class:`ModelSource` from a trace file and its images.

    ``images`` is an images file or folder (:func:`overinterp.data.load_images`)
    or a dataset spec ``NAME[:SPLIT][@ROOT]`` (:func:`overinterp.load_dataset`).
    The trace covers the first ``len(trace)`` images unless its ``meta`` has
    ``indices`` (dataset positions), as ``overinterp backselect --limit`` writes it.
    """
    trace = BackselectTrace.load(trace_path)
    n = len(trace)
    meta_idx = trace.meta.get("indices") if isinstance(trace.meta, dict) else None
    positions = torch.as_tensor(meta_idx).long().view(-1) if meta_idx is not None else torch.arange(n)
    if positions.shape[0] != n:
        raise ValueError(f"{trace_path}: meta['indices'] has {positions.shape[0]} entries for {n} images")
    path = Path(images)
    data_classes: list[str] | None = None
    if path.exists():
        from overinterp.data import load_images

        data = load_images(path)
        all_images, all_labels, data_classes = data.images, data.labels, data.classes
        dataset = str(trace.meta.get("dataset") or path)
    else:
        from overinterp.data import load_dataset

        ds = load_dataset(str(images), progress=False)
        all_images, all_labels, data_classes = ds.images, ds.labels, ds.classes
        dataset = str(ds.meta.get("key", images))
    if n and int(positions.max()) >= all_images.shape[0]:
        raise ValueError(f"{trace_path} needs image {int(positions.max())} but {images} has {all_images.shape[0]}")
    imgs = _to_uint8(all_images[positions])
    labels = _merge_labels(name, trace, None if all_labels is None else all_labels[positions])
    names = list(classes) if classes else (list(data_classes) if data_classes else _default_classes(labels, trace))
    return ModelSource(name, trace, imgs, labels, names, dataset, positions, source=f"{trace_path} + {images}")


def source_from_job(name: str, job_dir: str | Path, *, classes: Sequence[str] | None = None) -> ModelSource:
    """A :class:`ModelSource` from an ``overinterp backselect-dataset`` output folder
    (read with ``overinterp.jobs.load_job``: ``.trace``, ``.positions``, ``.load_images()``)."""
    try:
        from overinterp.jobs import load_job  # type: ignore[attr-defined]
    except ImportError as exc:  # the jobs module is optional in older installs
        raise ValueError(f"cannot read job folder {job_dir}: overinterp.jobs is not available ({exc})") from exc
    job = load_job(job_dir)
    trace = job.trace
    idx = getattr(job, "indices", None)
    positions = torch.as_tensor(idx if idx is not None else job.positions).long().view(-1)
    imgs = _to_uint8(torch.as_tensor(job.load_images()))
    labels = _merge_labels(name, trace, getattr(job, "labels", None))
    names = list(classes) if classes else list(getattr(job, "classes", None) or _default_classes(labels, trace))
    spec = getattr(job, "spec", None)
    dataset = str(getattr(spec, "dataset", None) or trace.meta.get("dataset") or job_dir)
    return ModelSource(name, trace, imgs, labels, names, dataset, positions, source=str(job_dir))


def eligible_mask(source: ModelSource, min_confidence: float = 0.99) -> Tensor:
    """``(N,)`` bool: the model predicts the true label with probability ≥ ``min_confidence``."""
    conf = torch.sigmoid(source.trace.full_logodds.double().view(-1))
    return (source.trace.target.long().view(-1) == source.labels) & (conf >= float(min_confidence))


def _quotas(total: int, proportions: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total`` in ``proportions`` (ties to the earlier model)."""
    s = float(sum(proportions))
    if s <= 0 or any(p < 0 for p in proportions):
        raise ValueError(f"proportions must be non-negative with a positive sum, got {list(proportions)}")
    exact = [total * p / s for p in proportions]
    q = [math.floor(e) for e in exact]
    rest = sorted(range(len(q)), key=lambda i: (-(exact[i] - q[i]), i))
    for i in rest[: total - sum(q)]:
        q[i] += 1
    return q


def _select(
    sources: Sequence[ModelSource],
    eligible: list[dict[int, list[int]]],
    quotas: list[int],
    num_classes: int,
    per_class: int,
    rng: random.Random,
    attempts: int = 500,
) -> list[tuple[int, int, int]]:
    """``(model index, row in that model's source, class)`` per chosen image; no image twice."""
    for _ in range(attempts):
        slots = [m for m, q in enumerate(quotas) for _ in range(q)]
        rng.shuffle(slots)
        used: set[tuple[str, int]] = set()
        chosen: list[tuple[int, int, int]] = []
        ok = True
        for k in range(num_classes):
            need = Counter(slots[k * per_class : (k + 1) * per_class])
            # scarcest model first, so it gets its pick before others take shared images
            for m in sorted(need, key=lambda m: (len(eligible[m].get(k, [])), m)):
                src = sources[m]
                free = [r for r in eligible[m].get(k, []) if (src.dataset, int(src.positions[r])) not in used]
                if len(free) < need[m]:
                    ok = False
                    break
                for r in rng.sample(free, need[m]):
                    used.add((src.dataset, int(src.positions[r])))
                    chosen.append((m, r, k))
            if not ok:
                break
        if ok:
            return chosen
    table = "; ".join(
        f"{s.name}: " + ", ".join(f"{k}:{len(eligible[m].get(k, []))}" for k in range(num_classes))
        for m, s in enumerate(sources)
    )
    raise ValueError(
        f"cannot pick {per_class} images per class with model quotas {quotas}: too few correctly classified, "
        f"confident images (eligible per class — {table})"
    )


def _png(pixels: Tensor) -> bytes:
    from PIL import Image

    arr = pixels.permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def build_study(
    sources: Sequence[ModelSource],
    out_dir: str | Path,
    *,
    name: str | None = None,
    per_class: int = 10,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    proportions: Sequence[float] | None = None,
    min_confidence: float = 0.99,
    mask_style: str = "grey",
    seed: int = 0,
    database_url: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build a study in ``out_dir`` and record it in the database; return the manifest.

    Args:
        sources: one :class:`ModelSource` per model (same classes, image size).
        per_class: images per class (the paper: 10, for 100 images).
        fractions: pixel-subset sizes, shown in increasing order (nested).
        proportions: share of images per model (default equal), e.g. ``(0.35, 0.35, 0.3)``.
        min_confidence: an image is eligible for a model that predicts its label
            with at least this probability.
        mask_style: how masked pixels are drawn (``grey``: 50% grey, ``checkerboard``).
        seed: chooses the images and models (tokens are random regardless).
        database_url: SQLAlchemy URL (default ``sqlite:///<out_dir>/study.sqlite``).
        force: replace an existing study in ``out_dir``.
    """
    from overinterp.analysis.display import masked_images
    from overinterp.human import db as dbm

    if not sources:
        raise ValueError("a study needs at least one model")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ, got {names}")
    classes = sources[0].classes
    shape = tuple(sources[0].trace.image_shape)
    for s in sources[1:]:
        if list(s.classes) != list(classes):
            raise ValueError(f"model {s.name} has classes {s.classes}, {sources[0].name} has {classes}")
        if tuple(s.trace.image_shape) != shape:
            raise ValueError(f"model {s.name} has images {tuple(s.trace.image_shape)}, {sources[0].name} has {shape}")
    fr = sorted(float(f) for f in fractions)
    if not fr or any(not (0.0 < f <= 1.0) for f in fr) or len(set(fr)) != len(fr):
        raise ValueError(f"fractions must be distinct values in (0, 1], got {list(fractions)}")
    if per_class < 1:
        raise ValueError(f"per_class must be ≥ 1, got {per_class}")
    if mask_style not in ("grey", "checkerboard"):
        raise ValueError(f"mask_style must be 'grey' or 'checkerboard', got {mask_style!r}")
    props = list(proportions) if proportions is not None else [1.0] * len(sources)
    if len(props) != len(sources):
        raise ValueError(f"{len(props)} proportions for {len(sources)} models")
    out = Path(out_dir)
    if (out / MANIFEST).exists() and not force:
        raise ValueError(f"{out} already holds a study; replace it with force=True")
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} is not empty; choose a new folder or start over with force=True")

    num_classes = len(classes)
    quotas = _quotas(per_class * num_classes, props)
    eligible: list[dict[int, list[int]]] = []
    for s in sources:
        ok = eligible_mask(s, min_confidence)
        per: dict[int, list[int]] = {}
        for r in torch.nonzero(ok).view(-1).tolist():
            per.setdefault(int(s.labels[r]), []).append(r)
        eligible.append(per)
    rng = random.Random(seed)
    chosen = _select(sources, eligible, quotas, num_classes, per_class, rng)

    # masks for the chosen rows of each model: nested by construction (last-removed features)
    masks: dict[tuple[int, float], Tensor] = {}
    for m, s in enumerate(sources):
        if any(c[0] == m for c in chosen):
            for f in fr:
                masks[(m, f)] = s.trace.keep_mask(f)

    images_dir = out / "images"
    if force and images_dir.exists():
        for old in images_dir.glob("*.png"):
            old.unlink()
    images_dir.mkdir(parents=True, exist_ok=True)
    order = list(range(len(chosen)))
    random.Random(seed + 1).shuffle(order)  # manifest order independent of class and model
    items, stimuli = [], []
    for i in order:
        m, r, k = chosen[i]
        s = sources[m]
        item_id = secrets.token_hex(16)
        conf = float(torch.sigmoid(s.trace.full_logodds[r].double()))
        entry: dict[str, Any] = {
            "item": item_id,
            "model": s.name,
            "label": k,
            "dataset": s.dataset,
            "position": int(s.positions[r]),
            "confidence": conf,
            "stimuli": {},
        }
        for b, f in enumerate(fr):
            keep = masks[(m, f)][r : r + 1]
            shown = masked_images(s.images[r : r + 1], keep, style=mask_style)
            pix = (shown[0] * 255.0).round().clamp(0, 255).to(torch.uint8)
            token = secrets.token_hex(16)
            rel = f"images/{token}.png"
            atomic_write_bytes(out / rel, _png(pix))
            entry["stimuli"][repr(f)] = token
            stimuli.append(
                {"id": token, "item": item_id, "fraction": f, "batch": b, "file": rel, "pixels_shown": int(keep.sum())}
            )
        items.append(entry)
    datasets = sorted({s.dataset for s in sources})
    manifest: dict[str, Any] = {
        "format": STUDY_FORMAT,
        "version": STUDY_VERSION,
        "study_id": secrets.token_hex(8),
        "name": name or out.resolve().name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": int(seed),
        "per_class": int(per_class),
        "fractions": fr,
        "min_confidence": float(min_confidence),
        "mask_style": mask_style,
        "classes": list(classes),
        "image_shape": list(shape),
        "dataset": datasets[0] if len(datasets) == 1 else ",".join(datasets),
        "models": [
            {
                "name": s.name,
                "proportion": props[m] / sum(props),
                "quota": quotas[m],
                "source": s.source,
                "dataset": s.dataset,
                "method": s.trace.method,
                "eligible_per_class": [len(eligible[m].get(k, [])) for k in range(num_classes)],
            }
            for m, s in enumerate(sources)
        ],
        "items": items,
        "stimuli": stimuli,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    engine = dbm.make_engine(database_url or dbm.default_database_url(out))
    try:
        dbm.register_study(engine, manifest)
    finally:
        engine.dispose()
    return manifest


def load_manifest(study_dir: str | Path) -> dict[str, Any]:
    """Read and check ``<study_dir>/study.json``."""
    path = Path(study_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no study at {study_dir} (expected {path})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != STUDY_FORMAT:
        raise ValueError(f"{path} is not an overinterp human study manifest")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > STUDY_VERSION:
        raise ValueError(
            f"{path} has study format version {manifest.get('version')!r}; this overinterp reads 1..{STUDY_VERSION}"
        )
    return manifest
