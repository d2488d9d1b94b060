"""The input-dropout mitigation experiment on tiny generated data."""

from __future__ import annotations

import json

import pytest
import torch

import overinterp
from overinterp.experiments.mitigation import input_dropout_mitigation, sis_sizes
from overinterp.models.dropout import InputDropoutClassifier
from overinterp.results import model_fingerprint, read_results


def _easy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes, class k brighter in channel k: learnt in one epoch, so some images are confident."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randint(0, 100, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    x[torch.arange(n), y] += 150
    return x, y


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mit")
    recs = input_dropout_mitigation(
        _easy(48, 0),
        _easy(12, 1),
        rate=0.3,
        seeds=(0,),
        overrides={"epochs": 2, "batch_size": 8, "arch_kwargs": {"width": 4}, "label_smoothing": 0.0},
        out_dir=d / "runs",
        threshold=0.6,
        sis_images=3,
        inference_samples=2,
        method=overinterp.Exact(),
        dataset_key="toy:test",
        results=d / "r.csv",
        progress=False,
        log=None,
    )
    return d, recs


def test_trains_with_and_without_dropout_and_scores_both(run):
    d, recs = run
    assert [(r["model"], r["rate"], r["inference_samples"]) for r in recs] == [
        ("smallcnn", 0.0, 0),
        ("smallcnn+input-dropout0.3", 0.3, 0),
        ("smallcnn+input-dropout0.3+inference2", 0.3, 2),
    ]
    for rate in (0, 0.3):
        cfg = json.loads((d / "runs" / f"smallcnn-dropout{rate:g}-seed0" / "config.json").read_text())["config"]
        assert cfg["input_dropout"] == rate
    plain = overinterp.load_model(None, checkpoint=d / "runs" / "smallcnn-dropout0-seed0" / "model.pt")
    dropped = overinterp.load_model(None, checkpoint=d / "runs" / "smallcnn-dropout0.3-seed0" / "model.pt")
    assert model_fingerprint(plain) != model_fingerprint(dropped)
    # the recorded SIS sizes are those of the saved models (and of the inference wrapper of the second)
    x, y = _easy(12, 1)
    pixels = x[:3].float() / 255
    for rec, model in zip(recs, (plain, dropped, InputDropoutClassifier(dropped, 0.3, samples=2, seed=0))):
        direct = sis_sizes(model, pixels, 0.6, method=overinterp.Exact())
        assert rec["sizes"] == direct["sizes"] and rec["with_sis"] == direct["with_sis"]
        with torch.no_grad():
            acc = float((model(x.float() / 255).argmax(1) == y).double().mean())
        assert rec["accuracy"] == pytest.approx(acc)
    assert any(r["with_sis"] for r in recs)


def test_rows_in_the_results_file(run):
    d, recs = run
    rows = read_results(d / "r.csv")
    got = {(r["model"], r["metric"]) for r in rows}
    for rec in recs:
        assert (rec["model"], "accuracy") in got and (rec["model"], "confident_fraction") in got
        assert ((rec["model"], "sis_size_mean") in got) == bool(rec["with_sis"])
    for r in rows:
        assert (r["experiment"], r["train_on"], r["dataset"], r["seed"]) == ("mitigation", "full", "toy:test", 0)
        assert "tau=0.6" in r["notes"]
    sis_rows = [r for r in rows if r["metric"] == "sis_size_mean"]
    for r in sis_rows:
        rec = next(x for x in recs if x["model"] == r["model"])
        assert r["value"] == pytest.approx(rec["sis_size_mean"]) and r["n"] == rec["with_sis"]
        sizes = [s for s in rec["sizes"] if s is not None]
        assert rec["sis_size_mean"] == pytest.approx(sum(sizes) / len(sizes) / 64)


def test_a_rerun_appends_no_row_twice(run):
    d, recs = run
    before = len(read_results(d / "r.csv"))
    input_dropout_mitigation(
        _easy(48, 0),
        _easy(12, 1),
        rate=0.3,
        seeds=(0,),
        overrides={"epochs": 2, "batch_size": 8, "arch_kwargs": {"width": 4}, "label_smoothing": 0.0},
        out_dir=d / "runs",
        threshold=0.6,
        sis_images=3,
        inference_samples=2,
        method=overinterp.Exact(),
        dataset_key="toy:test",
        results=d / "r.csv",
        progress=False,
        log=None,
    )
    assert len(read_results(d / "r.csv")) == before


def test_bad_settings_are_refused():
    data = _easy(6, 0)
    for kwargs, match in (
        ({"rate": 0.0}, "rate must be > 0"),
        ({"rate": 1.0}, r"rate must be a number in \[0, 1\)"),
        ({"sis_images": 0}, "sis_images"),
        ({"inference_samples": -1}, "inference_samples"),
        ({"seeds": ()}, "no seeds"),
    ):
        with pytest.raises(ValueError, match=match):
            input_dropout_mitigation(data, data, **kwargs)
