"""Bad inputs on the command line: each is a one-line user error (exit code 2), never a
traceback, and no output file is written or overwritten."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from overinterp.cli import main
from overinterp.models import create_model, save_checkpoint

SENTINEL = b"an earlier output that must survive\n"


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    """Inputs good and bad, and earlier outputs (sentinel files) that must not change."""
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    save_checkpoint(tmp_path / "small.pt", model, "smallcnn")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan-weights.pt", model, "smallcnn")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", images=images, labels=np.arange(12) % 3)
    np.savez(tmp_path / "labels99.npz", images=images[:4], labels=np.array([0, 1, 99, -1]))
    np.savez(tmp_path / "small16.npz", images=images[:2].repeat(2, 1).repeat(2, 2), labels=np.array([0, 1]))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels[2, 0, 3, 3] = float("nan")
    torch.save({"images": pixels, "labels": torch.arange(12) % 3}, tmp_path / "nan-images.pt")
    torch.save({"images": argparse.Namespace(evil=True)}, tmp_path / "pickled.pt")  # refused by weights_only
    (tmp_path / "results.csv").write_bytes(SENTINEL)
    (tmp_path / "trace.pt").write_bytes(SENTINEL)
    (tmp_path / "a-file").write_bytes(SENTINEL)
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "run" / "job").mkdir(parents=True)
    (tmp_path / "run" / "job" / "manifest.json").write_text('{"format": "overinterp-backselect-job", ')
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


EVAL = ["evaluate", "--model", "{w}/small.pt", "--no-progress"]
BACKSELECT = ["backselect", "--model", "{w}/small.pt", "--out", "{w}/trace.pt", "--no-progress"]
TRAIN = ["train", "--arch", "smallcnn", "--recipe", "fast", "--epochs", "1", "--data", "{w}/good.npz", "--no-progress"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

#: (argv, what the message must say); "{w}" is the test's folder
CASES = {
    "pickled images .pt": (BACKSELECT + ["--images", "{w}/pickled.pt"], "cannot read images"),
    "network too deep for the images": (
        ["evaluate", "--model", "vgg16_bn", "--num-classes", "3", "--dataset", "{w}/small16.npz", "--no-progress"],
        "vgg16_bn cannot classify 3×16×16 images; it needs images of at least 32×32 pixels",
    ),
    "--device cuda without a GPU": pytest.param(
        EVAL + ["--dataset", "{w}/good.npz", "--device", "cuda"], "no CUDA GPU", marks=NO_CUDA
    ),
    "--device bogus": (EVAL + ["--dataset", "{w}/good.npz", "--device", "bogus"], "not a torch device: 'bogus'"),
    "train --out an existing file": (TRAIN + ["--out", "{w}/a-file"], "a-file is a file, not a folder"),
    "evaluate --results a folder": (
        EVAL + ["--dataset", "{w}/good.npz", "--results", "{w}/a-folder"],
        "a-folder is a folder; give a file name",
    ),
    "train --lr nan": (TRAIN + ["--out", "{w}/new-run", "--lr", "nan"], "--lr: expected a finite number > 0"),
    "NaN weights": (
        ["evaluate", "--model", "{w}/nan-weights.pt", "--dataset", "{w}/good.npz", "--results", "{w}/results.csv"],
        "returned NaN logits for image 0 of 12",
    ),
    "NaN images": (
        EVAL + ["--dataset", "{w}/nan-images.pt", "--results", "{w}/results.csv"],
        "file:nan-images.pt: image 2 of 12 has NaN pixel values",
    ),
    "evaluate labels beyond the classes": (
        EVAL + ["--dataset", "{w}/labels99.npz", "--results", "{w}/results.csv"],
        "label 99 (image 2; labels out of range: -1, 99) is not a class of the model, which has 3 classes",
    ),
    "backselect labels beyond the classes": (
        BACKSELECT + ["--images", "{w}/labels99.npz"],
        "is not a class of the model, which has 3 classes",
    ),
    "backselect --limit 0": (BACKSELECT + ["--images", "{w}/good.npz", "--limit", "0"], "--limit: must be an integer"),
    "backselect --limit -3": (BACKSELECT + ["--images", "{w}/good.npz", "--limit", "-3"], "must be an integer >= 1"),
    "evaluate --limit 0": (EVAL + ["--dataset", "{w}/good.npz", "--limit", "0"], "--limit: must be an integer >= 1"),
    "--batch-size 0": (EVAL + ["--dataset", "{w}/good.npz", "--batch-size", "0"], "--batch-size: must be an integer"),
    "--threads 0": (BACKSELECT + ["--images", "{w}/good.npz", "--threads", "0"], "--threads: must be an integer"),
    "--threshold 2": (BACKSELECT + ["--images", "{w}/good.npz", "--threshold", "2"], "must be in [0, 1]"),
    "train --epochs 0": (TRAIN + ["--out", "{w}/new-run", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    "report of a corrupt job manifest": (["report", "{w}/run"], "cannot read {w}/run/job/manifest.json"),
}


@pytest.mark.parametrize(("argv", "message"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_a_one_line_user_error(world, argv, message, capsys):
    before = _snapshot(world)
    capsys.readouterr()
    rc = main([a.format(w=world) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    assert message.format(w=world) in errors[0]
    assert _snapshot(world) == before, "an output file was written or overwritten"
    assert (world / "results.csv").read_bytes() == SENTINEL and (world / "trace.pt").read_bytes() == SENTINEL


def test_unwritable_output_is_a_user_error(world, capsys, monkeypatch):
    """A read-only output folder: refused at parsing where the permissions show it, else the
    PermissionError of the write is a one-line user error."""
    from overinterp import BackselectTrace

    def denied(self, path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(BackselectTrace, "save", denied)
    argv = [a.format(w=world) for a in BACKSELECT + ["--images", "{w}/good.npz", "--limit", "1"]]
    before = _snapshot(world)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].startswith("overinterp backselect: error:")
    assert "Permission denied" in err and _snapshot(world) == before
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
