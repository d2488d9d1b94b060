"""The demo end to end on a reduced setting, and the training recipe it gives the project's trainer."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from overinterp.experiments.demo import DEMO_DEFAULTS, DEMO_RECIPE, demo_config
from overinterp.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def demo_run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    from overinterp.experiments.demo import run_demo
    from overinterp.report import demo_report

    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary = run_demo(
            out, seed=0, n_train=4000, n_test=500, n_sis=12, progress=False, verbose=True, report=demo_report
        )
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
        "data",
        "jobs",
        "model.pt",
        "report",
        "results.csv",
        "sis_heatmap.png",
        "summary.json",
    ]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    # The printed account names the figure, and ends with the report's path.
    html = out / "report" / "report.html"
    assert f"figure:  {png}" in report
    assert report.strip().endswith(str(html)) and summary["files"]["report"] == str(html)
    assert summary["sis_frequency"] and len(summary["sis_frequency"]) == 16
    assert len(summary["images"]) == summary["sis"]["n_images"] == 12


@pytest.mark.slow
def test_demo_leaves_a_run_folder_with_its_report(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    from overinterp.jobs import load_job
    from overinterp.results import read_results

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
# the training recipe and the caller's random state


@pytest.mark.slow
def test_demo_trains_with_the_project_trainer(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    _, summary, _ = demo_run
    history = summary["training"]
    assert [h["epoch"] for h in history] == list(range(1, DEMO_DEFAULTS["epochs"] + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-3)  # cosine decay towards 0
    # "auto" preprocessing: the baseline is the training images' mean pixel
    assert len(summary["normalization"]["mean"]) == 3 and all(0.0 < m < 1.0 for m in summary["normalization"]["mean"])


def test_demo_config_is_the_recipe_with_epochs_and_seed() -> None:
    cfg = demo_config(epochs=3, seed=7)
    assert (cfg.epochs, cfg.seed) == (3, 7)
    assert dataclasses.replace(cfg, epochs=DEMO_RECIPE.epochs, seed=DEMO_RECIPE.seed) == DEMO_RECIPE
    assert cfg.schedule == "cosine" and cfg.warmup_epochs == 1.0 and not cfg.augment
    assert not cfg.decay_norm_and_bias and cfg.preprocessing == "auto" and cfg.arch == "smallcnn"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # storable in a checkpoint


def test_demo_leaves_the_callers_random_state(one_thread: None, tmp_path: Path) -> None:
    from overinterp.experiments import demo

    torch.manual_seed(123)
    before = torch.get_rng_state()
    calls: list[TrainConfig] = []

    def fake_train(config: TrainConfig, train: Any, **kwargs: Any) -> Any:
        calls.append(config)
        torch.manual_seed(config.seed)  # what the trainer does
        torch.rand(3)
        raise RuntimeError("stop after training")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "train_classifier", fake_train)
        with pytest.raises(RuntimeError, match="stop after training"):
            demo.run_demo(tmp_path, seed=5, n_train=40, n_test=8, n_sis=2, epochs=2, progress=False, verbose=False)
    assert calls == [demo_config(2, 5)]
    assert torch.equal(torch.get_rng_state(), before)
