"""``overinterp check-method``: cost printed before work, paired differences, bad input refused first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from overinterp.cli import main
from overinterp.models import create_model, save_checkpoint


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    ckpt = save_checkpoint(tmp_path / "small.pt", model, "smallcnn")
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, images=rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8), labels=np.array([0, 1, 2, 0, 1]))
    return ckpt, data


def test_check_method_prints_plan_and_differences(files, tmp_path, capsys):
    ckpt, data = files
    out = tmp_path / "check.json"
    argv = ["check-method", str(ckpt), str(data), "--images", "3", "--method", "fast", "--screened", "0.5"]
    rc = main([*argv, "--no-progress", "--out", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "exact 666 forward passes per image" in cap.err  # P = 36: 36·37/2, said before the work
    assert "Δ" in cap.out and "mean p(full-image class)" in cap.out and "verdict" in cap.out
    rec = json.loads(out.read_text())
    assert rec["images"] == 3 and rec["num_features"] == 36 and rec["method"]["params"]["screened"] == 0.5
    assert len(rec["measures"]["exact"]["prob5"]) == 3


def test_plan_only_runs_nothing(files, capsys, monkeypatch):
    """--plan-only prints the estimate and stops (wrong: it still runs exact on the images); the
    only backward selection allowed is the engine calibration over about 64 patches of one image."""
    import overinterp.experiments.check_method as cm

    real = cm.backselect
    calls = []

    def guarded(model, images, *a, features=None, **k):
        assert features is not None and int(features.max()) + 1 <= 64 and len(images) == 1, "ran beyond calibration"
        calls.append(1)
        return real(model, images, *a, features=features, **k)

    ckpt, data = files
    monkeypatch.setattr(cm, "backselect", guarded)
    assert main(["check-method", str(ckpt), str(data), "--plan-only", "--method", "fast"]) == 0
    assert "forward-equivalents" in capsys.readouterr().out and len(calls) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "fast", "--k", "3"], "--k applies to --method"),
        (["--method", "fast", "--screened", "0.01", "--exact-end", "0.5"], "must not exceed screened"),
    ],
)
def test_bad_settings_refused_before_the_model_loads(files, capsys, monkeypatch, extra, message):
    """Method settings are checked before the model is loaded or anything runs."""
    from overinterp.models.spec import ModelSpec

    ckpt, data = files
    monkeypatch.setattr(ModelSpec, "load", lambda self: pytest.fail("model loaded before the settings were checked"))
    assert main(["check-method", str(ckpt), str(data), *extra]) == 2
    assert message in capsys.readouterr().err


def test_unlabelled_images_file_of_an_audit_is_checked_against_the_predictions(files, tmp_path, capsys):
    """An audit of unlabelled images stores them with labels -1 (its own images file): check-method
    on that file (the command the audit recommends) takes them as unlabelled. Wrong implementation
    caught: -1 refused as "not a class of the model", so the recommended command fails."""
    ckpt, _ = files
    data = tmp_path / "unlabelled.npz"
    rng = np.random.default_rng(1)
    np.savez(data, images=rng.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8), labels=np.full(3, -1))
    assert main(["check-method", str(ckpt), str(data), "--images", "2", "--plan-only"]) == 0
    assert "check-method:" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=rng.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8), labels=np.array([0, -1, 1]))
    assert main(["check-method", str(ckpt), str(bad), "--images", "3", "--plan-only"]) == 2
    assert "label -1" in capsys.readouterr().err
