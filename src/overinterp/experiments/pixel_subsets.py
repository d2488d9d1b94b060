"""Pixel-subset experiments (paper §4.1–4.2, Tables 1 and S1) from dataset jobs.

Every function reads finished :mod:`overinterp.jobs` folders (traces + the images
they name) and returns plain dicts; with ``results=PATH`` it also appends rows to
the long-format results file (:mod:`overinterp.results`), labelled
``train_on``/``evaluate_on`` = ``full``, ``bs5``, ``random5``, ``mask5`` and
``bs5-prob`` (subsets from probability ranking, the ranking-artefact control).

Random subsets are drawn per split: training subsets with seed 1234, test subsets
with 5678 (:data:`~overinterp.data.subsets.RANDOM_SUBSET_SEEDS`, the authors' seeds),
the same for every model of a split. :func:`ensemble_row` gives Table 1's ensemble
row as in the paper: an ensemble of models trained on *full* images, on full test
images and on 5% random test subsets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overinterp.data.subsets import PixelSubsets, augment_once, random_keep_masks, random_subset_seed, subset_label
from overinterp.jobs import JobOutput, load_job
from overinterp.models.classifier import Classifier
from overinterp.models.predict import predict_logits
from overinterp.results import append_results, make_row, model_fingerprint
from overinterp.training.evaluation import accuracy_from_logits

__all__ = [
    "make_subsets",
    "subset_predictions",
    "evaluate_subsets",
    "confidence_drop",
    "retrain_on_subsets",
    "ensemble_row",
    "AUGMENT_MODES",
    "transfer",
    "compare_rankings",
]


def _job(job: JobOutput | str | os.PathLike[str]) -> JobOutput:
    return job if isinstance(job, JobOutput) else load_job(job)


def _rank_by(job: JobOutput) -> str:
    return str(job.trace.method.get("params", {}).get("rank_by", "logodds"))


def make_subsets(
    job: JobOutput | str | os.PathLike[str],
    kind: str = "bs",
    fraction: float = 0.05,
    *,
    seed: int | None = None,
    split: str = "test",
    images: Tensor | None = None,
) -> PixelSubsets:
    """The job's images as pixel subsets of ``kind`` (``bs``, ``random``, ``mask``).

    ``bs`` keeps the last-removed ``ceil(fraction·P)`` features of the job's
    trace; ``random`` the same count at random, seeded by ``seed`` (default: the
    split's, 1234 for ``split="train"``, 5678 for ``"test"``) and the dataset
    position; ``mask`` is the binary ``bs`` keep-mask without pixel values.
    Masked pixels take the trace's baseline (pixel space for a Classifier).
    """
    seed = random_subset_seed(split, seed)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    j = _job(job)
    imgs = j.load_images() if images is None else images
    if imgs.shape[0] != len(j.trace) or tuple(imgs.shape[1:]) != tuple(j.trace.image_shape):
        raise ValueError(
            f"{j.out_dir}: the trace covers {len(j.trace)} images of shape {tuple(j.trace.image_shape)}, "
            f"but {imgs.shape[0]} images of shape {tuple(imgs.shape[1:])} were given"
        )
    if kind in ("bs", "mask"):
        keep = j.trace.keep_mask(fraction)
    elif kind == "random":
        features = j.trace.features if j.trace.features is not None and j.trace.features.dim() == 2 else None
        keep = random_keep_masks(j.positions, j.trace.image_shape, fraction, seed, features, split=split)
    else:
        raise ValueError(f"kind must be bs, random or mask, got {kind!r}")
    return PixelSubsets(
        imgs,
        j.labels,
        keep,
        j.trace.baseline.float(),
        kind,
        float(fraction),
        j.classes,
        name=j.model_name,
        meta={"rank_by": _rank_by(j), "job": str(j.out_dir), "key": j.spec.dataset, "seed": seed, "split": split},
    )


def _logits(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """``(N, K)`` float64 logits of ``model`` (put in eval mode) on pixels ``(N, C, H, W)``
    (uint8 or float), on the CPU."""
    model.eval()
    return predict_logits(model, images, batch_size=batch_size).double()


def subset_predictions(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Softmax probabilities ``(N, K)`` float64 of ``model`` on pixels ``(N, C, H, W)`` (uint8 or float)."""
    return F.softmax(_logits(model, images, batch_size), dim=1)


def confidence_drop(full_probs: Tensor, subset_probs: Tensor) -> dict[str, float]:
    """Mean and std (unbiased) of full-image confidence − subset confidence for the
    class predicted on the full image. ``(N, K)`` probabilities each."""
    pred = full_probs.argmax(1, keepdim=True)
    drop = (full_probs.gather(1, pred) - subset_probs.gather(1, pred)).squeeze(1)
    std = float(drop.std()) if drop.numel() > 1 else 0.0
    return {"mean": float(drop.mean()), "std": std, "n": int(drop.numel())}


def _rows(common: dict[str, Any], metrics: dict[str, float], n: int, **fields: Any) -> list[dict[str, str]]:
    return [make_row(**common, **fields, metric=k, value=v, n=n) for k, v in metrics.items()]


def evaluate_subsets(
    job: JobOutput | str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    kinds: Sequence[str] = ("full", "bs", "random"),
    fraction: float = 0.05,
    seed: int | None = None,
    model_name: str | None = None,
    train_on: str = "full",
    model_seed: int | None = None,
    dataset_key: str | None = None,
    results: str | os.PathLike[str] | None = None,
    experiment: str = "pixel-subsets",
    notes: str = "",
    batch_size: int = 500,
    checkpoint: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy and mean confidence of ``model`` (default: the job's own model) on
    the job's full images and its pixel subsets (test subsets: random ones seeded
    by ``seed``, default 5678); with the job's own model also the confidence drop
    from full image to each subset kind. ``checkpoint``: the model's file for the
    rows (default: the job's model file for its own model, else empty).

    Rows: ``accuracy``, ``loss``, ``subset_confidence`` (mean probability of the
    class predicted on the full image), and for the job's own model
    ``confidence_drop_mean``/``_std``.

    Returns ``{label: {"accuracy", "mean_confidence" (of the predicted class),
    "full_class_confidence", "n", …}}`` with labels
    ``full``, ``bs5``, ``random5``, ``mask5`` (``bs5-prob`` for a probability-ranked trace).
    """
    j = _job(job)
    own = model is None
    model = j.load_model() if own else model
    images = j.load_images()
    name = model_name or getattr(model, "name", None) or j.model_name
    key = dataset_key or j.spec.dataset
    out: dict[str, dict[str, Any]] = {}
    full_logits = _logits(model, images, batch_size)
    full_probs = F.softmax(full_logits, dim=1)
    for kind in kinds:
        if kind == "full":
            logits, label = full_logits, "full"
        else:
            subsets = make_subsets(j, kind, fraction, seed=seed, images=images)
            logits, label = _logits(model, subsets.pixels(), batch_size), subsets.label
        probs = F.softmax(logits, dim=1)
        res = accuracy_from_logits(logits, j.labels)
        # confidence in the class the model predicts on the full image (what Figure 2 shows)
        res["full_class_confidence"] = float(probs.gather(1, full_probs.argmax(1, keepdim=True)).mean())
        if own and kind != "full":
            res["confidence_drop"] = confidence_drop(full_probs, probs)
        out[label] = res
    if results is not None:
        common = {
            "experiment": experiment,
            "model": name,
            "arch": getattr(model, "name", ""),
            "fingerprint": model_fingerprint(model),
            "checkpoint": str(checkpoint or (j.spec.model.checkpoint if own else "") or ""),
            "train_on": train_on,
            "dataset": key,
            "seed": "" if model_seed is None else model_seed,
            "notes": (f"{notes}; " if notes else "")
            + f"subsets of job {j.out_dir.name}"
            + (f"; random masks seeded {random_subset_seed('test', seed)}" if "random" in kinds else ""),
        }
        rows: list[dict[str, str]] = []
        for label, res in out.items():
            metrics = {
                "accuracy": res["accuracy"],
                "loss": res["loss"],
                "subset_confidence": res["full_class_confidence"],
            }
            if "confidence_drop" in res:
                metrics["confidence_drop_mean"] = res["confidence_drop"]["mean"]
                metrics["confidence_drop_std"] = res["confidence_drop"]["std"]
            rows += _rows(common, metrics, res["n"], evaluate_on=label)
        append_results(results, rows)
    return out


#: ``augment`` settings of :func:`retrain_on_subsets`: label suffix of ``train_on`` and of the run folder
AUGMENT_MODES: dict[str, tuple[str, str]] = {
    "none": ("", "noaug"),
    "joint": ("+aug", "aug"),
    "once": ("+aug-once", "aug-once"),
}


def _augment_mode(augment: bool | str) -> str:
    mode = {False: "none", True: "joint"}.get(augment, augment) if isinstance(augment, bool) else augment
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment must be False, True, or one of {sorted(AUGMENT_MODES)}, got {augment!r}")
    return mode  # type: ignore[return-value]


def retrain_on_subsets(
    train_job: JobOutput | str | os.PathLike[str],
    test_jobs: JobOutput | str | os.PathLike[str] | Sequence[JobOutput | str | os.PathLike[str]],
    *,
    kind: str = "bs",
    fraction: float = 0.05,
    arch: str = "resnet20",
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    recipe: str = "paper",
    augment: bool | str = False,
    augment_seed: int = 0,
    overrides: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "runs/retrain",
    train_subset_seed: int | None = None,
    test_subset_seed: int | None = None,
    dataset_keys: str | Sequence[str | None] | None = None,
    results: str | os.PathLike[str] | None = None,
    experiment: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``arch`` from scratch on the train job's pixel subsets (one model per
    seed, each in its own resumable run folder) and test on the subsets of the same
    kind of each test job (e.g. CIFAR-10 test, CIFAR-10.1, the CIFAR-10-C sample,
    each backward-selected by the original model) — Table 1 (no augmentation)
    and Table S1 (with).

    Args:
        augment: ``False``/``"none"``; ``True``/``"joint"`` (this package's Table S1):
            every epoch crops and flips each image *and its keep-mask together*;
            ``"once"`` (the authors' pipeline): each training image is cropped and
            flipped once, seeded by ``augment_seed`` and its position, before
            training (:func:`~overinterp.data.subsets.augment_once`), and the
            keep-mask of the unaugmented image is applied unmoved; no per-epoch
            augmentation. Crop padding and flip follow the recipe.
        train_subset_seed, test_subset_seed: random-subset seeds (default 1234 and
            5678, the authors'); the same masks for every seed and model.

    Rows are labelled ``train_on`` = ``bs5`` (``bs5+aug`` joint, ``bs5+aug-once``
    once), ``evaluate_on`` = ``bs5``. Returns one dict per seed: ``seed``,
    ``accuracy`` (first test job), ``accuracies`` (dataset key → accuracy), ``run_dir``.
    """
    from overinterp.training.trainer import make_config, train_classifier

    mode = _augment_mode(augment)
    tests = [test_jobs] if isinstance(test_jobs, (JobOutput, str, os.PathLike)) else list(test_jobs)
    if not tests:
        raise ValueError("retraining needs at least one test job")
    keys = [dataset_keys] if dataset_keys is None or isinstance(dataset_keys, str) else list(dataset_keys)
    keys = keys * len(tests) if len(keys) == 1 else keys
    if len(keys) != len(tests):
        raise ValueError(f"{len(keys)} dataset keys for {len(tests)} test jobs")
    tr = _job(train_job)
    train_sub = make_subsets(tr, kind, fraction, seed=train_subset_seed, split="train")
    test_subs = [make_subsets(_job(t), kind, fraction, seed=test_subset_seed, split="test") for t in tests]
    keys = [k or t.meta["key"] for k, t in zip(keys, test_subs)]
    label = train_sub.label
    suffix, folder = AUGMENT_MODES[mode]
    if mode == "once":  # the dataset is augmented once, as it is built; every seed trains on the same one
        recipe_config = make_config(recipe, arch=arch, **(overrides or {}))
        train_sub = augment_once(
            train_sub, augment_seed, positions=tr.positions, padding=recipe_config.crop_padding, flip=recipe_config.flip
        )
    out: list[dict[str, Any]] = []
    for seed in seeds:
        config = make_config(recipe, arch=arch, seed=int(seed), augment=mode == "joint", **(overrides or {}))
        run_dir = Path(out_dir) / f"{arch}-{label}-{folder}-seed{seed}"
        res = train_classifier(config, train_sub, test_subs[0], run_dir, device=device, progress=progress)
        model = res.model.cpu()
        train_label = label + suffix
        summary: dict[str, Any] = {
            "seed": int(seed),
            "run_dir": str(run_dir),
            "train_on": train_label,
            "evaluate_on": label,
            "accuracies": {},
        }
        for key, test_sub in zip(keys, test_subs):
            res_k = accuracy_from_logits(_logits(model, test_sub.pixels()), test_sub.labels)
            summary["accuracies"][key] = res_k["accuracy"]
            if "accuracy" not in summary:
                summary.update(res_k)
            if results is not None:
                common = {
                    "experiment": experiment or ("table1" if mode == "none" else "table-s1"),
                    "model": arch,
                    "arch": arch,
                    "fingerprint": model_fingerprint(model),
                    "checkpoint": str(res.checkpoint or ""),
                    "train_on": train_label,
                    "evaluate_on": label,
                    "dataset": key,
                    "seed": int(seed),
                    "notes": f"{recipe} recipe, {config.epochs} epochs, augment={mode}, "
                    f"{len(train_sub)} training subsets from {tr.out_dir.name}"
                    + (
                        f"; random masks seeded {train_sub.meta['seed']} (train) / {test_sub.meta['seed']} (test)"
                        if kind == "random"
                        else ""
                    ),
                }
                append_results(
                    results,
                    _rows(
                        common,
                        {"accuracy": res_k["accuracy"], "subset_confidence": res_k["mean_confidence"]},
                        res_k["n"],
                    ),
                )
        out.append(summary)
    return out


def ensemble_row(
    members: Sequence[Classifier | str | os.PathLike[str]],
    test_jobs: JobOutput | str | os.PathLike[str] | Sequence[JobOutput | str | os.PathLike[str]],
    *,
    fraction: float = 0.05,
    name: str | None = None,
    test_subset_seed: int | None = None,
    dataset_keys: str | Sequence[str | None] | None = None,
    results: str | os.PathLike[str] | None = None,
    experiment: str = "table1",
    checkpoint: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Table 1's ensemble row as in the paper: the mean-logit
    :class:`~overinterp.models.ensemble.Ensemble` of ``members`` — models trained
    on **full** images (the paper: five ResNet18; 96.15% on full CIFAR-10 test
    images, 9.98% on 5% random subsets) — evaluated on each test job's full images
    and on its ``fraction`` random test subsets (seed ``test_subset_seed``, default 5678).

    Args:
        members: Classifiers or overinterp checkpoints of full-image models (e.g.
            ``runs/full/resnet18-seed{0..4}/model.pt``).
        name: the row's model name (default ``ensemble:<arch>x<n>``).
        checkpoint: the ensemble's file for the rows' checkpoint column (e.g. its JSON).

    Rows (``experiment`` default ``table1``): ``train_on`` = ``full``,
    ``evaluate_on`` = ``full`` and ``random5``; ``accuracy``, ``loss``,
    ``subset_confidence``; the notes name the members. Returns
    ``{dataset key: {"full": …, "random5": …}}`` (see :func:`evaluate_subsets`).
    """
    from overinterp.models import load_model
    from overinterp.models.ensemble import Ensemble

    if not members:
        raise ValueError("an ensemble row needs at least one member model")
    sources = [m if isinstance(m, Classifier) else str(m) for m in members]
    models = [m if isinstance(m, Classifier) else load_model(None, checkpoint=m) for m in members]
    arches = sorted({str(getattr(m, "name", "model")) for m in models})
    label = name or f"ensemble:{'+'.join(arches)}x{len(models)}"
    ens = Ensemble(models, name=label).eval()
    tests = [test_jobs] if isinstance(test_jobs, (JobOutput, str, os.PathLike)) else list(test_jobs)
    if not tests:
        raise ValueError("an ensemble row needs at least one test job")
    keys = [dataset_keys] if dataset_keys is None or isinstance(dataset_keys, str) else list(dataset_keys)
    keys = keys * len(tests) if len(keys) == 1 else keys
    if len(keys) != len(tests):
        raise ValueError(f"{len(keys)} dataset keys for {len(tests)} test jobs")
    shown = [s if isinstance(s, str) else f"{type(s).__name__} {model_fingerprint(s)}" for s in sources]
    notes = f"mean logits of {len(models)} models trained on full images: " + ", ".join(shown)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for test, key in zip(tests, keys):
        j = _job(test)
        out[key or j.spec.dataset] = evaluate_subsets(
            j,
            ens,
            kinds=("full", "random"),
            fraction=fraction,
            seed=test_subset_seed,
            model_name=label,
            train_on="full",
            dataset_key=key,
            results=results,
            experiment=experiment,
            notes=notes,
            checkpoint=checkpoint,
        )
    return out


@torch.no_grad()
def transfer(
    jobs: Sequence[JobOutput | str | os.PathLike[str]],
    *,
    threshold: float = 0.99,
    fraction: float = 0.05,
    results: str | os.PathLike[str] | None = None,
    experiment: str = "transfer",
    dataset_key: str | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """For every ordered pair (A, B) of jobs over the same images: B's accuracy on
    A's ``fraction`` BS subsets, and the fraction of A's SIS (at ``threshold``,
    found from A's trace and re-verified under A) on which B's probability of A's
    class still reaches ``threshold``.

    ``names`` label the jobs' models (default: the model names, or the job
    folder names when two models share a name).
    """
    js = [_job(j) for j in jobs]
    if len(js) < 2:
        raise ValueError("transfer needs at least two jobs")
    if names is None:
        names = [j.model_name for j in js]
        if len(set(names)) < len(names):
            names = [j.out_dir.name for j in js]
    if len(names) != len(js):
        raise ValueError(f"{len(names)} names for {len(js)} jobs")
    for j in js[1:]:
        if (
            not torch.equal(j.positions, js[0].positions)
            or j.manifest["identity"]["data_fingerprint"] != js[0].manifest["identity"]["data_fingerprint"]
        ):
            raise ValueError(f"{j.out_dir} covers other images than {js[0].out_dir}; transfer needs the same images")
    images = js[0].load_images()
    models = [j.load_model() for j in js]
    pixels = images.float() / 255.0
    out = []
    for a, ja in enumerate(js):
        subsets = make_subsets(ja, "bs", fraction, images=images)
        sis = ja.trace.find_sis(threshold, models[a], pixels)
        sis_keep = ja.trace.sis_mask(sis)
        has = torch.tensor([s is not None for s in sis])
        base = ja.trace.baseline.float()
        base = base.view(-1, 1, 1) if base.dim() <= 1 else base
        sis_images = torch.where(sis_keep, pixels, base.unsqueeze(0))
        for b, jb in enumerate(js):
            probs = subset_predictions(models[b], subsets.pixels())
            acc = float((probs.argmax(1) == ja.labels).double().mean())
            if has.any():
                pb = subset_predictions(models[b], sis_images[has])
                tgt = ja.trace.target[has].view(-1, 1)
                frac = float((pb.gather(1, tgt).squeeze(1) >= threshold).double().mean())
            else:
                frac = float("nan")
            rec = {
                "from": names[a],
                "to": names[b],
                "from_job": str(ja.out_dir),
                "to_job": str(jb.out_dir),
                "subset_accuracy": acc,
                "sis_transfer": frac,
                "n_sis": int(has.sum()),
                "n": len(ja.trace),
            }
            out.append(rec)
            if results is not None:
                common = {
                    "experiment": experiment,
                    "model": names[b],
                    "arch": getattr(models[b], "name", ""),
                    "fingerprint": model_fingerprint(models[b]),
                    "train_on": "full",
                    "evaluate_on": f"{subset_label('bs', fraction)}:{names[a]}",
                    "dataset": dataset_key or ja.spec.dataset,
                    "notes": f"{names[b]} on subsets/SIS of {names[a]} (τ={threshold})",
                }
                append_results(
                    results,
                    [
                        make_row(**common, metric="accuracy", value=acc, n=rec["n"]),
                        make_row(**common, metric="sis_transfer", value=frac, n=rec["n_sis"]),
                    ],
                )
    return out


def compare_rankings(
    job_a: JobOutput | str | os.PathLike[str],
    job_b: JobOutput | str | os.PathLike[str],
    *,
    fraction: float = 0.05,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Overlap of two jobs' kept sets on the images both cover (e.g. log-odds vs
    probability ranking, or an exact anchor vs a faster method): mean |A∩B| / |A|
    per image, mean Jaccard, and the two
    pixel-location frequency maps (saved as a side-by-side PNG/SVG in ``out_dir``)."""
    from overinterp.analysis import location_frequency, plot_heatmap, save_figure

    ja, jb = _job(job_a), _job(job_b)
    if ja.manifest["identity"]["image_shape"] != jb.manifest["identity"]["image_shape"]:
        raise ValueError(f"{ja.out_dir} and {jb.out_dir} hold images of different shapes")
    # the images both jobs cover (e.g. an exact anchor on a few images of a larger approximate job)
    pos_b = {p: i for i, p in enumerate(jb.positions.tolist())}
    pairs = [(i, pos_b[p]) for i, p in enumerate(ja.positions.tolist()) if p in pos_b]
    if not pairs:
        raise ValueError(f"{ja.out_dir} and {jb.out_dir} share no image")
    ia, ib = (torch.tensor(x) for x in zip(*pairs))
    ka, kb = ja.trace.keep_mask(fraction)[ia], jb.trace.keep_mask(fraction)[ib]
    inter = (ka & kb).flatten(1).sum(1).double()
    union = (ka | kb).flatten(1).sum(1).double()
    size = ka.flatten(1).sum(1).double()
    fa, fb = location_frequency(ka), location_frequency(kb)
    res = {
        "a": str(ja.out_dir),
        "b": str(jb.out_dir),
        "rank_by_a": _rank_by(ja),
        "rank_by_b": _rank_by(jb),
        "method_a": ja.trace.method,
        "method_b": jb.trace.method,
        "n": len(pairs),
        "kept_per_image": float(size.mean()),
        "overlap_mean": float((inter / size.clamp_min(1)).mean()),
        "jaccard_mean": float((inter / union.clamp_min(1)).mean()),
        "shared_pixels_mean": float(inter.mean()),
        "bottom_rows_share_a": float(ka[:, :, -ka.shape[2] // 4 :].sum() / ka.sum().clamp_min(1)),
        "bottom_rows_share_b": float(kb[:, :, -kb.shape[2] // 4 :].sum() / kb.sum().clamp_min(1)),
    }
    if out_dir is not None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.1))
        fig.subplots_adjust(wspace=0.5)
        top = max(float(fa.max()), float(fb.max()), 1e-12)
        plot_heatmap(fa, axes[0], f"{ja.model_name}: rank by {res['rank_by_a']}", vmax=top)
        plot_heatmap(fb, axes[1], f"{jb.model_name}: rank by {res['rank_by_b']}", vmax=top)
        fig.suptitle(
            f"{subset_label('bs', fraction)} kept pixels, n = {res['n']}; mean overlap "
            f"{100 * res['overlap_mean']:.1f}%",
            fontsize=9,
        )
        paths = save_figure(fig, Path(out_dir) / "ranking_heatmaps", ("png", "svg"))
        res["figures"] = [str(p) for p in paths]
        from overinterp._atomic import atomic_write_text

        atomic_write_text(Path(out_dir) / "ranking_comparison.json", json.dumps(res, indent=1) + "\n")
    return res
