"""Robust vs standard SIS sizes: model specs, the experiment, results rows, the command line."""

import csv
import json

import pytest
import torch
from PIL import Image

from overinterp.cli import main
from overinterp.data import LabeledImages
from overinterp.experiments.robust import ROBUST_GROUP, load_robust_model, run_robust_sis
from overinterp.results import read_results

MODULE = '''
import torch
from torch import nn

class ColourNet(nn.Module):
    """Mean colour → 3 classes, sharper with a larger scale (takes raw [0, 1] pixels)."""

    def __init__(self, scale=40.0):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(3) * scale)
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.mean((2, 3)))
'''


@pytest.fixture()
def colournets(tmp_path, monkeypatch):
    (tmp_path / "colournets.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _data(n=6):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, 8, 8, generator=g) * 40).to(torch.uint8)
    labels = torch.arange(n) % 3
    for i in range(n):
        images[i, int(labels[i]), 2:6, 2:6] = 250
    return LabeledImages(images, labels, ["r", "g", "b"], "toy", "memory", {"key": "toy:test"})


def test_specs(colournets):
    spec = load_robust_model(
        "sharp=import:colournets:ColourNet?scale=60&baseline=cifar10", ROBUST_GROUP, trust_code=True
    )
    assert (spec.label, spec.group) == ("sharp", ROBUST_GROUP)
    assert torch.allclose(spec.model.baseline, torch.tensor([0.4914, 0.4822, 0.4465]))
    assert float(spec.model.network.lin.weight[0, 0].detach()) == 60
    reg = load_robust_model("smallcnn?width=4&preprocessing=cifar10")
    assert reg.label == "smallcnn" and reg.model.preprocessing is not None
    with pytest.raises(ValueError, match="key=value"):
        load_robust_model("smallcnn?width")
    with pytest.raises(ValueError, match="robustbench"):
        load_robust_model("robustbench:Foo?colour=1")


def test_sharper_model_needs_smaller_sis(colournets, tmp_path):
    specs = [
        load_robust_model("sharp=import:colournets:ColourNet?scale=80", trust_code=True),
        load_robust_model("soft=import:colournets:ColourNet?scale=30", ROBUST_GROUP, trust_code=True),
    ]
    results = tmp_path / "results.csv"
    rows = run_robust_sis(
        specs, _data(), tmp_path / "out", threshold=0.99, limit=4, results=results, progress=False, log=lambda s: None
    )
    sharp, soft = rows
    assert sharp["n"] == 4 and sharp["with_sis"] == 4 and soft["group"] == ROBUST_GROUP
    assert 0 < sharp["sis_fraction_mean"] < soft["sis_fraction_mean"] <= 1
    assert (tmp_path / "out" / "traces" / "sharp.pt").is_file()
    table = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["model"] for r in table] == ["sharp", "soft"]
    assert float(table[1]["sis_fraction_mean"]) == pytest.approx(soft["sis_fraction_mean"])
    got = {(r["model"], r["metric"]): r for r in read_results(results)}
    assert got[("soft", "sis_size_mean")]["value"] == pytest.approx(soft["sis_fraction_mean"])
    assert got[("soft", "sis_size_mean")]["n"] == 4 and "group=Adv. Robust" in got[("soft", "sis_size_mean")]["notes"]
    assert got[("sharp", "confident_fraction")]["dataset"] == "toy:test"
    with pytest.raises(ValueError, match="labels must differ"):
        run_robust_sis([specs[0], specs[0]], _data(), tmp_path / "o2", progress=False)


def test_command_line(colournets, tmp_path, capsys):
    root = tmp_path / "imgs"
    data = _data()
    for i in range(len(data)):
        d = root / data.classes[int(data.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    out = tmp_path / "out"
    rc = main(
        [
            "robust-sis",
            "--model",
            "std=import:colournets:ColourNet?scale=80",
            "--robust-model",
            "rob=import:colournets:ColourNet?scale=30",
            "--data",
            f"folder@{root}",
            "--limit",
            "2",
            "--method",
            "kstep",
            "--k",
            "4",
            "--out",
            str(out),
            "--results",
            str(tmp_path / "r.csv"),
            "--no-progress",
        ]
    )
    assert rc == 0
    rows = json.loads((out / "summary.json").read_text())
    assert [r["group"] for r in rows] == ["Standard", "Adv. Robust"]
    assert rows[0]["method"] == {"name": "kstep", "params": {"k": 4, "channels_last": None}}
    assert "mean SIS" in capsys.readouterr().out
    assert (
        main(
            [
                "robust-sis",
                "--model",
                "std=import:colournets:ColourNet",
                "--data",
                f"folder@{root}",
                "--method",
                "kstep",
                "--k",
                "65",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "exceeds" in capsys.readouterr().err
