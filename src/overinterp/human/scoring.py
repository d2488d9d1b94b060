"""Scoring a human study: Table 2, Figure S5 and the image sheets of Figure S4.

Inputs are the exported answers (:func:`read_answers` of ``overinterp human
export`` CSV, or :func:`overinterp.human.db.export_rows`) and the study manifest.

Outputs:

* :func:`participant_scores` — one :class:`ParticipantScore` per participant ×
  subset size: correct / answered and the accuracy. By default only complete
  batches count (every image of that subset size answered).
* :func:`table2` — per subset size the mean ± sample standard deviation
  (``ddof=1``; 0 for one participant) of participant accuracy: the paper's Table 2.
* :func:`linear_fit` — least-squares line of accuracy on subset size (percent of
  pixels) over all (subset size, participant accuracy) points, with R².
* :func:`plot_accuracy` — Figure S5: those points, the per-size mean ± std and
  the fitted line (black and grey only, distinct markers: readable in greyscale).
* :func:`image_sheets` — Figure S4: per subset size a grid of the study's masked
  images, one row per class.
* :func:`result_rows` — rows for :func:`overinterp.append_results`: one per
  participant × subset size, ``model`` = ``human`` (configurable), ``arch`` =
  ``human``, ``train_on`` = ``n/a``, ``evaluate_on`` = ``bs5``/``bs30``/``bs50``,
  ``dataset`` = the study's source dataset, ``seed`` = the participant number,
  ``metric`` = ``accuracy``; so ``render_table`` shows mean ± std over participants.
* :func:`score_study` — all of the above; writes ``scores.json`` and the figures.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from overinterp._atomic import atomic_write_text
from overinterp.errors import UserInputError
from overinterp.human.study import load_manifest, subset_label

__all__ = [
    "ParticipantScore",
    "FractionSummary",
    "LinearFit",
    "read_answers",
    "participant_scores",
    "table2",
    "linear_fit",
    "plot_accuracy",
    "image_sheets",
    "result_rows",
    "score_study",
]


@dataclass(frozen=True)
class ParticipantScore:
    """One participant's accuracy on one subset size."""

    participant: str
    number: int
    fraction: float
    correct: int
    answered: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else float("nan")


@dataclass(frozen=True)
class FractionSummary:
    """Table 2 cell: participant accuracy at one subset size (fractions, not percent)."""

    fraction: float
    mean: float
    std: float
    participants: int


@dataclass(frozen=True)
class LinearFit:
    """``accuracy ≈ intercept + slope · percent``; ``r2`` NaN when undefined."""

    slope: float
    intercept: float
    r2: float
    n: int


