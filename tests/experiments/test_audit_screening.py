"""The audit's per-image screening diagnostic (issue 24, item 3): how sure the gradient screen of a
screened method (``fast``) was on each audited image, in ``audit.json``, the report and the command
line, and the ``check-method`` command the audit recommends."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from test_audit import Channels, channel_images
from torch import nn

import overinterp
import overinterp.experiments.audit as audit_mod
from overinterp.analysis.faithfulness import UNSURE_SHARE
from overinterp.experiments.audit import read_record, record_json, screening_summary
from overinterp.experiments.check_method import check_command
from overinterp.experiments.throughput import Throughput
from reference import TinyCNN


class Mixed(nn.Module):
    """Right by construction on :func:`channel_images` (20 × channel means) plus a small random CNN,
    so that the gradient screen misses exact's best on some steps of some images."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = TinyCNN(num_classes=3, height=8, width=8, seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * x.mean((2, 3)) + 0.5 * self.cnn(x)


def strict(text: str) -> dict:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))


def _trace(n: int, seed: int):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return overinterp.backselect(model, x, method=overinterp.Exact(), progress=False)


def test_per_image_shares_follow_their_images_and_the_summary_counts_screened_images_only():
    """Two shards with known counts, joined as a dataset job joins them. Wrong implementations
    caught: shares computed over all steps pooled instead of per image's screened steps; an image
    without screened steps counted as share 0 (a sure screen) in the mean and the image count, or
    written as NaN (not JSON); images misaligned after concatenating shards (the first shard's
    lists for every image) or paired with positions in another order; the threshold compared
    with > instead of ≥."""
    from overinterp.sis import concat_traces

    a, b = _trace(2, 0), _trace(2, 1)
    a.meta["screening"] = {"steps": [40, 8], "bottom_quarter_steps": [10, 1]}
    b.meta["screening"] = {"steps": [0, 10], "bottom_quarter_steps": [0, 3]}
    joined = concat_traces([a, b])
    rec = screening_summary(joined, [7, 3, 9, 1], command="overinterp check-method m d --images 8 --method fast")
    assert [r["position"] for r in rec["per_image"]] == [7, 3, 9, 1]
    assert [r["share"] for r in rec["per_image"]] == [0.25, 0.125, None, 0.3]
    assert [(r["steps"], r["bottom_quarter_steps"]) for r in rec["per_image"]] == [(40, 10), (8, 1), (0, 0), (10, 3)]
    assert rec["images"] == 3 and rec["threshold"] == UNSURE_SHARE == 0.25
    assert rec["mean_share"] == pytest.approx((0.25 + 0.125 + 0.3) / 3) and rec["max_share"] == 0.3
    assert rec["flagged"] == 2 and "unsure on 2 of 3 images" in rec["recommendation"]
    assert rec["recommendation"].endswith(": overinterp check-method m d --images 8 --method fast")
    assert strict(record_json({"screening": rec}))["screening"] == rec
    with pytest.raises(ValueError, match="3 positions"):
        screening_summary(joined, [7, 3, 9])
    assert screening_summary(_trace(2, 0), [0, 1]) is None  # exact screens nothing: no diagnostic


def _slow_probe(method: overinterp.Method, seconds_per_image: float):
    """A probe that makes the plan expect ``seconds_per_image``, so that the job takes small shards."""
    cost = method.planned_cost(64)
    fps = (cost["forward"] + 2.0 * cost["forward_backward"]) / (seconds_per_image * 0.92)
    return lambda *a, **k: Throughput(forwards_per_s=fps, fb_cost=2.0, batch_size=64, layout="contiguous", seconds=0.0)


def test_a_fast_audit_records_each_images_diagnostic_across_shards(tmp_path, monkeypatch):
    """``fast`` over 9 images in shards of 2: ``audit.json`` holds each image's share, position by
    position equal to the screen ranks that the shard files record (a plain count here), strict JSON
    read back unchanged; the report shows the section with its figure and the Python call that
    checks a model living in this session, which runs as written. Wrong implementations caught: per-image values taken
    from another shard or image (misaligned after concatenation or the sample's shuffle), a
    recommendation missing for in-memory models, the section placed after the pictures."""
    from overinterp.jobs import JobSpec, load_job
    from overinterp.sis import BackselectTrace

    monkeypatch.setattr(audit_mod, "probe_throughput", _slow_probe(overinterp.Fast(), 25.0))
    x, y = channel_images(9)
    out = tmp_path / "a"
    model = Mixed().eval()
    r = overinterp.audit(model, x, labels=y, method=overinterp.Fast(), out=out, progress=False)
    job = load_job(out / "job")
    assert len(job.shards) >= 4  # several shards, so that alignment is tested
    spec = JobSpec.from_dict(job.manifest["spec"])
    expected = {}
    for s in job.shards:
        t = BackselectTrace.load(next((out / "job" / "shards").glob(f"*{s:05d}*.pt")))
        for i, p in enumerate(spec.shard_positions(s)):
            ranks = [(int(k), int(w)) for k, w in zip(t.screen_rank[i], t.screen_width[i]) if w > 0]
            expected[int(p)] = (sum(k >= 0.75 * w for k, w in ranks), len(ranks))
    scr = r.record["screening"]
    assert [e["position"] for e in scr["per_image"]] == r.record["positions"]
    got = {e["position"]: (e["bottom_quarter_steps"], e["steps"]) for e in scr["per_image"]}
    assert got == expected and len(set(got.values())) > 1  # images differ, so a misalignment shows
    for e in scr["per_image"]:
        assert e["share"] == pytest.approx(e["bottom_quarter_steps"] / e["steps"])
    assert scr["max_share"] == max(e["share"] for e in scr["per_image"])
    least = sorted(scr["per_image"], key=lambda e: (-e["share"], r.record["positions"].index(e["position"])))[:8]
    assert scr["checked"] == [e["position"] for e in least]  # the 8 least sure images, least sure first
    assert scr["command"] is None and (
        f"check_method(model, images[{scr['checked']}], overinterp.make_method('fast'))" in scr["python"]
    )
    check = eval(scr["python"], {"overinterp": overinterp, "model": model, "images": x})  # the call, pasted
    assert check.plan.images == 8 and check.method == overinterp.Fast().describe()
    assert read_record(out / "audit.json")["screening"] == scr
    strict((out / "audit.json").read_text())
    page = r.report.read_text()
    assert page.index('class="verdict"') < page.index("How sure the method was") < page.index("What the model")
    assert 'src="screening.png"' in page and (out / "report" / "screening.png").is_file()
    assert "check_method(model, images[[" in page and "not the damage" in page


