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
    return [
        "backselect",
        "--model",
        "smallcnn",
        "--checkpoint",
        str(ckpt),
        "--images",
        str(tmp_path / "a.npy"),
        "--patch",
        "2",
        "--no-progress",
        "--batch-size",
        "9",
    ]


@pytest.mark.parametrize(
    "extra, name, params",
    [
        ([], "exact", {"rank_by": "logodds"}),
        (["--method", "gradient", "--k", "3"], "gradient", {"k": 3}),
        (["--method", "kstep", "--k", "2"], "kstep", {"k": 2}),
        (
            ["--method", "adaptive", "--tail", "0.25", "--step-fraction", "0.5", "--head", "gradient"],
            "adaptive",
            {"tail": 0.25, "step_fraction": 0.5, "head": "gradient"},
        ),
        (["--method", "screened", "--rescore-top", "4"], "screened", {"rescore_top": 4}),
        (
            ["--method", "fast", "--width", "2", "--pool", "1.5", "--screened", "0.5", "--exact-end", "0.25"],
            "fast",
            {"width": 2, "pool": 1.5, "screened": 0.5, "exact": 0.25},
        ),
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


def _rc(argv):
    try:
        return main(argv)
    except SystemExit as e:  # refused while parsing the arguments
        return e.code


def test_bad_fast_parameters_are_refused_before_any_work(tmp_path, setup, capsys):
    out = tmp_path / "t.pt"
    assert _rc([*setup, "--method", "fast", "--width", "0", "--out", str(out)]) == 2
    assert "width" in capsys.readouterr().err and not out.exists()
    assert _rc([*setup, "--method", "fast", "--exact-end", "0.5", "--screened", "0.2", "--out", str(out)]) == 2
    assert "must not exceed screened" in capsys.readouterr().err and not out.exists()


def test_dataset_jobs_default_to_fast():
    from overinterp.cli import build_parser

    args = build_parser().parse_args(["backselect-dataset", "--model", "m.pt", "--dataset", "d.npz", "--out", "o"])
    assert args.method == "fast"
    sub = build_parser()._subparsers._group_actions[0].choices["backselect-dataset"]
    assert "recommended when exact does not fit the budget" in " ".join(sub.format_help().split())
