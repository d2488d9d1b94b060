"""The demo end to end on a reduced setting, and the training loop it uses."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from overinterp.training.train import evaluate, fit


@pytest.fixture(scope="module")
def demo_run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    from overinterp.experiments.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary = run_demo(out, seed=0, n_train=4000, n_test=500, n_sis=12, progress=False, verbose=True)
    return out, summary, buf.getvalue()


@pytest.mark.slow
def test_demo_writes_files(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    out, summary, report = demo_run
    png, js = out / "sis_heatmap.png", out / "summary.json"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert js.is_file()
    assert json.loads(js.read_text()) == summary
    # the run folder `overinterp report` reads, and no temp files left anywhere
    assert sorted(p.name for p in out.iterdir()) == [
        "data", "jobs", "model.pt", "report", "results.csv", "results.csv.lock", "sis_heatmap.png", "summary.json"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    # The printed account names the figure, and ends with the report's path.
    html = out / "report" / "report.html"
    assert f"figure:  {png}" in report
    assert report.strip().endswith(str(html)) and summary["files"]["report"] == str(html)
    assert summary["sis_frequency"] and len(summary["sis_frequency"]) == 16
    assert len(summary["images"]) == summary["sis"]["n_images"] == 12


@pytest.mark.slow
def test_demo_leaves_a_run_folder_with_its_report(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    from overinterp import read_results
    from overinterp.jobs import load_job

    out, summary, _ = demo_run
    job = load_job(out / "jobs" / "demo")
    # the job covers the SIS images plus misclassified ones, read back from the uint8 file
    assert len(job.trace) > summary["sis"]["n_images"] == 12
    assert bool((job.trace.target != job.labels).any())
    assert job.load_images().dtype == torch.uint8
    assert job.load_model().name == "smallcnn"
    rows = read_results(out / "results.csv")
    acc = {r["dataset"]: r["value"] for r in rows if r["metric"] == "accuracy"}
    assert acc["synthetic:shortcut-test"] == pytest.approx(summary["accuracy"]["shortcut_test"])
    assert acc["synthetic:clean-test"] == pytest.approx(summary["accuracy"]["clean_test"])
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 6 and "Figure 6" in html
    assert (out / "report" / "summary.md").is_file() and (out / "report" / "tables" / "score.csv").is_file()


@pytest.mark.slow
def test_demo_sis_find_the_planted_pixels(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    _, summary, _ = demo_run
    sis = summary["sis"]
    assert sis["verified"]
    assert sis["n_with_sis"] >= 10
    assert sis["planted_share_of_image"] == pytest.approx(4 / 256)
    # Project requirement: SIS pixels land on the planted pixels at least 10x more
    # often than the planted area's share of the image.
    assert sis["fraction_on_planted"] >= 10 * sis["planted_share_of_image"]
    assert sis["enrichment"] >= 10
    # The frequency map agrees: planted pixels are the most frequent SIS members.
    freq = torch.tensor(summary["sis_frequency"])
    planted = torch.zeros(16, 16, dtype=torch.bool)
    for r, c in summary["shortcut_pixels"]:
        planted[r, c] = True
    assert freq[planted].mean() >= 10 * freq.mean()


@pytest.mark.slow
def test_demo_model_relies_on_shortcut(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    _, summary, _ = demo_run
    acc = summary["accuracy"]
    assert acc["shortcut_test"] >= 0.9
    assert acc["clean_test"] <= acc["shortcut_test"] - 0.2  # clearly below
    assert acc["clean_test"] > 0.3  # but above chance (0.25): the shapes are learnable


# ---------------------------------------------------------------------------
# the training loop


def _toy(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return x, y


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))


def test_fit_learns_and_is_deterministic() -> None:
    x, y = _toy()
    a, b = _net(), _net()
    ha = fit(a, x, y, epochs=5, batch_size=32, lr=0.1, progress=False)
    fit(b, x, y, epochs=5, batch_size=32, lr=0.1, progress=False)
    assert [h["epoch"] for h in ha] == [1, 2, 3, 4, 5]
    assert set(ha[0]) >= {"epoch", "loss", "accuracy", "lr", "seconds"}
    assert ha[-1]["loss"] < ha[0]["loss"]
    assert ha[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine decays to zero
    assert not a.training  # returned in eval mode
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    ev = evaluate(a, *_toy(seed=1))
    assert ev["accuracy"] > 0.85 and 0.5 <= ev["mean_confidence"] <= 1.0


def test_fit_calls_augment_and_evaluate_restores_mode() -> None:
    x, y = _toy(64)
    calls = []

    def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(batch.shape[0])
        return batch + 0.01 * torch.randn(batch.shape, generator=generator)

    net = _net()
    fit(net, x, y, epochs=2, batch_size=16, augment=augment, progress=False)
    assert calls == [16] * 8
    net.train()
    evaluate(net, x, y)
    assert net.training
    with pytest.raises(ValueError):
        fit(net, x, y[:-1], epochs=1, progress=False)
