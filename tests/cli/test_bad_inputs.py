"""Bad inputs on the command line: each is a one-line user error (exit code 2), never a
traceback, and no output file is written or overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from faults.badinputs import BACKSELECT, CASES, EVAL, SENTINEL, judge, make_world, snapshot
from overinterp.cli import main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
#: the shared table (``tests/faults/badinputs.py``, also run by bench/faults.py): (argv, what the message must say)
PARAMS = [
    pytest.param(c.argv, c.message, id=name, marks=[NO_CUDA] if c.needs_no_cuda else []) for name, c in CASES.items()
]


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    """Inputs good and bad, and earlier outputs (sentinel files) that must not change."""
    return make_world(tmp_path)


@pytest.mark.parametrize(("argv", "message"), PARAMS)
def test_bad_input_is_a_one_line_user_error(world, argv, message, capsys):
    before = snapshot(world)
    capsys.readouterr()
    rc = main([a.format(w=world) for a in argv])
    err = capsys.readouterr().err
    problems = judge(rc, err, message, before, snapshot(world), world)
    assert not problems, f"{problems}\n{err}"
    assert (world / "results.csv").read_bytes() == SENTINEL and (world / "trace.pt").read_bytes() == SENTINEL


def test_unwritable_output_is_a_user_error(world, capsys, monkeypatch):
    """A read-only output folder: refused at parsing where the permissions show it, else the
    PermissionError of the write is a one-line user error."""
    from overinterp import BackselectTrace

    def denied(self, path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(BackselectTrace, "save", denied)
    argv = [a.format(w=world) for a in BACKSELECT + ["--images", "{w}/good.npz", "--limit", "1"]]
    before = snapshot(world)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith("overinterp backselect: error:")
    assert "Permission denied" in err and snapshot(world) == before
    if os.geteuid() != 0:  # root may write anywhere
        ro = world / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            argv = ["backselect", "--model", str(world / "small.pt"), "--images", str(world / "good.npz")]
            assert main([*argv, "--out", str(ro / "t.pt")]) == 2
            assert "permission denied" in capsys.readouterr().err
        finally:
            ro.chmod(0o755)


def test_limit_is_the_first_n_images_in_every_command(world, capsys):
    from overinterp import BackselectTrace
    from overinterp.data import load_images
    from overinterp.data.specs import open_dataset
    from overinterp.models import load_model
    from overinterp.results import read_results
    from overinterp.training.evaluation import evaluate_datasets

    model = load_model(None, checkpoint=world / "small.pt")
    from overinterp.training.pipeline import PipelineWarning

    with pytest.warns(PipelineWarning):  # an untrained model on 5 images: the pipeline check warns
        (res,) = evaluate_datasets(model, [str(world / "good.npz")], limit=5, progress=False)
    assert res["n"] == 5 and res["dataset"] == "file:good.npz"
    (world / "results.csv").unlink()
    assert (
        main(
            [a.format(w=world) for a in EVAL + ["--dataset", "{w}/good.npz", "--limit", "5"]]
            + ["--results", str(world / "results.csv")]
        )
        == 0
    )
    assert {r["n"] for r in read_results(world / "results.csv")} == {5}
    (world / "trace.pt").unlink()
    argv = [a.format(w=world) for a in BACKSELECT + ["--images", "{w}/good.npz", "--limit", "2"]]
    assert main(argv) == 0
    assert len(BackselectTrace.load(world / "trace.pt")) == 2
    for bad in (0, -3):
        with pytest.raises(ValueError, match="limit must be an integer >= 1"):
            load_images(world / "good.npz", limit=bad)
        with pytest.raises(ValueError, match="limit must be an integer >= 1"):
            open_dataset(str(world / "good.npz"), limit=bad)
