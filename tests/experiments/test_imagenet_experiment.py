"""The ImageNet SIS experiment end to end on a tiny fake validation set."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import overinterp
from overinterp import Classifier
from overinterp.cli import main
from overinterp.data.imagenet import open_imagenet_val
from overinterp.experiments.imagenet import ImageNetSISConfig, check_block_size, run_imagenet_sis, stack_images

SYNSETS = [f"n{20000000 + i:08d}" for i in range(1000)]


def _fake_val(root, n=5):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        syn = SYNSETS[i * 3]
        (root / syn).mkdir(exist_ok=True)
        arr = (rng.random((20, 24, 3)) * 60).astype(np.uint8)
        arr[4:14, 6:16, 1] = 220  # a green square: the evidence the tiny model uses
        Image.fromarray(arr).save(root / syn / f"ILSVRC2012_val_{i + 1:08d}.png")
    (root / "synset_words.txt").write_text("\n".join(f"{s} class {j}" for j, s in enumerate(SYNSETS)))
    return open_imagenet_val(root)


def _model():
    """Mean colour → 15 classes (the fake synsets give labels 0 … 12); green images get class 1, f ≈ 0.99."""
    lin = nn.Linear(3, 15)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0] = 40.0
        lin.weight[1, 1] = 40.0
        lin.weight[2, 2] = 40.0
    return Classifier(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin), name="tiny").eval()


def _config(**kw):
    base = dict(num_images=3, confidence=0.9, threshold=0.9, k=32, batch_size=2, crop=16, resize=16, panels=2)
    base.update(kw)
    return ImageNetSISConfig(**base)


def test_run_writes_traces_panels_heatmap_summary_and_resumes(tmp_path, monkeypatch):
    val = _fake_val(tmp_path / "val")
    model = _model()
    out = tmp_path / "run"
    summary = run_imagenet_sis(model, val, out, _config(), progress=False, log=lambda s: None)
    assert summary["selected"] == 3 and summary["with_sis"] == 3
    for name in (
        "selection.json",
        "summary.json",
        "panels.png",
        "heatmap.png",
        "heatmap.pt",
        "traces/batch_0000.pt",
        "traces/batch_0001.pt",
        "sis/batch_0001.pt",
    ):
        assert (out / name).is_file(), name
    assert summary["forward_backward_passes"] == 3 * (256 // 32 + 1)
    # every SIS alone keeps the model at ≥ τ (checked here independently of find_sis)
    masks = []
    for b in (0, 1):
        trace = overinterp.BackselectTrace.load(out / "traces" / f"batch_{b:04d}.pt")
        sis = torch.load(out / "sis" / f"batch_{b:04d}.pt", weights_only=True)["sis"]
        images = val.load(trace.meta["indices"], crop=16, resize=16).pixels()
        keep = trace.sis_mask(sis)
        masks.append(keep)
        with torch.no_grad():
            p = torch.softmax(model(torch.where(keep, images, torch.zeros(()))), 1)
        assert (p.gather(1, trace.target.view(-1, 1)) >= 0.9).all()
        assert trace.method == {"name": "gradient", "params": {"k": 32, "noise": 0.0, "seed": 0, "channels_last": None}}
    freq = torch.load(out / "heatmap.pt", weights_only=True)["frequency"]
    assert torch.allclose(freq, torch.cat(masks)[:, 0].double().mean(0))
    on_square = freq[4:14, 6:16].mean()
    assert on_square > freq.mean()  # the SIS sits on the green square the model looks at
    saved = json.loads((out / "summary.json").read_text())
    assert [d["index"] for d in saved["images"]] == json.loads((out / "selection.json").read_text())["indices"]

    # a rerun recomputes nothing …
    def boom(*a, **k):
        raise AssertionError("backselect called on a finished batch")

    monkeypatch.setattr("overinterp.experiments.imagenet.backselect", boom)
    again = run_imagenet_sis(model, val, out, _config(), progress=False, log=lambda s: None)
    assert again["resumed_images"] == 3 and again["sis_fraction_mean"] == summary["sis_fraction_mean"]
    # … except a batch whose files are missing
    monkeypatch.undo()
    (out / "sis" / "batch_0001.pt").unlink()
    third = run_imagenet_sis(model, val, out, _config(), progress=False, log=lambda s: None)
    assert third["resumed_images"] == 2 and third["images"] == summary["images"]
    with pytest.raises(ValueError, match="other settings"):
        run_imagenet_sis(model, val, out, _config(confidence=0.5), progress=False, log=lambda s: None)


def test_no_confident_image_is_a_clear_error(tmp_path):
    val = _fake_val(tmp_path / "val", n=2)
    flat = Classifier(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))).eval()
    nn.init.zeros_(flat.network[2].weight)
    with pytest.raises(ValueError, match="no image"):
        run_imagenet_sis(flat, val, tmp_path / "o", _config(), progress=False, log=lambda s: None)


def test_bad_block_sizes_and_mixed_sizes():
    with pytest.raises(ValueError, match="exceeds"):
        check_block_size(300, 256)
    with pytest.raises(ValueError, match="positive"):
        check_block_size(0, 256)
    with pytest.raises(ValueError, match="exceeds"):
        _config(k=257).check()
    with pytest.raises(ValueError, match="mixed sizes"):
        stack_images([torch.rand(3, 8, 8), torch.rand(3, 9, 8)])
    assert stack_images([torch.rand(3, 8, 8)] * 2).shape == (2, 3, 8, 8)


def test_command_line(tmp_path, capsys):
    _fake_val(tmp_path / "val", n=2)
    args = [
        "imagenet-sis",
        "--model",
        "mobilenet_v3_small",
        "--weights",
        "random",
        "--data",
        str(tmp_path / "val"),
        "--crop",
        "32",
        "--resize",
        "36",
        "--confidence",
        "0",
        "--threshold",
        "0.0001",
        "--k",
        "256",
        "--num-images",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["selected"] == 2 and summary["settings"]["k"] == 256
    assert (tmp_path / "run" / "heatmap.png").is_file()
    bad = list(args)
    bad[bad.index("--k") + 1] = "5000"
    assert main(bad) == 2
    assert "exceeds" in capsys.readouterr().err


def test_command_line_paper_transform_resizes_straight_to_the_crop(tmp_path):
    _fake_val(tmp_path / "val", n=2)
    args = ["imagenet-sis", "--model", "mobilenet_v3_small", "--weights", "random", "--data", str(tmp_path / "val")]
    args += ["--crop", "32", "--confidence", "0", "--threshold", "0.0001", "--k", "256", "--num-images", "1"]
    args += ["--batch-size", "2", "--no-progress", "--panels", "0"]
    assert main([*args, "--transform", "paper", "--out", str(tmp_path / "paper")]) == 0
    assert json.loads((tmp_path / "paper" / "summary.json").read_text())["settings"]["resize"] == 32
    assert main([*args, "--out", str(tmp_path / "tv")]) == 0  # torchvision: the weights' own resize (256 for 224)
    assert json.loads((tmp_path / "tv" / "summary.json").read_text())["settings"]["resize"] == 256
