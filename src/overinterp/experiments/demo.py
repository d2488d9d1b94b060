"""The main job on its embedded default: does a classifier overinterpret a planted shortcut?

:func:`run_demo` (``overinterp demo`` / ``make demo``), offline, in about a minute on
two CPU cores:

1. draws the synthetic shortcut dataset (:mod:`overinterp.data.synthetic`): a training
   split and a test split whose planted pixels show the class colour on 95% of
   images, and a clean test split where they show a random class's colour;
2. trains a :class:`~overinterp.models.archs.small_cnn.SmallCNN` with the project's
   trainer (:func:`~overinterp.training.trainer.train_classifier`, recipe
   :data:`DEMO_RECIPE`), wrapped in a :class:`~overinterp.Classifier` that
   normalises with the training set's per-channel mean and std (so the masking
   baseline is the dataset's mean pixel);
3. compares accuracy on the shortcut and clean test splits: the drop is what the
   model owes to the shortcut;
4. runs exact backward selection on correctly and confidently classified
   shortcut-test images and finds their sufficient input subsets (SIS) at the
   threshold, each re-verified with the model;
5. measures where the SIS pixels fall — on the planted pixels, on the class shape,
   or on background — and how much more often they fall on the planted pixels than
   the planted area's share of the image (the *enrichment*);
6. writes ``summary.json`` and ``sis_heatmap.png`` to ``out_dir`` and prints a report;
7. leaves ``out_dir`` a run folder that ``overinterp report`` reads — the model as an
   overinterp checkpoint (``model.pt``), the shortcut-test images as a uint8 npz
   (``data/shortcut_test.npz``), the backward selection as a dataset job
   (``jobs/demo/``, the chosen images plus a few misclassified ones, so correct and
   incorrect predictions compare), accuracy rows in ``results.csv`` — and writes that
   report (``report/report.html``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from overinterp._atomic import atomic_write_bytes
from overinterp.data.base import LabeledImages
from overinterp.data.synthetic import ShortcutData, make_shortcut_dataset
from overinterp.models.classifier import Classifier
from overinterp.models.predict import predict_logits
from overinterp.training.evaluation import evaluate_accuracy
from overinterp.training.trainer import TrainConfig, train_classifier

__all__ = ["run_demo", "format_report", "DEMO_DEFAULTS", "DEMO_RECIPE", "demo_config"]

#: The embedded default, sized for ~1 minute on 2 CPU cores.
DEMO_DEFAULTS: dict[str, Any] = {
    "n_train": 4000,
    "n_test": 1000,
    "n_sis": 32,
    "threshold": 0.9,
    "shortcut_prob": 0.95,
    "size": 16,
    "num_classes": 4,
    "width": 16,
    "epochs": 8,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "train_batch_size": 128,
    "backselect_batch_size": 512,
    "n_examples": 6,
    "n_misclassified": 8,
}

#: The demo's training recipe for :func:`~overinterp.training.trainer.train_classifier`:
#: SGD with Nesterov momentum, weight decay on weights only, one epoch of linear
#: warm-up then cosine decay to 0, no augmentation, normalisation with the training
#: set's per-channel mean and std ("auto"). :func:`demo_config` fills in the
#: settings of :data:`DEMO_DEFAULTS` and the run's epochs and seed.
DEMO_RECIPE = TrainConfig(
    arch="smallcnn",
    arch_kwargs={"width": DEMO_DEFAULTS["width"]},
    preprocessing="auto",
    epochs=DEMO_DEFAULTS["epochs"],
    batch_size=DEMO_DEFAULTS["train_batch_size"],
    lr=DEMO_DEFAULTS["lr"],
    momentum=0.9,
    nesterov=True,
    weight_decay=DEMO_DEFAULTS["weight_decay"],
    decay_norm_and_bias=False,
    schedule="cosine",
    milestones=(),
    warmup_epochs=1.0,
    augment=False,
    recipe="demo",
)


def demo_config(epochs: int = DEMO_DEFAULTS["epochs"], seed: int = 0) -> TrainConfig:
    """:data:`DEMO_RECIPE` with ``epochs`` and ``seed``."""
    return dataclasses.replace(DEMO_RECIPE, epochs=epochs, seed=seed)


#: Grey shown for masked pixels in the figure (display only; masking uses the dataset mean).
_MASK_GREY = 0.5


# ---------------------------------------------------------------------------
# files


def _jsonable(x: Any) -> Any:
    """Plain JSON values: tensors/arrays to lists, non-finite floats to ``None``."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (Tensor, np.ndarray)):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