def test_an_exact_audit_has_no_screening_diagnostic(tmp_path):
    """Exact screens nothing: ``screening`` is null in ``audit.json`` and the report has no section.
    Wrong implementation caught: an empty diagnostic (shares of 0, "sure on every image") for a
    method that never screened."""
    x, y = channel_images(6)
    r = overinterp.audit(
        Channels(), x, labels=y, method=overinterp.Exact(), out=tmp_path / "a", probe_seconds=0.2, progress=False
    )
    assert r.record["screening"] is None
    assert strict((tmp_path / "a" / "audit.json").read_text())["screening"] is None
    assert "How sure the method was" not in r.report.read_text()


def test_the_check_command_parses_to_the_method_and_flags_the_audit_used():
    """The recommended command names only flags check-method has, and parses back to the same
    method. Wrong implementations caught: a flag named after the parameter (``--exact``) instead of
    the registry's option (``--exact-end``), default parameters dropped as if unknown, the patch
    size or device forgotten."""
    from overinterp.cli import build_parser
    from overinterp.cli._common import method_from_args

    method = overinterp.Fast(width=16, exact=0.04)
    cmd = check_command("resnet20@/w d/x.th?preprocessing=imagenet", "cifar10:test", method.describe(), patch=4)
    argv = shlex.split(cmd)
    assert argv[:2] == ["overinterp", "check-method"]
    args = build_parser().parse_args(argv[1:])
    assert (args.model, args.data, args.images, args.patch) == (
        "resnet20@/w d/x.th?preprocessing=imagenet",
        "cifar10:test",
        8,
        4,
    )
    assert method_from_args(args).describe() == method.describe()
    assert "--width 16" in cmd and "--exact-end 0.04" in cmd and "--pool" not in cmd
    assert "--device cuda" in check_command("m", "d", method.describe(), device="cuda")


def test_the_cli_prints_the_check_of_the_audits_own_model_and_data_and_it_runs(tmp_path, monkeypatch, capsys):
    """``overinterp audit`` of a TorchScript file with ``fast``, the threshold lowered so that some
    images count as unsure: one ``screening:`` line whose command is ``check-method`` on the audit's
    own model and data specs; pasted, it runs. Wrong implementations caught: a command built from the
    display name (``m``) instead of the spec, a relative data path, a command that does not run."""
    import overinterp.analysis.faithfulness as faith
    from overinterp.cli import main

    monkeypatch.setattr(faith, "UNSURE_SHARE", 0.01)
    x, y = channel_images(9)
    data = tmp_path / "d.npz"
    np.savez(data, images=(x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), labels=y.numpy())
    model = tmp_path / "m.pt"
    torch.jit.trace(Mixed().eval(), torch.rand(1, 3, 8, 8)).save(str(model))
    common = ["--threads", "1", "--no-progress"]
    out = tmp_path / "audit"
    args = ["audit", str(model), str(data), "--out", str(out), "--method", "fast", "--probe-seconds", "0.2"]
    assert main([*args, "--no-report", *common]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("screening:")]
    assert len(lines) == 1
    record = json.loads((out / "audit.json").read_text())
    cmd = record["screening"]["command"]
    assert record["screening"]["flagged"] >= 1 and lines[0].endswith(cmd)
    argv = shlex.split(cmd)
    check_file = out / "inputs" / "check-images.npz"
    assert argv == [
        "overinterp",
        "check-method",
        f"torchscript:{model.resolve()}",
        str(check_file.resolve()),
        "--images",
        "8",
        "--method",
        "fast",
    ]
    # the file holds the audit's 8 least sure images, in the order the record lists them, with their labels
    checked = record["screening"]["checked"]
    with np.load(check_file) as f:
        assert np.array_equal(f["images"], np.load(data)["images"][checked])
        assert f["labels"].tolist() == y[checked].tolist()
    assert main([*argv[1:], "--images", "2", *common]) == 0  # two images keep the test short
    text = capsys.readouterr().out
    assert "fast vs exact on 2 images" in text and "verdict:" in text


def test_the_check_of_a_plan_recorded_before_growth_checks_the_schedule_it_ran():
    """An audit folder written before ``Fast`` had ``growth`` records ``fast`` without it; the
    recommended check must run that schedule (``--growth 0.0``), not today's default. Wrong
    implementation caught: flags chosen by comparing the raw description with today's defaults (the
    missing ``growth`` is then simply left out, and the check runs ``growth=0.1``)."""
    from overinterp.cli import build_parser
    from overinterp.cli._common import method_from_args

    ran = overinterp.Fast(growth=0.0, recall=4, screened=0.08)
    old = ran.describe()
    for k in ("growth", "first_block"):
        old["params"].pop(k)
    args = build_parser().parse_args(shlex.split(check_command("m.pt", "d.npz", old))[1:])
    assert method_from_args(args) == ran
