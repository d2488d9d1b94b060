"""``overinterp audit`` / ``overinterp.audit``: the plan (method and image count from a budget),
the pipeline check before any work, the sample, the budget cap, the numbers and their
intervals, and the whole chain on tiny models, resumed."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import overinterp
from overinterp.errors import UserInputError
from overinterp.experiments.audit import (
    MIN_IMAGES,
    REPORT_SECONDS,
    AuditResult,
    Throughput,
    format_plan,
    images_needed,
    parse_duration,
    plan_audit,
    stratified_order,
)
from overinterp.training.pipeline import PipelineError, PipelineWarning

P = 64  # 8×8 pixels


def tp(fb: float | None = 2.0, fps: float = 1000.0) -> Throughput:
    return Throughput(forwards_per_s=fps, fb_cost=fb, batch_size=64, layout="channels_last", seconds=1.0)


def per_image(method: str, fb: float | None = 2.0, **params) -> float:
    """Seconds per image from the method's own planned cost, computed here by hand."""
    cost = overinterp.make_method(method, **params).planned_cost(P)
    return (cost["forward"] + cost["forward_backward"] * (fb or 0.0)) / (1000.0 * 0.92)


def plan(**kw):
    kw.setdefault("throughput", tp())
    return plan_audit(model_name="m", dataset="d", num_features=P, available_images=1000, **kw)


def test_exact_is_chosen_when_the_budget_buys_it_enough_images():
    budget = REPORT_SECONDS + per_image("exact") * MIN_IMAGES * 1.01
    p = plan(budget_seconds=budget)
    assert p.method["name"] == "exact"
    assert p.images == math.floor((budget - REPORT_SECONDS) / per_image("exact"))


def test_a_smaller_budget_falls_to_fast_then_to_the_faithful_method_fitting_most():
    budget = REPORT_SECONDS + per_image("exact") * (MIN_IMAGES - 2)
    p = plan(budget_seconds=budget)
    assert p.method["name"] == "fast"
    assert p.images == min(1000, math.floor((budget - REPORT_SECONDS) / per_image("fast")))
    assert "exact fits" in p.reason
    tiny = REPORT_SECONDS + per_image("fast") * 3.5
    p = plan(budget_seconds=tiny)
    assert (p.method["name"], p.images) == ("fast", 3)


def test_the_unfaithful_method_only_when_no_faithful_one_fits_one_image():
    budget = REPORT_SECONDS + per_image("fast") * 0.5
    p = plan(budget_seconds=budget)
    assert p.method == {"name": "gradient", "params": overinterp.make_method("gradient", k=8).params()}
    assert "WARNING" in p.reason and "not faithful" in p.reason
    with pytest.raises(UserInputError, match="too small for even one image"):
        plan(budget_seconds=REPORT_SECONDS + per_image("gradient", k=8) * 0.5)
    with pytest.raises(UserInputError, match="too small for even one image: the cheapest method"):
        plan(budget_seconds=REPORT_SECONDS / 2)  # less than the reserve for evaluation and report


def test_images_caps_and_no_budget_means_fast_on_every_image():
    p = plan(images=7)
    assert (p.method["name"], p.images) == ("fast", 7)
    assert p.job_seconds == pytest.approx(7 * per_image("fast"))
    assert plan(images=5000).images == 1000


def test_forward_only_models_never_get_gradient_methods():
    fo = tp(fb=None)
    p = plan(throughput=fo)
    assert p.method["name"] == "adaptive"  # the faithful forward-only candidate
    assert any("forward-only" in r.note for r in p.rows if r.method["name"] == "fast")
    with pytest.raises(UserInputError, match="forward-only methods: exact, .*adaptive") as err:
        plan(throughput=fo, method=overinterp.Fast())
    listed = str(err.value).rpartition("forward-only methods: ")[2].split(", ")
    assert "fast" not in listed and "gradient" not in listed  # read from the registry, not a hand-kept list


def test_a_fixed_method_is_used_and_its_budget_fit_is_checked():
    p = plan(method=overinterp.KStep(4), budget_seconds=REPORT_SECONDS + per_image("kstep", k=4) * 3.2)
    assert (p.method["name"], p.images) == ("kstep", 3)
    with pytest.raises(UserInputError, match="not one image fits"):
        plan(method=overinterp.Exact(), budget_seconds=REPORT_SECONDS + per_image("exact") * 0.5)


def test_plan_text_marks_the_choice_and_bad_inputs_are_refused():
    p = plan(budget_seconds=600)
    text = format_plan(p)
    assert "→ " + p.method["name"] in text and "images in budget" in text
    for bad in (0, -5):
        with pytest.raises(UserInputError):
            plan(budget_seconds=bad)
    with pytest.raises(UserInputError):
        plan(images=0)