# ---------------------------------------------------------------------------
# analysis


def _split_seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for the train, shortcut-test and clean-test splits."""
    a, b, c = np.random.SeedSequence(seed).generate_state(3)
    return int(a), int(b), int(c)


def _probe_planted(model: Classifier, data: ShortcutData, batch_size: int = 512) -> dict[str, float]:
    """Two cheap probes of the planted pixels on the shortcut-test split.

    * ``planted_only_follows_planted``: with every pixel but the planted ones set to
      the baseline, how often the model predicts the class whose colour is planted;
    * ``planted_masked_accuracy``: accuracy with only the planted pixels set to the
      baseline.
    """
    keep = data.shortcut_mask  # (H, W) bool
    base = model.baseline.cpu()
    base = base.view(-1, 1, 1) if base.dim() == 1 else base
    only = torch.where(keep, data.images, base)  # (N, C, H, W)
    masked = torch.where(keep, base, data.images)
    only_pred = predict_logits(model, only, batch_size=batch_size).argmax(1)
    masked_pred = predict_logits(model, masked, batch_size=batch_size).argmax(1)
    n = max(1, len(data))
    return {
        "planted_only_follows_planted": int((only_pred == data.shortcut_class).sum()) / n,
        "planted_masked_accuracy": int((masked_pred == data.labels).sum()) / n,
    }


def _sis_statistics(
    sis: list[Tensor | None], data: ShortcutData, indices: Tensor
) -> tuple[dict[str, Any], list[dict[str, Any]], Tensor]:
    """Where the SIS pixels fall; per-image records; the ``(H, W)`` SIS frequency map."""
    h, w = data.shortcut_mask.shape
    planted = data.shortcut_mask.flatten()
    counts = torch.zeros(h * w)
    records: list[dict[str, Any]] = []
    on_planted = on_shape = total = found = hits = only_planted = 0
    for s, idx in zip(sis, indices.tolist()):
        rec: dict[str, Any] = {
            "test_index": idx,
            "label": int(data.labels[idx]),
            "planted_class": int(data.shortcut_class[idx]),
            "sis_size": None,
        }
        if s is not None:
            s = s.cpu().long()
            shape = data.shape_masks[idx].flatten()
            n_planted, n_shape = int(planted[s].sum()), int(shape[s].sum())
            counts[s] += 1
            found += 1
            total += s.numel()
            on_planted += n_planted
            on_shape += n_shape
            hits += n_planted > 0
            only_planted += n_planted == s.numel()
            rec.update(
                sis_size=int(s.numel()),
                on_planted=n_planted,
                on_shape=n_shape,
                on_background=int(s.numel()) - n_planted - n_shape,
                pixels=[[int(p) // w, int(p) % w] for p in s],
            )
        records.append(rec)

    share = float(planted.float().mean())
    frac_planted = on_planted / total if total else float("nan")
    per_image = [r["on_planted"] / r["sis_size"] for r in records if r["sis_size"]]
    stats = {
        "n_images": len(records),
        "n_with_sis": found,
        "sis_pixels_total": total,
        "mean_sis_size": total / found if found else float("nan"),
        "median_sis_size": float(np.median([r["sis_size"] for r in records if r["sis_size"] is not None]))
        if found
        else float("nan"),
        "mean_sis_fraction_of_image": (total / found) / (h * w) if found else float("nan"),
        # The headline: pooled over all SIS pixels.
        "fraction_on_planted": frac_planted,
        "fraction_on_shape": on_shape / total if total else float("nan"),
        "fraction_on_background": (total - on_planted - on_shape) / total if total else float("nan"),
        "planted_share_of_image": share,
        "enrichment": frac_planted / share if total else float("nan"),
        # The same ratio averaged per image (small SIS weigh as much as large ones).
        "enrichment_per_image_mean": float(np.mean(per_image)) / share if per_image else float("nan"),
        "images_with_planted_in_sis": hits / found if found else float("nan"),
        "images_with_sis_only_planted": only_planted / found if found else float("nan"),
    }
    freq = (counts / max(found, 1)).view(h, w)
    return stats, records, freq


# ---------------------------------------------------------------------------
# figure


def _pick_examples(records: list[dict[str, Any]], k: int) -> list[int]:
    """Positions (into ``records``) of up to ``k`` images with a SIS, one class at a time."""
    with_sis = [i for i, r in enumerate(records) if r["sis_size"] is not None]
    picked: list[int] = []
    while len(picked) < min(k, len(with_sis)):
        seen: set[int] = set()
        for i in with_sis:
            if i not in picked and records[i]["label"] not in seen and len(picked) < k:
                picked.append(i)
                seen.add(records[i]["label"])
    return picked


def _outline(ax: Any, pixels: list[tuple[int, int]], color: str, lw: float) -> None:
    from matplotlib.patches import Rectangle

    for r, c in pixels:
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=lw))


def _render_figure(
    freq: Tensor,
    data: ShortcutData,
    images: Tensor,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    n_examples: int,
) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    examples = _pick_examples(records, n_examples)
    cols = max(1, len(examples))
    fig = plt.figure(figsize=(4.2 + 1.7 * cols, 4.8), dpi=120)
    gs = GridSpec(2, 2 + cols, figure=fig, width_ratios=[2.2, 0.12] + [1] * cols, wspace=0.15, hspace=0.3)

    ax = fig.add_subplot(gs[:, 0])
    im = ax.imshow(freq.numpy(), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    _outline(ax, data.shortcut_pixels, "cyan", 2.0)
    ax.set_title(f"SIS pixel frequency ({summary['sis']['n_with_sis']} images)\ncyan: planted pixels", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cbar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.04)
    cbar.set_label("fraction of SIS containing the pixel", fontsize=8)
    cbar.ax.tick_params(labelsize=7)

    names = data.class_names
    for col, i in enumerate(examples):
        rec = records[i]
        img = images[i].permute(1, 2, 0).numpy()
        keep = np.zeros(img.shape[:2], dtype=bool)
        for r, c in rec["pixels"]:
            keep[r, c] = True
        sis_only = np.where(keep[..., None], img, _MASK_GREY)
        top, bottom = fig.add_subplot(gs[0, 2 + col]), fig.add_subplot(gs[1, 2 + col])
        top.imshow(img, interpolation="nearest")
        top.set_title(f"{names[rec['label']]}", fontsize=8)
        bottom.imshow(sis_only, interpolation="nearest")
        bottom.set_title(f"SIS: {rec['sis_size']} px, {rec['on_planted']} planted", fontsize=8)
        _outline(bottom, data.shortcut_pixels, "cyan", 0.8)
        for a in (top, bottom):
            a.set_xticks([])
            a.set_yticks([])
        if col == 0:
            top.set_ylabel("original", fontsize=8)
            bottom.set_ylabel("SIS only (rest masked)", fontsize=8)

    acc, sis = summary["accuracy"], summary["sis"]
    fig.suptitle(
        f"accuracy: shortcut test {100 * acc['shortcut_test']:.1f}%, clean test {100 * acc['clean_test']:.1f}%  |  "
        f"SIS pixels on planted: {100 * sis['fraction_on_planted']:.0f}% vs {100 * sis['planted_share_of_image']:.1f}% "
        f"of the image ({sis['enrichment']:.0f}× enrichment)",
        fontsize=10,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# report


def format_report(summary: dict[str, Any]) -> str:
    """A short human-readable account of ``summary`` (as written to ``summary.json``)."""
    acc, sis, probes, cfg = summary["accuracy"], summary["sis"], summary["probes"], summary["config"]
    drop = acc["shortcut_test"] - acc["clean_test"]

    def ok(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    def pct(v: Any) -> str:
        return f"{100 * v:.1f}%" if ok(v) else "n/a"

    def num(v: Any, unit: str = "") -> str:
        return f"{v:.1f}{unit}" if ok(v) else "n/a"

    lines = [
        "overinterp demo — a planted shortcut, found by sufficient input subsets",
        f"  data: {cfg['size']}x{cfg['size']} images, {cfg['num_classes']} classes "
        f"({', '.join(summary['class_names'])}); "
        f"{len(summary['shortcut_pixels'])} planted pixels at {summary['shortcut_pixels']} show the class colour "
        f"on {pct(cfg['shortcut_prob'])} of training images",
        f"  model: SmallCNN(width={cfg['width']}), {cfg['epochs']} epochs on {cfg['n_train']} images, "
        f"train accuracy {pct(acc['train'])}",
        f"  accuracy: shortcut test {pct(acc['shortcut_test'])}, clean test {pct(acc['clean_test'])} "
        f"(drop {100 * drop:.1f} points: the model's debt to the planted pixels)",
        f"  probes on the shortcut test: planted pixels alone (rest at the mean) -> prediction follows "
        f"the planted colour on {pct(probes['planted_only_follows_planted'])}; planted pixels masked -> "
        f"accuracy {pct(probes['planted_masked_accuracy'])}",
        f"  SIS at threshold {cfg['threshold']}: {sis['n_with_sis']} of {sis['n_images']} images "
        f"(correct, confidence >= threshold), mean size {num(sis['mean_sis_size'], ' px')} "
        f"({pct(sis['mean_sis_fraction_of_image'])} of the image), verified with the model",
        f"  where SIS pixels fall: planted {pct(sis['fraction_on_planted'])}, class shape "
        f"{pct(sis['fraction_on_shape'])}, background {pct(sis['fraction_on_background'])}",
        f"  the planted pixels are {pct(sis['planted_share_of_image'])} of the image: "
        f"enrichment {num(sis['enrichment'], 'x')} (per-image mean {num(sis['enrichment_per_image_mean'], 'x')}); "
        f"{pct(sis['images_with_planted_in_sis'])} of SIS contain a planted pixel, "
        f"{pct(sis['images_with_sis_only_planted'])} consist of planted pixels only",
        f"  runtime: {summary['timing']['total_s']:.1f} s",
        f"  summary: {summary['files']['summary']}",
        f"  figure:  {summary['files']['figure']}",
    ]
    if summary["files"].get("report"):
        lines.append(f"  report:  {summary['files']['report']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the run folder


def _save_run_inputs(out: Path, model: Classifier, test: ShortcutData, cfg: dict[str, Any]) -> tuple[Path, Path]:
    """``out/model.pt`` (overinterp checkpoint) and ``out/data/shortcut_test.npz`` (uint8 images, labels, classes)."""
    from overinterp.models import save_checkpoint

    ckpt = save_checkpoint(
        out / "model.pt",
        model,
        "smallcnn",
        arch_kwargs={"width": cfg["width"]},
        extra={"demo": {k: cfg[k] for k in ("seed", "n_train", "epochs")}},
    )
    images = (test.images * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    np.savez_compressed(
        buf, images=images, labels=test.labels.numpy().astype(np.int64), classes=np.asarray(test.class_names)
    )
    data_file = out / "data" / "shortcut_test.npz"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(data_file, buf.getvalue())
    return ckpt, data_file


def _run_sis_job(out: Path, ckpt: Path, data_file: Path, positions: Tensor, batch_size: int, progress: bool) -> Any:
    """Exact backward selection on ``positions`` of the test file, as a dataset job in ``out/jobs/demo``."""
    import shutil

    from overinterp.jobs import JobSpec, ModelSpec, load_job, run_job
    from overinterp.sis.methods import Exact

    job_dir = out / "jobs" / "demo"
    if job_dir.exists():  # the demo's own job from an earlier run: always recomputed
        shutil.rmtree(job_dir)
    spec = JobSpec(
        ModelSpec(checkpoint=str(ckpt)),
        dataset=str(data_file.resolve()),
        positions=tuple(positions.tolist()),
        method=Exact().describe(),
        shard_size=len(positions),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
    )
    run_job(spec, job_dir, progress=progress, log=(lambda msg: None) if not progress else None)
    return load_job(job_dir)


def _append_accuracy_rows(
    path: Path, model: Classifier, ckpt: Path, seed: int, evals: dict[str, dict[str, Any]]
) -> None:
    from overinterp.results import append_results, model_fingerprint

    fp = model_fingerprint(model)
    rows = [
        dict(
            experiment="demo",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp,
            checkpoint=str(ckpt),
            dataset=key,
            seed=seed,
            metric=metric,
            value=ev[src],
            n=ev.get("n"),
        )
        for key, ev in evals.items()
        for metric, src in (("accuracy", "accuracy"), ("mean_confidence", "mean_confidence"))
    ]
    append_results(path, rows)


# ---------------------------------------------------------------------------
# the job


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_train: int = DEMO_DEFAULTS["n_train"],
    n_test: int = DEMO_DEFAULTS["n_test"],
    n_sis: int = DEMO_DEFAULTS["n_sis"],
    threshold: float = DEMO_DEFAULTS["threshold"],
    epochs: int = DEMO_DEFAULTS["epochs"],
    device: str | torch.device = "cpu",
    progress: bool = True,
    verbose: bool = True,
    report: Callable[[Path, float], Path] | None = None,
) -> dict[str, Any]:
    """Train on the shortcut dataset, find SIS, measure how they use the shortcut.

    Writes ``summary.json``, ``sis_heatmap.png`` and the run folder (``model.pt``,
    ``data/``, ``jobs/demo/``, ``results.csv``; all atomically) into ``out_dir``,
    then, with ``report`` — a function ``(run folder, threshold) → report HTML path``
    such as :func:`overinterp.report.demo_report`, which the command line passes —
    the overinterpretation report (``report/``). Returns the
    summary dict. ``verbose`` prints the account (ending with the report's path, or
    the figure's without ``report``); ``progress`` shows progress bars.
    """

    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**DEMO_DEFAULTS, "seed": seed, "n_train": n_train, "n_test": n_test, "n_sis": n_sis}
    cfg.update(threshold=threshold, epochs=epochs, device=str(device))
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if min(n_train, n_test, n_sis) < 1:
        raise ValueError("n_train, n_test and n_sis must be positive")

    # 1. data
    t = time.perf_counter()
    s_train, s_test, s_clean = _split_seeds(seed)
    common = {"size": cfg["size"], "num_classes": cfg["num_classes"]}
    train = make_shortcut_dataset(n_train, shortcut_prob=cfg["shortcut_prob"], seed=s_train, **common)
    test = make_shortcut_dataset(n_test, shortcut_prob=cfg["shortcut_prob"], seed=s_test, **common)
    clean = make_shortcut_dataset(n_test, shortcut_prob=None, seed=s_clean, **common)
    # 8-bit test images, like real ones: exactly what the npz file of the run folder holds
    test.images = (test.images * 255.0).round() / 255.0
    timing["data_s"] = time.perf_counter() - t

    # 2. model: the trainer normalises with the training set's statistics ("auto"), so the
    # baseline is its mean pixel
    t = time.perf_counter()
    dev = torch.device(device)
    train_set = LabeledImages(
        train.images, train.labels, list(train.class_names), name="synthetic:train", source="overinterp demo"
    )
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        # seeded init and training without touching the caller's RNG
        result = train_classifier(demo_config(epochs, seed), train_set, device=dev, amp=False, progress=progress)
    model = result.model
    history = result.history
    mean, std = model.preprocessing.mean, model.preprocessing.std
    timing["train_s"] = time.perf_counter() - t

    # 3. shortcut vs clean accuracy
    ev_train = evaluate_accuracy(model, train.images, train.labels)
    ev_test = evaluate_accuracy(model, test.images, test.labels)
    ev_clean = evaluate_accuracy(model, clean.images, clean.labels)
    probes = _probe_planted(model, test)

    # 4. SIS of correctly and confidently classified shortcut-test images
    probs = predict_logits(model, test.images, batch_size=512).softmax(1)
    eligible = ((probs.argmax(1) == test.labels) & (probs.amax(1) >= threshold)).nonzero().flatten()
    if eligible.numel() == 0:
        raise RuntimeError(f"no shortcut-test image is classified correctly with confidence >= {threshold}")
    chosen = eligible[:n_sis]
    # plus a few misclassified images, so the report can compare correct and incorrect predictions
    wrong = (probs.argmax(1) != test.labels).nonzero().flatten()
    wrong = wrong[probs.amax(1)[wrong].argsort(descending=True, stable=True)][
        : cfg["n_misclassified"]
    ]  # confident first
    positions = torch.cat([chosen, wrong]).sort().values

    # the run folder: model checkpoint, the test images as uint8, the SIS step as a dataset job
    t = time.perf_counter()
    ckpt, data_file = _save_run_inputs(out, model, test, cfg)
    job = _run_sis_job(out, ckpt, data_file, positions, cfg["backselect_batch_size"], progress)
    trace = job.trace
    timing["backselect_s"] = time.perf_counter() - t
    t = time.perf_counter()
    x = test.images[positions].to(device)
    sis_all = trace.find_sis(threshold, model=job.load_model().to(device), images=x)
    rows_of_chosen = torch.searchsorted(positions, chosen).tolist()
    sis = [sis_all[r] for r in rows_of_chosen]
    timing["find_sis_s"] = time.perf_counter() - t

    # 5. where the SIS fall
    sis_stats, records, freq = _sis_statistics(list(sis), test, chosen)
    sis_stats["verified"] = bool(sis_all.verified)
    sis_stats["extended"] = int(sis_all.extended)
    sis_stats["eligible_images"] = int(eligible.numel())

    summary: dict[str, Any] = {
        "config": cfg,
        "class_names": train.class_names,
        "shortcut_pixels": [list(p) for p in train.shortcut_pixels],
        "shortcut_colors": train.shortcut_colors,
        "normalization": {"mean": mean, "std": std},
        "split_seeds": {"train": s_train, "shortcut_test": s_test, "clean_test": s_clean},
        "shortcut_agreement": {
            "train": train.shortcut_agreement,
            "shortcut_test": test.shortcut_agreement,
            "clean_test": clean.shortcut_agreement,
        },
        "accuracy": {
            "train": ev_train["accuracy"],
            "shortcut_test": ev_test["accuracy"],
            "clean_test": ev_clean["accuracy"],
            "drop": ev_test["accuracy"] - ev_clean["accuracy"],
        },
        "mean_confidence": {
            "train": ev_train["mean_confidence"],
            "shortcut_test": ev_test["mean_confidence"],
            "clean_test": ev_clean["mean_confidence"],
        },
        "probes": probes,
        "training": history,
        "sis": sis_stats,
        "sis_frequency": freq,
        "images": records,
        "files": {
            "summary": str(out / "summary.json"),
            "figure": str(out / "sis_heatmap.png"),
            "model": str(ckpt),
            "test_images": str(data_file),
            "job": str(job.out_dir),
            "results": str(out / "results.csv"),
        },
    }

    # 6. files and report
    t = time.perf_counter()
    png = _render_figure(freq, test, test.images[chosen], records, summary, cfg["n_examples"])
    atomic_write_bytes(out / "sis_heatmap.png", png)
    timing["figure_s"] = time.perf_counter() - t
    _append_accuracy_rows(
        out / "results.csv",
        model,
        ckpt,
        seed,
        {"synthetic:train": ev_train, "synthetic:shortcut-test": ev_test, "synthetic:clean-test": ev_clean},
    )
    if report is not None:
        t = time.perf_counter()
        summary["files"]["report"] = str(report(out, threshold))
        timing["report_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_start
    summary["timing"] = timing
    summary = _jsonable(summary)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    if verbose:
        print(format_report(summary), flush=True)
    return summary
