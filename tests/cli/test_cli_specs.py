"""Every command takes the same dataset and model specs (resolved by the one parser of each)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from jobkit import write_dataset, write_model
from overinterp.cli import main
from overinterp.data.specs import open_dataset


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs@v1"  # '@' in the path
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            (root / split / cls).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{k}.png")
    return {"npz": write_dataset(tmp_path / "d.npz", n=6), "root": root, "model": write_model(tmp_path / "m.pt")}


SPECS = [
    ("{npz}:test", 6),
    ("{npz}", 6),
    ("folder:{root}/train", 6),
    ("folder:train@{root}", 6),
    ("folder@{root}/test", 6),
    ("{root}/test", 6),
]


@pytest.fixture()
def seen(monkeypatch):
    """Stub the library function behind each command; record the images it was given."""
    got: dict[str, int] = {}

    def train(config, train, test, out, **kw):
        got["train"] = len(train)
        return SimpleNamespace(history=[], resumed_from=None, checkpoint=out / "model.pt", model=None)

    def robust(specs, data, out, **kw):
        got["robust-sis"] = len(data)
        return []

    def evaluate(model, datasets, **kw):
        got["evaluate"] = sum(len(d) for d in datasets)
        return []

    def run_job(spec, out, executor, **kw):
        got["backselect-dataset"] = len(open_dataset(spec.dataset))
        return {}

    monkeypatch.setattr("overinterp.training.trainer.train_classifier", train)
    monkeypatch.setattr("overinterp.experiments.robust.run_robust_sis", robust)
    monkeypatch.setattr("overinterp.training.evaluation.evaluate_datasets", evaluate)
    monkeypatch.setattr("overinterp.jobs.run_job", run_job)
    return got


@pytest.mark.parametrize("template, n", SPECS)
def test_every_command_takes_every_dataset_form(files, seen, tmp_path, template, n):
    spec = template.format(**files)
    model = str(files["model"])
    out = str(tmp_path / "out")
    assert main(["train", "--arch", "smallcnn", "--data", spec, "--out", out, "--no-progress"]) == 0
    assert main(["robust-sis", "--model", model, "--data", spec, "--out", out, "--no-progress"]) == 0
    assert main(["evaluate", "--model", model, "--dataset", spec, "--no-progress", "--device", "cpu"]) == 0
    assert main(["backselect-dataset", "--model", model, "--dataset", spec, "--out", out, "--no-progress"]) == 0
    assert seen == {"train": n, "robust-sis": n, "evaluate": n, "backselect-dataset": n}


def test_robust_sis_runs_on_an_npz_prefix(files, tmp_path, capsys):
    """`robust-sis --data FILE.npz:test` (once "unknown dataset") and a model given as a checkpoint path."""
    rc = main(
        [
            "robust-sis",
            "--model",
            f"mine={files['model']}",
            "--data",
            f"{files['npz']}:test",
            "--limit",
            "1",
            "--threshold",
            "0.34",
            "--method",
            "kstep",
            "--k",
            "16",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "mine" in capsys.readouterr().out


def test_unknown_dataset_is_a_user_error(files, tmp_path, capsys):
    assert main(["robust-sis", "--model", str(files["model"]), "--data", "mnist:test", "--out", str(tmp_path)]) == 2
    assert "NAME[:SPLIT][@ROOT]" in capsys.readouterr().err


def test_model_spec_forms_on_the_command_line(files, tmp_path, capsys):
    base = ["--images", f"{files['npz']}:test", "--limit", "1", "--method", "kstep", "--k", "32", "--no-progress"]
    assert main(["backselect", "--model", str(files["model"]), *base, "--out", str(tmp_path / "a.pt")]) == 0
    assert (
        main(
            [
                "backselect",
                "--model",
                "smallcnn",
                "--checkpoint",
                str(files["model"]),
                *base,
                "--out",
                str(tmp_path / "b.pt"),
            ]
        )
        == 0
    )
    assert main(["backselect", "--model", f"smallcnn@{files['model']}", *base, "--out", str(tmp_path / "c.pt")]) == 0
    assert (
        main(
            [
                "backselect",
                "--model",
                f"smallcnn@{files['model']}",
                "--checkpoint",
                str(tmp_path / "x.pt"),
                *base,
                "--out",
                str(tmp_path / "d.pt"),
            ]
        )
        == 2
    )
    assert "--checkpoint" in capsys.readouterr().err
