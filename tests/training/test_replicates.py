"""Training replicates on the local executor and from ``overinterp train --replicates``
(the Ray path is in test_ray_executor.py, on that module's cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from overinterp.cli import main
from overinterp.jobs import get_executor
from overinterp.training.replicates import TrainTask, portable_dataset_spec, replicate_tasks, train_replicates
from overinterp.training.trainer import make_config


@pytest.fixture
def npz(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8),
        train_labels=rng.integers(0, 3, 40),
        test_images=rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8),
        test_labels=rng.integers(0, 3, 12),
    )
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=False)["state_dict"]


def test_replicate_tasks_name_folders_and_reject_repeats(tmp_path):
    base = make_config("fast")
    tasks = replicate_tasks(base, ["resnet20", "vgg16_bn"], range(3, 5), train="cifar10:train", out_dir=tmp_path)
    assert [Path(t.out_dir).name for t in tasks] == [
        "resnet20-seed3",
        "resnet20-seed4",
        "vgg16_bn-seed3",
        "vgg16_bn-seed4",
    ]
    assert all(Path(t.out_dir).is_absolute() for t in tasks)
    assert [(t.config["arch"], t.config["seed"], t.config["recipe"]) for t in tasks][1] == ("resnet20", 4, "fast")
    json.dumps([t.__dict__ for t in tasks])  # plain data
    with pytest.raises(ValueError, match="repeat"):
        replicate_tasks(base, ["resnet20"], [0, 0], train="cifar10:train", out_dir=tmp_path)
    with pytest.raises(ValueError, match="share a run folder"):
        train_replicates([tasks[0], tasks[0]], progress=False, log=lambda _: None)


def test_portable_dataset_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_dataset_spec("x.npz:test") == f"{tmp_path / 'x.npz'}:test"
    assert portable_dataset_spec("x.npz") == str(tmp_path / "x.npz")
    assert portable_dataset_spec("folder:train@data.zip") == f"folder:train@{tmp_path / 'data.zip'}"
    assert portable_dataset_spec("cifar10:test", root="d") == f"cifar10:test@{tmp_path / 'd'}"
    assert portable_dataset_spec("cifar10:test") == "cifar10:test"


def test_local_replicates_train_resume_and_differ_by_seed(npz, tmp_path):
    base = make_config("fast", arch="smallcnn", epochs=2, batch_size=16, preprocessing="none")
    tasks = replicate_tasks(
        base, ["smallcnn"], [0, 1], train=f"{npz}:train", test=f"{npz}:test", out_dir=tmp_path / "runs", threads=1
    )
    out = train_replicates(tasks, get_executor("local"), progress=False, log=lambda _: None)
    assert [r["seed"] for r in out] == [0, 1] and all(r["resumed_from"] == 0 for r in out)
    assert all(r["test_n"] == 12 and 0 <= r["test_accuracy"] <= 1 for r in out)
    w0, w1 = _weights(tmp_path / "runs" / "smallcnn-seed0"), _weights(tmp_path / "runs" / "smallcnn-seed1")
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)  # seeds differ
    # a task that is run again (a retry, a rerun) resumes its folder: nothing retrained, same weights
    again = train_replicates(tasks[:1], progress=False, log=lambda _: None)
    assert again[0]["resumed_from"] == 2
    assert all(torch.equal(w0[k], v) for k, v in _weights(tmp_path / "runs" / "smallcnn-seed0").items())


def test_a_replicate_killed_after_an_epoch_resumes_to_the_same_weights(npz, tmp_path):
    from overinterp.data import open_dataset
    from overinterp.training.trainer import train_classifier

    base = make_config("fast", arch="smallcnn", epochs=2, batch_size=16, preprocessing="none")
    whole = TrainTask(config=base.to_dict(), train=f"{npz}:train", out_dir=str(tmp_path / "whole"), threads=1)
    train_replicates([whole], progress=False, log=lambda _: None)

    def die_after_epoch_1(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt  # the task's process is gone after its first checkpoint

    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(
            base, open_dataset(f"{npz}:train"), None, tmp_path / "cut", callback=die_after_epoch_1, progress=False
        )
    assert not (tmp_path / "cut" / "model.pt").exists()
    (done,) = train_replicates(
        [TrainTask(**{**whole.__dict__, "out_dir": str(tmp_path / "cut")})], progress=False, log=lambda _: None
    )
    assert done["resumed_from"] == 1
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_replicates(npz, tmp_path, capsys):
    rc = main(
        [
            "train",
            "--arch",
            "smallcnn",
            "--recipe",
            "fast",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--preprocessing",
            "none",
            "--data",
            f"{npz}:train",
            "--test-data",
            f"{npz}:test",
            "--out",
            str(tmp_path / "runs"),
            "--seed",
            "7",
            "--replicates",
            "2",
            "--threads",
            "1",
            "--results",
            str(tmp_path / "results.csv"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["smallcnn-seed7", "smallcnn-seed8"]
    assert all((tmp_path / "runs" / n / "model.pt").is_file() for n in ("smallcnn-seed7", "smallcnn-seed8"))
    assert capsys.readouterr().out.count("model: ") == 2
    import csv

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert sorted(r["seed"] for r in acc) == ["7", "8"] and {r["arch"] for r in acc} == {"smallcnn"}


def test_cli_train_without_replicates_is_unchanged(npz, tmp_path, monkeypatch):
    from overinterp.cli import experiments as cli_experiments

    def no_replicates(args):
        raise AssertionError("a plain `overinterp train` must not go through the replicate path")

    monkeypatch.setattr(cli_experiments, "_cmd_train_replicates", no_replicates)
    args = [
        "--arch",
        "smallcnn",
        "--recipe",
        "fast",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--preprocessing",
        "none",
        "--out",
        str(tmp_path / "run"),
        "--threads",
        "1",
        "--no-progress",
    ]
    # the plain path reads registered datasets only; a folder dataset of PNGs stands in
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        (tmp_path / "imgs" / "train" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / "train" / c / f"{i}.png"
            )
    assert main(["train", *args, "--data", f"folder:train@{tmp_path / 'imgs'}"]) == 0
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "smallcnn-seed0").exists()


def test_portable_spec_expands_aliases(tmp_path):
    from overinterp.training.replicates import portable_dataset_spec

    assert portable_dataset_spec("cifar10-train").startswith("cifar10:train")
    (tmp_path / "imgs").mkdir()
    assert portable_dataset_spec(f"folder:{tmp_path / 'imgs'}") == f"folder@{(tmp_path / 'imgs').resolve()}"


def test_training_images_are_the_first_limit_then_the_seeded_subset(npz):
    from overinterp.data import open_dataset
    from overinterp.training.replicates import select_training_images

    full = open_dataset(f"{npz}:train")
    first = select_training_images(full, 10, None)
    assert len(first) == 10
    assert torch.equal(first.images, full.images[:10]) and torch.equal(first.labels, full.labels[:10])
    drawn = select_training_images(full, 10, 4, subset_seed=3)
    again = select_training_images(full, 10, 4, subset_seed=3)
    assert len(drawn) == 4 and torch.equal(drawn.images, again.images)
    rows = {tuple(x.flatten().tolist()) for x in full.images[:10]}
    assert all(tuple(x.flatten().tolist()) in rows for x in drawn.images)  # drawn from the first 10 only
    assert select_training_images(full, 100, None) is full


def test_cli_train_limit_trains_on_the_first_images(npz, tmp_path, capsys):
    args = ["train", "--arch", "smallcnn", "--recipe", "fast", "--epochs", "1", "--batch-size", "8"]
    args += ["--preprocessing", "none", "--data", f"{npz}:train", "--limit", "16", "--out", str(tmp_path / "r")]
    assert main([*args, "--threads", "1", "--no-progress"]) == 0
    assert "1 epochs on 16 images" in capsys.readouterr().err


def test_cli_train_init_fine_tunes_and_records_the_checkpoint(npz, tmp_path):
    args = ["train", "--arch", "smallcnn", "--recipe", "fast", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
    args += ["--preprocessing", "none", "--data", f"{npz}:train", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--init", str(tmp_path / "a" / "model.pt"), "--out", str(tmp_path / "b")]) == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["config"]["init_checkpoint"] == str((tmp_path / "a" / "model.pt").resolve())
    assert main([*args, "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "c")]) != 0
