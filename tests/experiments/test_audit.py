"""``overinterp audit``: the plan (method and image count from a budget), the
guards before any work, and the whole chain on a tiny model, resumed."""

from __future__ import annotations

import json
import math

import pytest

import overinterp
from jobkit import write_dataset, write_model
from overinterp.errors import UserInputError
from overinterp.experiments.audit import (
    MIN_IMAGES,
    REPORT_SECONDS,
    Throughput,
    format_plan,
    parse_duration,
    plan_audit,
)

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
    with pytest.raises(UserInputError, match="forward-only methods: exact, adaptive"):
        plan(throughput=fo, method=overinterp.Fast())


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


def _audit(*args: str) -> int:
    from overinterp.cli import main

    return main(["audit", *args, "--threads", "1", "--no-progress", "--probe-seconds", "0.2"])


@pytest.mark.slow
def test_audit_end_to_end_resumes_and_refuses_other_arguments(tmp_path, capsys):
    model = write_model(tmp_path / "m.pt")
    data = write_dataset(tmp_path / "d.npz", n=6)
    out = tmp_path / "audit"
    args = [str(model), f"{data}:test", "--out", str(out), "--images", "4", "--method", "exact"]
    assert _audit(*args) == 0
    assert "audit plan —" in capsys.readouterr().out
    first_shard = min(f.stat().st_mtime_ns for f in (out / "job" / "shards").glob("*.pt"))
    assert (out / "plan.json").stat().st_mtime_ns < first_shard  # the plan is written before the work
    record = json.loads((out / "audit.json").read_text())
    assert record["plan"]["images"] == 4 and record["plan"]["method"]["name"] == "exact"
    assert (out / "report" / "report.html").is_file()
    rows = overinterp.results.read_results(out / "results.csv")
    metrics = {(r["evaluate_on"], r["metric"]) for r in rows}
    assert {("bs5", "accuracy"), ("random5", "accuracy"), ("full", "sis_fraction_mean@0.99")} <= metrics
    n_rows = len(rows)

    assert _audit(*args) == 0  # resume: same plan, no shard recomputed, rows not appended twice
    text = capsys.readouterr().out
    assert "resuming the plan" in text and "audit plan —" not in text
    again = json.loads((out / "audit.json").read_text())
    assert again["job"]["computed"] == 0
    assert again["evaluation"] == record["evaluation"] and again["evaluation"]["bs5"]["n"] == 4
    assert again["seconds"]["job"] == record["seconds"]["job"]  # the first run's times are kept
    assert len(overinterp.results.read_results(out / "results.csv")) == n_rows

    assert _audit(*args[:-2], "--method", "fast") == 2
    assert "holds an audit with other arguments" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert _audit(*args[:2], "--out", str(tmp_path / "other"), "--images", "2") == 2
    assert "holds no audit" in capsys.readouterr().err
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"
