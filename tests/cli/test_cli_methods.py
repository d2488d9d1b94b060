"""`overinterp backselect --method …`: every method from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overinterp import BackselectTrace
from overinterp.cli import main
from overinterp.models import create_model, save_checkpoint


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    ckpt = save_checkpoint(tmp_path / "small.pt", model, "smallcnn")
    np.save(tmp_path / "a.npy", np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    return ["backselect", "--model", "smallcnn", "--checkpoint", str(ckpt), "--images", str(tmp_path / "a.npy"),
            "--patch", "2", "--no-progress", "--batch-size", "9"]


@pytest.mark.parametrize(
    "extra, name, params",
    [
        ([], "exact", {"rank_by": "logodds"}),
        (["--method", "gradient", "--k", "3"], "gradient", {"k": 3}),
        (["--method", "kstep", "--k", "2"], "kstep", {"k": 2}),
        (["--method", "adaptive", "--tail", "0.25", "--step-fraction", "0.5", "--head", "gradient"], "adaptive",
         {"tail": 0.25, "step_fraction": 0.5, "head": "gradient"}),
        (["--method", "screened", "--rescore-top", "4"], "screened", {"rescore_top": 4}),
    ],
)
def test_methods(tmp_path, setup, extra, name, params):
    out = tmp_path / "t.pt"
    assert main([*setup, "--out", str(out), "--threshold", "0.5", *extra]) == 0
    trace = BackselectTrace.load(out)
    assert trace.method["name"] == name and trace.P == 16
    for key, value in params.items():
        assert trace.method["params"][key] == value


def test_option_mismatch_is_an_error(tmp_path, setup, capsys):
    assert main([*setup, "--out", str(tmp_path / "t.pt"), "--method", "exact", "--k", "4"]) == 2
    assert "--k" in capsys.readouterr().err
    assert main([*setup, "--out", str(tmp_path / "t.pt"), "--method", "kstep", "--k", "0"]) == 2
    assert not (tmp_path / "t.pt").exists()