@pytest.mark.parametrize(
    "text,seconds", [("90s", 90), ("20m", 1200), ("1.5h", 5400), ("1h30m", 5400), ("600", 600), ("2min", 120)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5m", "0", "5m junk"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


class Channels(nn.Module):
    """A model that is right by construction on :func:`channel_images`: logits = 20 × channel means."""

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.sleep = sleep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sleep:
            time.sleep(self.sleep)
        return self.scale * x.mean((2, 3))


class DictOut(Channels):
    """Hugging Face style: a mapping with ``logits``."""

    def forward(self, x):  # type: ignore[override]
        return {"logits": super().forward(x), "hidden_states": None}


class ObjOut(Channels):
    """Hugging Face style: an output object with ``.logits``."""

    def forward(self, x):  # type: ignore[override]
        return SimpleNamespace(logits=super().forward(x), loss=None)


def channel_images(n: int = 30, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3, size, size)`` noise in [0, 1] whose class channel (label = i mod 3) is brighter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.5
    y = torch.arange(n) % 3
    for i in range(n):
        x[i, y[i]] += 0.5
    return x, y


def test_a_larger_sample_extends_a_smaller_one_and_every_prefix_is_stratified():
    """Wrong implementations caught: a sample drawn anew for each size (a larger budget would
    change the images), an unstratified shuffle (a prefix of 10 could hold one class 6 times)."""
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    order = stratified_order(labels, 100, seed=3)
    assert sorted(order) == list(range(100)) and order == stratified_order(labels, 100, seed=3)
    assert order != stratified_order(labels, 100, seed=4)
    for m in (10, 20, 37, 60):
        counts = torch.bincount(labels[order[:m]], minlength=3).tolist()
        expected = [m * 0.5, m * 0.3, m * 0.2]
        assert all(abs(c - e) <= 1.0 for c, e in zip(counts, expected)), (m, counts)
    assert sorted(stratified_order(None, 7, seed=0)) == list(range(7))


def test_images_needed_grows_as_the_gap_to_chance_shrinks():
    strong, weak = images_needed(0.95, 10), images_needed(0.4, 10)
    assert strong["subsets"] < weak["subsets"] and strong["sis"] == weak["sis"] == 97
    assert images_needed(None, 1000)["subsets"] >= 1


@pytest.mark.parametrize("model_cls", [Channels, DictOut, ObjOut])
def test_one_python_call_on_a_module_and_a_tensor(model_cls, tmp_path):
    """``overinterp.audit(module, tensor)``: the result has the numbers, the verdict, the report and
    ``save``; modules returning a mapping or an object with ``.logits`` are taken as they are.
    Wrong implementations caught: a module output other than a tensor rejected; a report whose top
    is not the verdict; intervals outside [0, 1]."""
    x, y = channel_images(12)
    out = tmp_path / "a"
    r = overinterp.audit(
        model_cls(), x, labels=y, images=6, method=overinterp.Exact(), out=out, probe_seconds=0.2, progress=False
    )
    assert isinstance(r, AuditResult) and r.finished_images == r.planned_images == 6
    assert r.verdict in ("overinterprets", "no evidence", "undecided") and r.summary
    acc = r.evaluation["accuracy"]
    assert acc["full"]["value"] == 1.0 and acc["full"]["k"] == 6
    for d in (*acc.values(), *r.evaluation["sis"].values(), *r.evaluation["confidence"].values()):
        assert d["n"] == 0 or (d["low"] != d["low"]) or 0.0 <= d["low"] <= d["value"] <= d["high"] <= 1.0
    page = r.report.read_text()
    assert r.report == out / "report" / "index.html"
    top = page.index('class="verdict"')
    assert top < page.index("<table>") < page.index("What the model looks at") < page.index("Plan and timing")
    assert "too few images (n = " not in page[:top]
    saved = r.save(tmp_path / "copy")
    assert json.loads(saved.read_text())["verdict"] == r.verdict


def test_intervals_in_the_audit_numbers_and_report_stay_in_range_on_tiny_and_degenerate_inputs(tmp_path):
    """3 images, all right: accuracy intervals are Wilson's (inside [0, 1], not [1, 1]); SIS sizes
    and confidences have no interval and the report says "too few images (n = 3)". Wrong
    implementation caught: a t interval on 3 bounded values (it leaves [0, 1])."""
    x, y = channel_images(3)
    r = overinterp.audit(
        Channels(), x, labels=y, method=overinterp.Exact(), out=tmp_path / "a", probe_seconds=0.2, progress=False
    )
    full = r.evaluation["accuracy"]["full"]
    assert full["value"] == 1.0 and 0.0 < full["low"] < 1.0 and full["high"] == 1.0
    sis = r.evaluation["sis"]["0.9"]
    assert sis["n"] == 3 and sis["low"] != sis["low"]
    page = r.report.read_text()
    assert "too few images (n = 3)" in page
    for lo, hi in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\]", page):
        assert -100.0 <= float(lo) <= float(hi) <= 100.0
    # audit.json is strict JSON (a missing interval is null, not NaN, which other readers refuse) and the
    # report rebuilt from it is the same page. Wrong implementation caught: json.dumps' default NaN output.
    from overinterp.report import build_audit_report

    text = (tmp_path / "a" / "audit.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"audit.json holds {c}, which is not JSON"))
    again = build_audit_report(tmp_path / "a").read_text()
    assert "too few images (n = 3)" in again and "nan" not in again.lower()


def test_unlabelled_images_are_audited_against_the_predicted_class(tmp_path):
    x, _ = channel_images(6)
    r = overinterp.audit(
        Channels(), x, method=overinterp.Exact(), out=tmp_path / "a", probe_seconds=0.2, progress=False, report=False
    )
    assert r.evaluation["labelled"] is False and r.evaluation["accuracy"]["full"]["value"] == 1.0
    assert "accuracy is unknown" in r.summary and r.report is None


def test_a_collapsed_model_is_refused_before_any_work_and_force_overrides(tmp_path):
    class One(nn.Module):
        def forward(self, x):
            return torch.tensor([[5.0, 0.0, 0.0]]).expand(x.shape[0], 3) + 0 * x.mean()

    x, y = channel_images(30)
    with pytest.raises(PipelineError, match="not clearly above chance.*force=True"):
        overinterp.audit(One(), x, labels=y, out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "plan.json").exists()
    with pytest.warns(PipelineWarning):
        r = overinterp.audit(
            One(),
            x,
            labels=y,
            images=3,
            method=overinterp.Exact(),
            out=tmp_path / "b",
            force=True,
            probe_seconds=0.2,
            progress=False,
            report=False,
        )
    assert r.record["plan"]["pipeline_check"]["forced"] is True


def test_the_budget_is_a_cap_and_a_larger_budget_continues_the_same_sample(tmp_path):
    """A slow model (2 ms per forward call): the job stops when the budget is spent with shards
    left, the finished images are a prefix of the sample, and a rerun with a larger budget
    computes only new shards. Wrong implementations caught: a budget used only to choose the
    method (the job would run all 60 images), a rerun that recomputes or reorders the sample."""
    x, y = channel_images(60)
    out = tmp_path / "a"
    kw = dict(labels=y, method=overinterp.Exact(), out=out, probe_seconds=0.3, progress=False, report=False)
    first = overinterp.audit(Channels(sleep=0.002), x, budget=REPORT_SECONDS + 4.0, **kw)
    assert 0 < first.finished_images < 60
    assert first.record["job"]["complete"] < first.record["job"]["shards"]
    assert first.seconds["job"] < 4.0 + 2.0
    second = overinterp.audit(Channels(sleep=0.002), x, budget=REPORT_SECONDS + 8.0, **kw)
    assert second.finished_images > first.finished_images and second.planned_images > first.finished_images
    assert second.record["positions"][: first.finished_images] == first.record["positions"]
    assert second.record["job"]["skipped"] >= first.record["job"]["complete"]


def _cli(*args: str) -> int:
    from overinterp.cli import main

    return main(["audit", *args, "--threads", "1", "--no-progress", "--probe-seconds", "0.2"])


def test_cli_refuses_the_0_255_tflite_model_declared_without_its_range(tmp_path, capsys):
    """The project's 0-255 TFLite fixture on its own shortcut images, declared without
    ?range=0:255: refused before any work, the message naming the fix and --force."""
    pytest.importorskip("ai_edge_litert")
    from overinterp.data.synthetic import make_shortcut_dataset

    data = make_shortcut_dataset(64, size=16, num_classes=4, seed=1)
    path = tmp_path / "shortcut.npz"
    images = (data.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(path, images=images, labels=data.labels.numpy())
    model = Path(__file__).parents[1] / "models" / "fixtures" / "tiny_cnn_255_nhwc_float.tflite"
    assert _cli(str(model), str(path), "--out", str(tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert "range=0:255" in err and "--force" in err and "force=True" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a" / "plan.json").exists()


@pytest.mark.slow
def test_cli_end_to_end_resumes_and_refuses_other_arguments(tmp_path, capsys):
    x, y = channel_images(8)
    data = tmp_path / "d.npz"
    np.savez(data, images=(x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), labels=y.numpy())
    model = tmp_path / "m.pt"
    torch.jit.trace(Channels().eval(), torch.rand(1, 3, 8, 8)).save(str(model))
    out = tmp_path / "audit"
    args = [f"torchscript:{model}", str(data), "--out", str(out), "--images", "4", "--method", "exact"]
    assert _cli(*args) == 0
    text = capsys.readouterr().out
    assert "audit plan —" in text and "verdict:" in text
    first_shard = min(f.stat().st_mtime_ns for f in (out / "job" / "shards").glob("*.pt"))
    assert (out / "plan.json").stat().st_mtime_ns < first_shard  # the plan is written before the work
    record = json.loads((out / "audit.json").read_text())
    assert record["plan"]["images"] == 4 and record["plan"]["method"]["name"] == "exact"
    assert (out / "report" / "index.html").is_file()
    rows = overinterp.results.read_results(out / "results.csv")
    metrics = {(r["evaluate_on"], r["metric"]) for r in rows}
    assert {("bs5", "accuracy"), ("random5", "accuracy"), ("full", "sis_fraction_mean@0.99")} <= metrics
    assert _cli(*args) == 0  # resume: same plan, no shard recomputed, rows not doubled
    text = capsys.readouterr().out
    assert "resuming the plan" in text and "audit plan —" not in text
    again = json.loads((out / "audit.json").read_text())
    assert again["job"]["computed"] == 0 and again["evaluation"] == record["evaluation"]
    assert len(overinterp.results.read_results(out / "results.csv")) == len(rows)
    assert _cli(*args[:-2], "--method", "fast") == 2
    assert "holds an audit with other arguments" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert _cli(*args[:2], "--out", str(tmp_path / "other"), "--images", "2") == 2
    assert "holds no audit" in capsys.readouterr().err
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"


def test_a_flat_folder_of_photos_of_any_sizes_is_audited_at_the_models_size(tmp_path):
    """Photos of three sizes, no class folders: resized and centre-cropped to ``size``, audited
    against the predicted class; without a size the different sizes are an error naming size=."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    x, _ = channel_images(9, size=12)
    for i in range(9):
        img = (x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(img).resize((12 + i, 12 + 2 * (i % 3))).save(photos / f"p{i}.png")
    with pytest.raises(ValueError, match="give size="):
        overinterp.audit(Channels(), photos, out=tmp_path / "a", progress=False)
    r = overinterp.audit(
        Channels(),
        str(photos),
        size=8,
        method=overinterp.Exact(),
        out=tmp_path / "b",
        probe_seconds=0.2,
        progress=False,
    )
    assert r.finished_images == 9 and r.record["dataset"] == "photos" and not r.evaluation["labelled"]
    assert "accuracy is unknown" in r.summary and "photos" in r.report.read_text()


def test_a_hugging_face_image_classifier_is_audited_as_it_is(tmp_path):
    """A small randomly initialised ``transformers`` ResNet (its forward returns an
    ``ImageClassifierOutputWithNoAttention``): accepted as it is. Labels are its own predictions,
    so the pipeline check judges the plumbing, not the random weights."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, layer_type="basic"
    )
    torch.manual_seed(0)
    hf = transformers.ResNetForImageClassification(cfg).eval()
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        y = hf(x).logits.argmax(1)
    r = overinterp.audit(
        hf,
        x,
        labels=y,
        method=overinterp.Exact(),
        patch=4,
        out=tmp_path / "a",
        probe_seconds=0.2,
        progress=False,
        report=False,
    )
    assert r.finished_images == 6 and r.evaluation["accuracy"]["full"]["value"] == 1.0


def test_verdict_states_the_interval_of_what_it_says():
    """A confidence that rises from the full image to the 5% subsets is written as a rise with a
    positive interval. Wrong implementation caught: the text says "rises by 1.7 points" but prints
    the drop's interval [-4.1, -0.3], whose signs contradict the words."""
    from overinterp.experiments.audit import verdict

    def cell(value, low, high, n=50):
        return {"value": value, "low": low, "high": high, "n": n}

    ev = {
        "accuracy": {"bs5": cell(0.96, 0.87, 0.99), "random5": cell(0.1, 0.04, 0.21), "full": cell(0.96, 0.87, 0.99)},
        "labelled": True,
        "images": 50,
        "confidence_drop": {"bs5": cell(-0.017, -0.041, -0.003)},
        "sis": {},
    }
    _, text = verdict(ev, model="m", dataset="d")
    assert "rises by 1.7 points" in text and "[0.3, 4.1]" in text
    ev["confidence_drop"]["bs5"] = cell(0.05, 0.02, 0.08)
    _, text = verdict(ev, model="m", dataset="d")
    assert "drops by 5.0 points" in text and "[2.0, 8.0]" in text
