"""The command line and image loading, on files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from overinterp import BackselectTrace
from overinterp.cli import main
from overinterp.data import load_images
from overinterp.models import create_model, save_checkpoint


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    return save_checkpoint(tmp_path / "small.pt", model, "smallcnn")


def write_folder(root, n_per_class=2, size=6):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / cls / f"{k}.png")


def test_load_images_formats(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", test_images=arr, test_labels=np.arange(4))
    torch.save(
        {"images": torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255, "labels": torch.arange(4)},
        tmp_path / "c.pt",
    )
    for name in ("a.npy", "b.npz", "c.pt"):
        s = load_images(tmp_path / name)
        assert s.images.shape == (4, 3, 5, 6) and s.images.dtype == torch.float32
        torch.testing.assert_close(s.images, torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255)
    assert load_images(tmp_path / "b.npz").labels.tolist() == [0, 1, 2, 3]
    assert load_images(tmp_path / "b.npz", limit=2).images.shape[0] == 2
    write_folder(tmp_path / "folder")
    s = load_images(tmp_path / "folder")
    assert s.images.shape == (4, 3, 6, 6) and s.labels.tolist() == [0, 0, 1, 1] and s.classes == ["cat", "dog"]


def test_load_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        load_images(tmp_path / "x.txt")
    np.save(tmp_path / "f.npy", np.full((2, 4, 4, 3), 3.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_images(tmp_path / "f.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_images(tmp_path / "empty")


def test_backselect_command_writes_trace(tmp_path, checkpoint, capsys):
    write_folder(tmp_path / "imgs")
    out = tmp_path / "trace.pt"
    rc = main(
        [
            "backselect",
            "--model",
            "smallcnn",
            "--checkpoint",
            str(checkpoint),
            "--images",
            str(tmp_path / "imgs"),
            "--out",
            str(out),
            "--limit",
            "3",
            "--threshold",
            "0.4",
            "--no-progress",
            "--batch-size",
            "17",
        ]
    )
    assert rc == 0
    trace = BackselectTrace.load(out)
    assert len(trace) == 3 and trace.P == 36 and trace.labels.tolist() == [0, 0, 1]
    printed = capsys.readouterr().out
    assert "SIS at τ = 0.4" in printed and "image 2" in printed
    assert main(["inspect", str(out), "--threshold", "0.5"]) == 0


def test_backselect_command_patches(tmp_path, checkpoint):
    arr = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    out = tmp_path / "t.pt"
    assert (
        main(
            [
                "backselect",
                "--model",
                "smallcnn",
                "--checkpoint",
                str(checkpoint),
                "--images",
                str(tmp_path / "a.npy"),
                "--out",
                str(out),
                "--patch",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert BackselectTrace.load(out).P == 16


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nosuchnet"], "unknown model"),
        (["--model", "smallcnn", "--checkpoint", "{junk}"], "cannot read"),
        (["--model", "smallcnn", "--checkpoint", "{missing}"], "not found"),
    ],
)
def test_backselect_command_errors(tmp_path, capsys, argv, message):
    np.save(tmp_path / "a.npy", np.zeros((1, 4, 4, 3), dtype=np.uint8))
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    argv = [a.format(junk=tmp_path / "junk.pt", missing=tmp_path / "missing.pt") for a in argv]
    rc = main(["backselect", *argv, "--images", str(tmp_path / "a.npy"), "--out", str(tmp_path / "o.pt")])
    assert rc == 2
    assert message in capsys.readouterr().err.lower()
    assert not (tmp_path / "o.pt").exists()


def test_models_command(capsys):
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "smallcnn"} <= set(names)