def read_answers(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of an exported answers CSV (``fraction`` float; ``label``, ``choice``,
    ``participant_number``, ``position`` int)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no answers file at {p}")
    rows = []
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"participant", "participant_number", "fraction", "stimulus", "label", "choice"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{p} lacks columns {sorted(missing)}: is it an `overinterp human export` file?")
        for line, r in enumerate(reader, start=2):
            try:
                r = dict(r)
                r["fraction"] = float(r["fraction"])
                for k in ("label", "choice", "participant_number", "position"):
                    if k in r and r[k] not in (None, ""):
                        r[k] = int(r[k])
            except ValueError as exc:
                raise ValueError(f"{p}, line {line}: {exc}") from None
            rows.append(r)
    return rows


def answers_with_manifest_labels(
    answers: Iterable[Mapping[str, Any]], manifest: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The answers with each stimulus's correct label and subset size taken from the study
    manifest — never from the answers themselves, so an edited export cannot change a score.

    Raises:
        UserInputError: an answer for a stimulus the manifest does not list, or one whose
            ``label`` (or ``fraction``) disagrees with the manifest's (an edited or foreign file).
    """
    items = {str(it["item"]): it for it in manifest["items"]}
    truth = {str(st["id"]): (int(items[str(st["item"])]["label"]), float(st["fraction"])) for st in manifest["stimuli"]}
    out = []
    for n, r in enumerate(answers, start=1):
        stimulus = str(r.get("stimulus"))
        if stimulus not in truth:
            raise UserInputError(
                f"answer {n}: stimulus {stimulus!r} is not in study {manifest['study_id']}'s manifest; "
                "is the answers file from another study?"
            )
        label, fraction = truth[stimulus]
        given = r.get("label")
        if given not in (None, "") and int(given) != label:
            raise UserInputError(
                f"answer {n} (stimulus {stimulus}): the answers give label {given}, the study manifest {label}; "
                "the correct labels come from the manifest — the answers file was edited or is not this study's"
            )
        given = r.get("fraction")
        if given not in (None, "") and not math.isclose(float(given), fraction, rel_tol=1e-9, abs_tol=1e-12):
            raise UserInputError(
                f"answer {n} (stimulus {stimulus}): the answers give subset size {given}, the study manifest "
                f"{fraction}; the answers file was edited or is not this study's"
            )
        out.append({**r, "label": label, "fraction": fraction})
    return out


def participant_scores(
    answers: Iterable[Mapping[str, Any]],
    batch_sizes: Mapping[float, int] | None = None,
    *,
    complete_only: bool = True,
) -> list[ParticipantScore]:
    """Per participant × subset size: correct and answered counts.

    ``batch_sizes``: images per subset size (from the manifest); with
    ``complete_only`` a participant's batch counts only when all were answered
    (without ``batch_sizes``: the most answered by anyone). Each stimulus counts
    once per participant. Sorted by participant number, then fraction.
    """
    seen: dict[tuple[str, float], dict[str, bool]] = {}
    numbers: dict[str, int] = {}
    for r in answers:
        pid, f = str(r["participant"]), float(r["fraction"])
        numbers[pid] = int(r["participant_number"])
        seen.setdefault((pid, f), {})[str(r["stimulus"])] = int(r["choice"]) == int(r["label"])
    sizes = dict(batch_sizes or {})
    if complete_only and not sizes:
        for (_, f), d in seen.items():
            sizes[f] = max(sizes.get(f, 0), len(d))
    out = []
    for (pid, f), d in seen.items():
        if complete_only and len(d) < sizes.get(f, 0):
            continue
        out.append(ParticipantScore(pid, numbers[pid], f, sum(d.values()), len(d)))
    return sorted(out, key=lambda s: (s.number, s.fraction))


def table2(scores: Sequence[ParticipantScore]) -> list[FractionSummary]:
    """Mean ± sample std of participant accuracy per subset size (increasing size)."""
    by: dict[float, list[float]] = {}
    for s in scores:
        by.setdefault(s.fraction, []).append(s.accuracy)
    out = []
    for f in sorted(by):
        v = by[f]
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        out.append(FractionSummary(f, mean, std, len(v)))
    return out


def linear_fit(scores: Sequence[ParticipantScore]) -> LinearFit:
    """Least squares of accuracy on subset size in percent over all points, with R² = 1 − SS_res/SS_tot.

    Slope and intercept are NaN with fewer than two distinct sizes; R² is NaN
    then and when all accuracies are equal (SS_tot = 0).
    """
    xs = [100.0 * s.fraction for s in scores]
    ys = [s.accuracy for s in scores]
    n = len(xs)
    nan = float("nan")
    if n < 2 or len(set(xs)) < 2:
        return LinearFit(nan, nan, nan, n)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else nan
    return LinearFit(slope, intercept, r2, n)


def plot_accuracy(
    scores: Sequence[ParticipantScore],
    fit: LinearFit,
    path: str | os.PathLike[str],
    formats: tuple[str, ...] = ("png",),
    *,
    chance: float | None = None,
) -> list[Path]:
    """Figure S5: participant accuracy vs subset size with the linear fit and R²
    (``chance``: a dotted line at that accuracy, e.g. 0.1 for ten classes)."""
    from overinterp.analysis.heatmaps import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    summary = table2(scores)
    sizes = sorted({s.fraction for s in scores})
    step = min((b - a for a, b in zip(sizes, sizes[1:])), default=0.1) * 100
    width = min(3.0, 0.25 * step)  # participants to the left of each size, the mean to the right
    for f in sizes:
        pts = sorted((s for s in scores if s.fraction == f), key=lambda s: s.number)
        for j, s in enumerate(pts):
            offset = -width * (0.25 + 0.75 * (j + 0.5) / len(pts))
            ax.plot(
                100 * f + offset,
                100 * s.accuracy,
                "o",
                mfc="white",
                mec="0.35",
                ms=4.5,
                zorder=2,
                label="participant" if (f == sizes[0] and j == 0) else None,
            )
    ax.errorbar(
        [100 * t.fraction + 0.35 * width for t in summary],
        [100 * t.mean for t in summary],
        # the spread drawn inside [0, 100]%: an accuracy cannot leave it
        yerr=[
            [100 * min(t.std, t.mean) for t in summary],
            [100 * min(t.std, 1.0 - t.mean) for t in summary],
        ],
        fmt="s",
        color="black",
        ms=6,
        capsize=4,
        zorder=3,
        label="mean ± std",
    )
    if not math.isnan(fit.slope):
        lo, hi = 0.0, 100 * max(sizes) * 1.05
        ax.plot(
            [lo, hi],
            [100 * (fit.intercept + fit.slope * lo), 100 * (fit.intercept + fit.slope * hi)],
            "--",
            color="black",
            lw=1.2,
            zorder=1,
            label=f"linear fit, $R^2$ = {fit.r2:.2f}" if not math.isnan(fit.r2) else "linear fit",
        )
    if chance is not None:
        ax.axhline(100.0 * chance, color="0.6", lw=0.8, ls=":", zorder=0, label="chance")
    ax.set_xlabel("pixels shown (% of image)")
    ax.set_ylabel("human accuracy (%)")
    ax.set_xlim(0, 100 * max(sizes) * 1.1 if sizes else 1)
    ax.set_ylim(0, 105)
    ax.legend(frameon=True, framealpha=0.9, edgecolor="0.8", fontsize=8, loc="best")
    ax.set_title("Human accuracy vs. subset size", fontsize=10)
    return save_figure(fig, path, formats)


def image_sheets(
    study_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], formats: tuple[str, ...] = ("png",)
) -> list[Path]:
    """Figure S4: one grid per subset size (``sheet_bs5.png`` …), a row per class."""
    from PIL import Image

    from overinterp.analysis.heatmaps import pyplot, save_figure

    plt = pyplot()
    root = Path(study_dir)
    manifest = load_manifest(root)
    classes = manifest["classes"]
    files = {st["id"]: st["file"] for st in manifest["stimuli"]}
    rows: dict[int, list[dict[str, Any]]] = {}
    for it in sorted(manifest["items"], key=lambda it: (it["label"], it["model"], it["position"])):
        rows.setdefault(int(it["label"]), []).append(it)
    ncols = max((len(v) for v in rows.values()), default=1)
    h, w = int(manifest["image_shape"][1]), int(manifest["image_shape"][2])
    pad = max(1, h // 16)
    out = []
    for f in manifest["fractions"]:
        # one mosaic, white gaps between images: the sheet stays compact at any number of columns
        sheet = np.full((len(classes) * (h + pad) - pad, ncols * (w + pad) - pad, 3), 255, dtype=np.uint8)
        for k in range(len(classes)):
            for c, item in enumerate(rows.get(k, [])):
                token = item["stimuli"][repr(float(f))]
                with Image.open(root / files[token]) as im:
                    sheet[k * (h + pad) : k * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = np.asarray(
                        im.convert("RGB")
                    )
        fig, ax = plt.subplots(figsize=(0.55 * ncols + 1.4, 0.55 * len(classes) + 0.6))
        ax.imshow(sheet, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([k * (h + pad) + h / 2 for k in range(len(classes))], classes, fontsize=8)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"{100 * f:g}% of pixels (backward selection)", fontsize=9)
        out += save_figure(fig, Path(out_dir) / f"sheet_{subset_label(f)}", formats)
    return out


def result_rows(
    scores: Sequence[ParticipantScore],
    manifest: Mapping[str, Any],
    *,
    model: str = "human",
    experiment: str = "human-study",
    dataset: str | None = None,
) -> list[dict[str, Any]]:
    """One results row per participant × subset size (see the module doc); ``dataset``
    overrides the study's source dataset key (e.g. ``cifar10:test`` for images read from a file)."""
    return [
        dict(
            experiment=experiment,
            model=model,
            arch="human",
            fingerprint=manifest["study_id"],
            checkpoint="",
            train_on="n/a",
            evaluate_on=subset_label(s.fraction),
            dataset=dataset or manifest.get("dataset", ""),
            seed=s.number,
            metric="accuracy",
            value=s.accuracy,
            n=s.answered,
            notes=f"human study {manifest['study_id']} ({manifest.get('name', '')}), participant {s.number}",
        )
        for s in scores
    ]


def score_study(
    study_dir: str | os.PathLike[str],
    answers: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    results: str | os.PathLike[str] | None = None,
    model: str = "human",
    dataset: str | None = None,
    complete_only: bool = True,
    sheets: bool = True,
) -> dict[str, Any]:
    """Score ``answers`` of the study in ``study_dir``; write ``scores.json``,
    ``accuracy_vs_size.png`` and the sheets to ``out_dir``; append to ``results``.

    Returns the summary written to ``scores.json``: ``table2`` (fraction, mean,
    std, participants), ``fit`` (slope per percentage point, intercept, r2, n),
    ``participants`` (the per-participant scores) and the written ``files``.
    """
    from overinterp.results import append_results

    manifest = load_manifest(study_dir)
    sid = manifest["study_id"]
    foreign = {str(r.get("study")) for r in answers if r.get("study") not in (None, "", sid)}
    if foreign:
        raise ValueError(f"the answers include other studies ({sorted(foreign)}); this study is {sid}")
    sizes: dict[float, int] = {}
    for st in manifest["stimuli"]:
        sizes[float(st["fraction"])] = sizes.get(float(st["fraction"]), 0) + 1
    answers = answers_with_manifest_labels(answers, manifest)
    scores = participant_scores(answers, sizes, complete_only=complete_only)
    if not scores:
        raise ValueError("no participant has a complete batch yet" if complete_only else "no answers to score")
    summary = table2(scores)
    fit = linear_fit(scores)
    out = Path(out_dir)
    files = plot_accuracy(scores, fit, out / "accuracy_vs_size", chance=1.0 / len(manifest["classes"]))
    if sheets:
        files += image_sheets(study_dir, out)
    appended = 0
    if results is not None:
        appended = append_results(results, result_rows(scores, manifest, model=model, dataset=dataset))
    report = {
        "study": sid,
        "name": manifest.get("name"),
        "table2": [asdict(t) for t in summary],
        "fit": {**asdict(fit), "x": "percent of pixels shown"},
        "participants": [{**asdict(s), "accuracy": s.accuracy} for s in scores],
        "files": [str(f) for f in files],
        "results_rows": appended,
    }
    atomic_write_text(out / "scores.json", json.dumps(_no_nan(report), indent=1) + "\n")
    return report


def _no_nan(o: Any) -> Any:
    """NaN → None, so ``scores.json`` is strict JSON."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _no_nan(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_no_nan(v) for v in o]
    return o
