"""The report of a small real run folder: two trained members, their ensemble, three
dataset jobs on the same images and a results file — files, content, the command line,
and the HTML opened in headless Chromium."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from overinterp import Classifier, Exact, save_checkpoint, save_ensemble
from overinterp.analysis import sis_size_curve
from overinterp.data.base import LabeledImages
from overinterp.jobs import JobSpec, ModelSpec, load_job, run_job
from overinterp.report import ReportOptions, build_report
from overinterp.results import append_results, model_fingerprint
from overinterp.training.trainer import TrainConfig, train_classifier

CLASSES = ["top-left", "top-right", "bottom-left", "bottom-right"]
OPTIONS = dict(threshold=0.6, thresholds=(0.4, 0.5, 0.6, 0.7))


def _quadrant_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 8, 8) uint8: grey noise, the label's quadrant brighter in a random colour."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = 0.35 + 0.3 * torch.rand(n, 3, 8, 8, generator=g)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    for i, y in enumerate(labels.tolist()):
        r, c = divmod(y, 2)
        x[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = (
            0.5 * x[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] + 0.5 * colour[i]
        )
    return (x * 255).round().to(torch.uint8), labels


def _member(seed: int, images: torch.Tensor, labels: torch.Tensor) -> Classifier:
    config = TrainConfig(
        arch="smallcnn",
        arch_kwargs={"width": 4},
        preprocessing={"mean": [0.5] * 3, "std": [0.2] * 3},
        epochs=6,
        batch_size=64,
        lr=0.05,
        decay_norm_and_bias=False,
        schedule="cosine",
        milestones=(),
        warmup_epochs=1.0,
        augment=False,
        seed=seed,
        recipe="test",
    )
    data = LabeledImages(images, labels, CLASSES, name="quadrants", source="test")
    model = train_classifier(config, data, device="cpu", progress=False).model
    assert model.name == "smallcnn" and model.class_names == CLASSES and not model.training
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("run")
    train_x, train_y = _quadrant_images(400, 0)
    test_x, test_y = _quadrant_images(12, 1)
    test_y[[1, 4, 6, 11]] = (test_y[[1, 4, 6, 11]] + 1) % 4  # wrong labels: misclassified images for Figure 5
    np.savez(root / "test.npz", images=test_x.numpy(), labels=test_y.numpy(), classes=np.asarray(CLASSES))
    models, ckpts = [], []
    for seed in (0, 1):
        (root / f"m{seed}").mkdir()
        models.append(_member(seed, train_x, train_y))
        ckpts.append(save_checkpoint(root / f"m{seed}" / "model.pt", models[-1], "smallcnn", arch_kwargs={"width": 4}))
    ens = save_ensemble(root / "ens.json", ckpts, name="ens2")
    positions = tuple(range(12))
    specs = {
        "m0": ModelSpec(checkpoint=str(ckpts[0])),
        "m1": ModelSpec(checkpoint=str(ckpts[1])),
        "ens": ModelSpec(name=str(ens)),
    }
    for name, ms in specs.items():
        run_job(
            JobSpec(
                ms,
                dataset=str(root / "test.npz"),
                positions=positions,
                method=Exact().describe(),
                shard_size=6,
                batch_size=512,
            ),
            root / "jobs" / name,
            progress=False,
            log=lambda m: None,
        )
    fp0 = model_fingerprint(models[0])
    rows = [
        dict(
            experiment="table1",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp0,
            dataset="cifar10:test",
            seed=0,
            metric="accuracy",
            value=0.9,
            n=12,
        ),
        dict(
            experiment="table1",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp0,
            train_on="bs5",
            evaluate_on="bs5",
            dataset="cifar10:test",
            seed=0,
            metric="accuracy",
            value=0.7,
            n=12,
        ),
        dict(
            experiment="pixel-subsets",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp0,
            evaluate_on="bs5",
            dataset=str(root / "test.npz"),
            metric="accuracy",
            value=0.8125,
            n=12,
        ),
        dict(
            experiment="pixel-subsets",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp0,
            evaluate_on="bs5",
            dataset=str(root / "test.npz"),
            metric="confidence_drop_mean",
            value=0.0625,
            n=12,
        ),
        dict(
            experiment="pixel-subsets",
            model="smallcnn",
            arch="smallcnn",
            fingerprint=fp0,
            evaluate_on="bs5",
            dataset=str(root / "test.npz"),
            metric="subset_confidence",
            value=0.4321,
            n=12,
        ),
    ] + [
        dict(
            experiment="human-study",
            model="human",
            arch="human",
            fingerprint="study1",
            train_on="n/a",
            evaluate_on=f"bs{k}",
            dataset="cifar10:test",
            seed=p,
            metric="accuracy",
            value=v,
            n=10,
        )
        for p, (k, v) in enumerate([(5, 0.2), (5, 0.3), (30, 0.6), (30, 0.7)])
    ]
    append_results(root / "results.csv", rows)
    out = root / "report"
    report = build_report(root, out, ReportOptions(mask_style="checkerboard", **OPTIONS), log=lambda m: None)
    return {"root": root, "out": out, "report": report, "fp0": fp0}


def _html(run: dict[str, Any]) -> str:
    return (run["out"] / "report.html").read_text(encoding="utf-8")


def test_writes_every_file(run: dict[str, Any]) -> None:
    out, report = run["out"], run["report"]
    assert report.html_path == out / "report.html" and report.markdown_path == out / "summary.md"
    figures = [f for s in report.sections for f in s.figures]
    keys = {f.key.rsplit("-", 1)[0] if f.key[-1].isdigit() else f.key for f in figures}
    assert {
        "fig6-sis-size",
        "fig5-correct-vs-incorrect",
        "figS3-group-confidence",
        "fig2-subset-locations",
        "fig4-sis-locations",
        "fig1-sis-examples",
        "figS2-ensemble",
    } <= keys
    for f in figures:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f.svg is not None and b"<svg" in f.svg.read_bytes()[:2000]
    tables = [t for s in report.sections for t in s.tables]
    assert all(t.csv is not None and t.csv.is_file() for t in tables)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]  # atomic writes
    md = report.markdown_path.read_text(encoding="utf-8")
    for f in figures:
        assert f"]({os.path.relpath(f.png, out)})" in md


def test_html_is_self_contained(run: dict[str, Any]) -> None:
    html = _html(run)
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) == sum(len(s.figures) for s in run["report"].sections) >= 7
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "<link" not in html and "url(" not in html
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)


def test_sis_size_table_is_the_trace_analysis(run: dict[str, Any]) -> None:
    job = load_job(run["root"] / "jobs" / "m0")
    curve = sis_size_curve(job.trace, OPTIONS["thresholds"])
    with open(run["out"] / "tables" / "sis-size.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["series"] == "smallcnn (m0)"]
    assert [int(r["n"]) for r in rows] == curve.n.tolist()
    for r, m in zip(rows, curve.mean.tolist()):
        assert float(r["mean_sis_fraction"]) == pytest.approx(m, rel=1e-5)


def test_score_and_tables_come_from_results(run: dict[str, Any]) -> None:
    with open(run["out"] / "tables" / "score.csv", newline="") as fh:
        score = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(score) == {"smallcnn (m0)", "smallcnn (m1)", "ens2"}
    m0, m1 = score["smallcnn (m0)"], score["smallcnn (m1)"]
    assert float(m0["bs5_accuracy"]) == 0.8125 and m0["bs5_accuracy_source"] == "results"
    assert float(m0["confidence_drop"]) == 0.0625
    assert m1["bs5_accuracy_source"] == "report"  # no results row: computed by the report's forward pass
    html = _html(run)
    assert "81.25%" in html
    with open(run["out"] / "tables" / "subset-confidence.csv", newline="") as fh:
        conf = {r["model"]: r for r in csv.DictReader(fh)}
    assert conf["smallcnn (m0)"]["source"] == "this report"  # the model loads: measured, not read
    assert "Table 1 — experiment <code>table1</code>" in html
    assert "Table 2 — experiment <code>human-study</code>" in html
    assert "25.00 ± 7.07 (n=2)" in html  # human accuracy on bs5: mean ± sample std over participants
    assert (run["out"] / "tables" / "results-human-study-accuracy.csv").is_file()


def test_empty_run_folder_is_an_error_that_says_what_to_run(tmp_path: Path) -> None:
    """Issue 26 (minor): a folder with no runs is an error and nothing is written into it.
    Guards against: an empty report written into any folder a user mistyped."""
    from overinterp.errors import UserInputError

    (tmp_path / "run").mkdir()
    with pytest.raises(UserInputError, match="holds no runs") as err:
        build_report(tmp_path / "run", log=lambda m: None)
    assert "overinterp backselect-dataset" in str(err.value) and "results.csv" in str(err.value)
    assert list((tmp_path / "run").iterdir()) == []


def test_command_line_without_model(run: dict[str, Any], tmp_path: Path) -> None:
    from overinterp.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "report",
                str(run["root"]),
                "--out",
                str(tmp_path / "r"),
                "--no-model",
                "--threshold",
                "0.6",
                "--thresholds",
                "0.5,0.6",
                "--mask-style",
                "grey",
            ]
        )
    assert rc == 0
    assert f"report: {tmp_path / 'r' / 'report.html'}" in buf.getvalue()
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert '<td class="num">0.432</td><td>results</td>' in html  # read from the results row instead
    assert "no confidence on the subsets" in html and "overinterp subsets evaluate --job" in html


def test_unreadable_images_are_a_note(run: dict[str, Any], tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run["root"] / "jobs" / "m0", moved / "jobs" / "m0")
    manifest = json.loads((moved / "jobs" / "m0" / "manifest.json").read_text())
    manifest["spec"]["dataset"] = str(tmp_path / "gone.npz")
    (moved / "jobs" / "m0" / "manifest.json").write_text(json.dumps(manifest))
    report = build_report(moved, options=ReportOptions(**OPTIONS), log=lambda m: None)
    notes = " ".join(n for s in report.sections for n in s.notes)
    assert "not readable here" in notes
    assert any(f.key.startswith("fig6") for s in report.sections for f in s.figures)  # traces still analysed


def _chromium() -> str | None:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    return path


def test_html_renders_in_headless_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium executable (Debian's `chromium` package) on this machine")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    shot = tmp_path / "report.png"
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 3000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto((run["out"] / "report.html").as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
            )
            page.screenshot(path=str(shot), full_page=True)
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert len(sizes) >= 7 and all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert "Run contents" in headings and any("Figure 6" in h for h in headings)
    keep = os.environ.get("OVERINTERP_REPORT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "test-run-report.png")
