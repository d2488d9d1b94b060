"""SIS of a forward-only (black-box) model on photos, over pixel groups.

:func:`run_blackbox_sis` backward-selects over patches or superpixels of each
photo, finds one SIS per image at a fixed threshold ``τ`` or at ``ratio · f(x)``,
and writes ``trace.pt``, ``panels.png`` and ``summary.json`` into ``out_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from overinterp._atomic import atomic_write_text
from overinterp.errors import UserInputError
from overinterp.sis.methods import Method

__all__ = ["pixel_groups", "run_blackbox_sis"]


def pixel_groups(
    images: torch.Tensor, *, patch: int = 8, superpixels: int | None = None
) -> tuple[torch.Tensor | list[torch.Tensor], list[int]]:
    """Feature maps for ``images`` — ``patch``×``patch`` squares, or about ``superpixels``
    superpixels per image — and each image's feature count."""
    from overinterp.sis.features import patch_features
    from overinterp.sis.superpixels import superpixel_features

    if superpixels is not None:
        features = superpixel_features(images, superpixels)
        return features, [int(f.max()) + 1 for f in features]
    if patch < 1:
        raise UserInputError(f"must be ≥ 1, got {patch}", argument="patch")
    grid = patch_features(images.shape[2], images.shape[3], patch)
    return grid, [int(grid.max()) + 1] * len(images)


def run_blackbox_sis(
    model: Any,
    images: torch.Tensor,
    out_dir: str | Path,
    *,
    method: Method | Callable[[int], Method],
    image_names: Sequence[str] | None = None,
    patch: int = 8,
    superpixels: int | None = None,
    ratio: float = 0.9,
    threshold: float | None = None,
    batch_size: int = 64,
    model_source: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Backward selection and one SIS per image of a forward-only ``model``.

    Args:
        model: a classifier that counts its forward passes (``.calls``), e.g.
            :func:`~overinterp.models.tflite_classifier`; ``class_names`` label the rows.
        images: ``(N, C, H, W)`` pixels in ``[0, 1]`` at the model's input size.
        method: a method, or a function of the smallest feature count returning one
            (so that a block size can be checked against it).
        ratio, threshold: ``τ = ratio · f(x)`` per image, unless a fixed ``threshold`` is given.

    Returns the summary written to ``summary.json`` (one row per image under ``images``).
    """
    from overinterp.analysis.panels import save_sis_panels
    from overinterp.sis.backselect import backselect
    from overinterp.sis.relative import find_sis_relative

    names = [f"image {i}" for i in range(len(images))] if image_names is None else [str(n) for n in image_names]
    features, counts = pixel_groups(images, patch=patch, superpixels=superpixels)
    if not isinstance(method, Method):
        method = method(min(counts))
    calls0, t0 = model.calls, time.perf_counter()
    trace = backselect(model, images, method=method, features=features, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    if threshold is not None:
        res = trace.find_sis(threshold, model, images)
        taus = [threshold] * len(images)
    else:
        res = find_sis_relative(trace, ratio, model, images)
        taus = res.thresholds.tolist()
    passes = model.calls - calls0
    trace.meta.update({"images": names, "model": model_source})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trace.save(out / "trace.pt")
    class_names = getattr(model, "class_names", None)
    keep = trace.sis_mask(res)
    rows, titles = [], []
    for i, s in enumerate(res):
        t = int(trace.target[i])
        cls = class_names[t] if class_names else str(t)
        f = float(torch.sigmoid(trace.full_logodds[i].double()))
        size = None if s is None else int(s.numel())
        rows.append(
            {
                "image": names[i],
                "class": cls,
                "target": t,
                "confidence": f,
                "threshold": taus[i],
                "features": counts[i],
                "sis_features": size,
                "sis_fraction": None if s is None else float(keep[i].float().mean()),
                "sis_confidence": None if s is None else float(torch.sigmoid(res.logodds[i])),
            }
        )
        titles.append(f"{cls.split(',')[0][:18]}\nf={f:.2f}, SIS {size}/{counts[i]}")
    panels = save_sis_panels(out / "panels.png", images, keep, titles)
    summary = {
        "model": model_source,
        "method": method.describe(),
        "forward_passes": passes,
        "seconds": seconds,
        "ratio": None if threshold is not None else ratio,
        "threshold": threshold,
        "panels": [str(p) for p in panels],
        "images": rows,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary
