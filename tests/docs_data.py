"""The small files the documentation's examples use (``tests/test_docs_examples.py`` runs every
runnable block of ``README.md`` and ``docs/`` in a folder holding them).

* ``my_project.py`` — ``Net``, a small CNN taking pixels in [0, 1] ``(N, 3, 16, 16)`` → 4 logits;
  ``net.pt`` its state dict (the weights of ``tests/models/fixtures/tiny_cnn_255.pt``, trained on
  the synthetic shortcut images, behind a ``× 255`` input scaling);
* ``images.npz`` — 64 shortcut images, uint8 ``(N, 16, 16, 3)`` and labels; ``my_images/`` the
  same as PNG files in class sub-folders; ``photos/`` 6 unlabelled PNGs of other sizes;
* ``net_ts.pt`` (TorchScript of ``Net``, [0, 1] input), ``net.onnx`` (ONNX of the 0–255 body),
  ``model.tflite`` (the float TFLite fixture: NHWC, 0–255 input).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "models" / "fixtures"

MY_PROJECT = '''"""An example user project: the architecture of a model whose weights are in net.pt."""
import torch
from torch import nn


class Net(nn.Module):
    """(N, 3, 16, 16) pixels in [0, 1] -> (N, 4) logits."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 255)
'''


def make_example_files(where: Path) -> Path:
    """Write the example files into ``where`` (created); returns it."""
    import importlib.util

    from overinterp.data.synthetic import make_shortcut_dataset

    where.mkdir(parents=True, exist_ok=True)
    (where / "my_project.py").write_text(MY_PROJECT)
    spec = importlib.util.spec_from_file_location("_docs_my_project", where / "my_project.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    net = module.Net().eval()
    body = torch.load(FIXTURES / "tiny_cnn_255.pt", map_location="cpu", weights_only=True)
    net.body.load_state_dict(body)
    torch.save(net.state_dict(), where / "net.pt")

    data = make_shortcut_dataset(64, size=16, num_classes=4, seed=1)
    images = (data.images * 255).round().to(torch.uint8)
    np.savez(where / "images.npz", images=images.permute(0, 2, 3, 1).numpy(), labels=data.labels.numpy())
    for i, (img, label) in enumerate(zip(images, data.labels.tolist())):
        folder = where / "my_images" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    (where / "photos").mkdir(exist_ok=True)
    for i, img in enumerate(images[:6]):
        big = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((40 + 4 * i, 36), Image.Resampling.NEAREST)
        big.save(where / "photos" / f"photo{i}.png")

    with warnings.catch_warnings():  # torch's own notices about its TorchScript and legacy ONNX exporters
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        torch.jit.trace(net, torch.rand(1, 3, 16, 16)).save(str(where / "net_ts.pt"))
        torch.onnx.export(net.body, (torch.rand(1, 3, 16, 16) * 255,), str(where / "net.onnx"), dynamo=False)
    shutil.copy(FIXTURES / "tiny_cnn_255_nhwc_float.tflite", where / "model.tflite")
    return where
