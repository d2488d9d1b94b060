"""The training recipe: schedule, augmentation, checkpoints, exact resume after SIGKILL, refusals, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from overinterp.cli import main
from overinterp.data.augment import random_crop_flip
from overinterp.models import create_model, load_checkpoint_file
from overinterp.results import read_results
from overinterp.training.trainer import (
    RECIPES,
    TrainConfig,
    channel_stats,
    learning_rate,
    make_config,
    train_classifier,
)


def easy_data(n=48, size=8, seed=0):
    """3 classes; class k has a brighter channel k, so a tiny CNN learns it in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randint(0, 120, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x[torch.arange(n), y] += 120
    return x, y


def tiny_config(**overrides):
    base = dict(arch="smallcnn", arch_kwargs={"width": 4}, epochs=4, batch_size=16, milestones=(2,))
    base.update(overrides)
    return make_config("paper", **base)


def test_paper_recipe_is_the_default():
    paper = RECIPES["paper"]
    assert TrainConfig() == paper
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.nesterov, paper.weight_decay) == (
        200,
        128,
        0.1,
        0.9,
        True,
        5e-4,
    )
    assert paper.milestones == (60, 120, 160) and paper.gamma == 0.2 and paper.schedule == "multistep"
    assert paper.augment and paper.crop_padding == 4 and paper.flip and paper.decay_norm_and_bias
    assert make_config("fast", epochs=3).epochs == 3 and make_config("fast").schedule == "onecycle"
    with pytest.raises(ValueError, match="unknown recipe"):
        make_config("slow")
    with pytest.raises(ValueError, match="schedule"):
        make_config(schedule="step")
    assert TrainConfig.from_dict(paper.to_dict()) == paper


def test_learning_rate_schedules():
    paper = RECIPES["paper"]
    lrs = {e: learning_rate(paper, e * 10, 10) for e in (0, 59, 60, 119, 120, 160, 199)}
    assert lrs == pytest.approx({0: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 160: 0.0008, 199: 0.0008})
    fast = RECIPES["fast"]
    assert learning_rate(fast, 0, 100) == pytest.approx(0.02)
    assert learning_rate(fast, 200, 100) == pytest.approx(0.2)
    assert learning_rate(fast, 399, 100) == pytest.approx(0.2 * 0.01 / 2)  # 4 epochs, 2 of warm-up


def test_random_crop_flip_windows_and_generator():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5) + 1
    assert torch.equal(random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=False), x)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2, flip=True)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    again = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2, flip=True)
    assert torch.equal(out, again)


def test_training_learns_and_writes_a_run_folder(tmp_path):
    x, y = easy_data()
    result = train_classifier(tiny_config(epochs=6, milestones=(4,)), (x, y), (x, y), tmp_path / "run", progress=False)
    assert result.history[-1]["test_accuracy"] > 0.9
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5, 6] and lines[4]["lr"] == pytest.approx(0.02)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["arch"] == "smallcnn" and config["num_train"] == 48
    model = create_model(None, checkpoint=tmp_path / "run" / "model.pt")
    assert model.preprocessing_config()["mean"] == pytest.approx([0.4914, 0.4822, 0.4465], abs=1e-6)
    with torch.no_grad():
        assert torch.equal(model(x.float() / 255), result.model(x.float() / 255))


def test_preprocessing_auto_uses_the_training_statistics():
    x, y = easy_data()
    result = train_classifier(tiny_config(epochs=1, preprocessing="auto"), (x, y), progress=False)
    mean, std = channel_stats(x)
    assert result.model.preprocessing_config()["mean"] == pytest.approx(mean)
    assert torch.allclose(result.model.baseline, torch.tensor(mean, dtype=torch.float32))
    assert np.allclose(std, (x.double() / 255).std(dim=(0, 2, 3), unbiased=False).numpy())


CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from overinterp.training.trainer import TrainConfig, train_classifier
    data = torch.load(sys.argv[1])
    config = TrainConfig.from_dict(json.loads(sys.argv[2]))
    def die(event, info):
        if event == "step" and info["epoch"] == 3 and info["step"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)   # killed in the middle of epoch 3 of 4
    train_classifier(config, (data["x"], data["y"]), (data["x"], data["y"]), sys.argv[3], progress=False,
                     callback=die)
""")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    x, y = easy_data()
    config = tiny_config()
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    (tmp_path / "child.py").write_text(CHILD)
    run = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "data.pt"), json.dumps(config.to_dict()), str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint_file(run / "checkpoint.pt")["extra"]["training"]["epoch"] == 2
    assert not (run / "model.pt").exists()

    resumed = train_classifier(config, (x, y), (x, y), run, progress=False)
    straight = train_classifier(config, (x, y), (x, y), tmp_path / "straight", progress=False)
    assert resumed.resumed_from == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4]


def test_resume_with_other_settings_is_refused_unless_forced(tmp_path):
    x, y = easy_data()
    run = tmp_path / "run"
    train_classifier(tiny_config(epochs=2), (x, y), None, run, progress=False)
    with pytest.raises(ValueError, match=r"refusing to resume .*epochs: 2 → 3.*lr: 0\.1 → 0\.05"):
        train_classifier(tiny_config(epochs=3, lr=0.05), (x, y), None, run, progress=False)
    with pytest.raises(ValueError, match="training data"):
        train_classifier(tiny_config(epochs=2), (x.flip(0), y.flip(0)), None, run, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train_classifier(tiny_config(epochs=2), (x, y), None, run, resume=False, progress=False)
    done = train_classifier(tiny_config(epochs=3), (x, y), None, run, force=True, progress=False)
    assert done.resumed_from == 2 and [h.get("epoch") for h in done.history] == [1, 2, 3]
    events = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[2]["event"] == "forced_resume" and "epochs: 2 → 3" in events[2]["changes"][0]


def write_folder(root, n=4, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, c in enumerate(("a", "b", "c")):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                img[..., k] += 120
                Image.fromarray(img).save(root / split / c / f"{i}.png")


def test_cli_train_folder_dataset(tmp_path, capsys):
    write_folder(tmp_path / "ds")
    results = tmp_path / "results.csv"
    code = main(
        [
            "train",
            "--arch",
            "smallcnn",
            "--recipe",
            "fast",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--data",
            f"folder:train@{tmp_path / 'ds'}",
            "--test-data",
            f"folder:test@{tmp_path / 'ds'}",
            "--out",
            str(tmp_path / "run"),
            "--seed",
            "3",
            "--no-progress",
            "--results",
            str(results),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "trained smallcnn for 2 epochs" in out and "test accuracy" in out
    model = create_model(None, checkpoint=tmp_path / "run" / "model.pt")
    assert model.class_names == ["a", "b", "c"]
    rows = read_results(results)
    assert rows[0]["seed"] == 3 and rows[0]["dataset"] == "folder:test" and rows[0]["n"] == 12
    # the same command again: the run is complete, nothing is retrained; other settings are refused
    assert (
        main(
            [
                "train",
                "--arch",
                "smallcnn",
                "--recipe",
                "fast",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--data",
                f"folder:train@{tmp_path / 'ds'}",
                "--out",
                str(tmp_path / "run"),
                "--seed",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--arch",
                "smallcnn",
                "--recipe",
                "fast",
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--data",
                f"folder:train@{tmp_path / 'ds'}",
                "--out",
                str(tmp_path / "run"),
                "--seed",
                "4",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "seed: 3 → 4" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["lr", "momentum", "weight_decay", "gamma", "warmup_epochs", "label_smoothing"])
def test_config_refuses_non_finite_hyperparameters(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        tiny_config(**{name: float("nan")})
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        tiny_config(**{name: float("inf")})


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import overinterp.training.trainer as trainer

    x, y = easy_data(n=32)
    calls = {"n": 0}
    real = trainer.F.cross_entropy

    def loss_goes_nan_in_epoch_2(*args, **kwargs):  # 2 steps per epoch; step 2 of epoch 2 is call 4
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 4 else loss

    monkeypatch.setattr(trainer.F, "cross_entropy", loss_goes_nan_in_epoch_2)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"loss is nan \(not finite\) at epoch 2, step 2 of 2") as err:
        train_classifier(tiny_config(epochs=3), (x, y), None, out, progress=False)
    assert "still holds epoch 1" in str(err.value)
    assert not (out / "model.pt").exists()
    ckpt = load_checkpoint_file(out / "checkpoint.pt")
    assert ckpt["extra"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    # the kept checkpoint resumes once the cause is gone
    monkeypatch.setattr(trainer.F, "cross_entropy", real)
    result = train_classifier(tiny_config(epochs=3), (x, y), None, out, progress=False)
    assert result.resumed_from == 1 and (out / "model.pt").is_file()


def test_training_refuses_non_finite_images_and_foreign_labels(tmp_path):
    x, y = easy_data(n=16)
    bad = x.float() / 255
    bad[5, 0, 1, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="training images: image 5 of 16 has NaN"):
        train_classifier(tiny_config(epochs=1), (bad, y), None, tmp_path / "a", progress=False)
    y = y.clone()
    y[3] = -1
    with pytest.raises(ValueError, match="training labels: label -1 .*3 classes"):
        train_classifier(tiny_config(epochs=1), (x, y), None, tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "model.pt").exists() and not (tmp_path / "b" / "checkpoint.pt").exists()


def test_init_checkpoint_fine_tunes_from_the_given_weights(tmp_path):
    """A run with init_checkpoint starts from those weights (a near-zero learning rate keeps them);
    one without starts from a random draw; a missing file is refused."""
    x, y = easy_data()
    start = train_classifier(tiny_config(epochs=2), (x, y), None, tmp_path / "start", progress=False)
    ckpt = tmp_path / "start" / "model.pt"
    config = tiny_config(epochs=1, lr=1e-12, momentum=0.0, nesterov=False, weight_decay=0.0, seed=5)
    tuned = train_classifier(
        dataclasses_replace(config, init_checkpoint=str(ckpt)), (x, y), None, tmp_path / "tuned", progress=False
    )
    fresh = train_classifier(config, (x, y), None, tmp_path / "fresh", progress=False)
    want = start.model.state_dict()
    got, other = tuned.model.state_dict(), fresh.model.state_dict()
    weights = [k for k in want if k.endswith("weight")]
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in weights)
    assert not all(torch.allclose(other[k], want[k], atol=1e-3) for k in weights)
    assert TrainConfig.from_dict(
        dataclasses_replace(config, init_checkpoint=str(ckpt)).to_dict()
    ).init_checkpoint == str(ckpt)
    with pytest.raises(FileNotFoundError, match="not a file"):
        train_classifier(
            dataclasses_replace(config, init_checkpoint=str(tmp_path / "none.pt")), (x, y), None, None, progress=False
        )
    with pytest.raises(ValueError, match="init_checkpoint"):
        tiny_config(init_checkpoint=3)


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
