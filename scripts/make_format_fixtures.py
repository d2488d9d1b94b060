"""Make the model-format fixtures of tests/models/test_formats.py, and the CIFAR ResNet20 exports.

Two jobs:

``--tiny OUTDIR`` (default ``tests/models/fixtures``) trains :func:`tiny_cnn` — a 4-class
CNN that takes **raw 0–255 pixels**, NCHW float — for 300 Adam steps on the synthetic
shortcut images (:func:`overinterp.data.synthetic.make_shortcut_dataset`, 16×16, seed 0),
and writes

* ``tiny_cnn_255.pt`` — its state dict (``torch.save``), the PyTorch original the tests compare with;
* ``tiny_cnn_255_nhwc_float.tflite`` — the same network converted by litert-torch 0.10.0
  with NHWC float input in 0–255 (``litert_torch.to_channel_last_io``), logits out;
* ``tiny_cnn_255_nhwc_int8.tflite`` — that file fully integer-quantised by
  ai-edge-quantizer 0.10.0 (recipe ``static_wi8_ai8``: int8 weights, activations, input
  and output; calibrated on 256 shortcut images, seed 2): int8 NHWC input with the model's own
  scale/zero-point (about 1.0 / −128, i.e. the 0–255 range), int8 logits out.

``--cifar-resnet20 OUTDIR`` exports the public pretrained ResNet20
(``--checkpoint``, default ``../shared/data/models/resnet20-cifar10.th``, loaded as
``--model resnet20 --checkpoint … --preprocessing imagenet``) to

* ``resnet20-cifar10.onnx`` — the bare network (ImageNet normalisation left to the spec:
  ``resnet20-cifar10.onnx?preprocessing=imagenet``), dynamic batch;
* ``resnet20-cifar10-255.tflite`` — normalisation folded in, NHWC float input in 0–255
  (spec ``resnet20-cifar10-255.tflite?range=0:255``);

and prints how the loaded exports agree with the PyTorch original on ``--images``
(default ``../shared/data/cifar10-lossless.npz:test``, ``--limit`` images).

Converting needs litert-torch, which is not a dependency of overinterp: use a throwaway venv
that reuses the project's torch (no second multi-GB torch download)::

    python -m venv /tmp/tfvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/tfvenv/lib/python3.11/site-packages/zz_main.pth
    /tmp/tfvenv/bin/pip install litert-torch==0.10.0      # brings ai-edge-quantizer 0.10.0
    OMP_NUM_THREADS=1 /tmp/tfvenv/bin/python scripts/make_format_fixtures.py --tiny tests/models/fixtures
    OMP_NUM_THREADS=1 /tmp/tfvenv/bin/python scripts/make_format_fixtures.py --cifar-resnet20 /tmp/r20

ONNX export needs only ``onnx`` (``pip install 'overinterp[onnx]'``); ``--no-tflite`` skips
the TFLite files so the project's own venv can run ``--cifar-resnet20``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
try:
    import overinterp  # noqa: F401
except ImportError:  # the throwaway venv: the checkout's sources
    sys.path.insert(0, str(ROOT / "src"))

TINY_STEPS = 300
TINY_SIZE = 16


def tiny_cnn() -> nn.Sequential:
    """The fixture network: ``(N, 3, 16, 16)`` raw pixels in 0–255 → ``(N, 4)`` logits (tests rebuild it)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def shortcut_pixels_255(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3, 16, 16)`` float images with integer values 0–255, and ``(n,)`` labels."""
    from overinterp.data.synthetic import make_shortcut_dataset

    data = make_shortcut_dataset(n, size=TINY_SIZE, num_classes=4, seed=seed)
    return (data.images * 255).round(), data.labels


def train_tiny() -> nn.Sequential:
    torch.manual_seed(0)
    net = tiny_cnn()
    x, y = shortcut_pixels_255(512, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(TINY_STEPS):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


class NHWC(nn.Module):
    """``(N, H, W, C)`` → the wrapped NCHW network (what a TFLite image model takes)."""

    def __init__(self, net: nn.Module, mean: list[float] | None = None, std: list[float] | None = None) -> None:
        super().__init__()
        self.net = net
        self.fold = mean is not None
        if mean is not None and std is not None:  # 0–255 input, normalisation folded in
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        if self.fold:
            x = (x - self.mean) / self.std
        return self.net(x)


def to_tflite(module: nn.Module, sample: torch.Tensor, out: Path) -> Path:
    import litert_torch

    litert_torch.convert(module.eval(), (sample,)).export(str(out))
    return out


def quantise_int8(float_tflite: Path, calibration: np.ndarray, out: Path) -> Path:
    """Full-integer quantisation (int8 weights, activations, input and output) with ai-edge-quantizer."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    sigs = Interpreter(str(float_tflite)).get_signature_list()
    sig = next(iter(sigs))
    (name,) = sigs[sig]["inputs"]
    q = quantizer.Quantizer(str(float_tflite), recipe.static_wi8_ai8())
    result = q.quantize(q.calibrate({sig: [{name: calibration[i : i + 1]} for i in range(len(calibration))]}))
    result.export_model(str(out), overwrite=True)
    return out


def make_tiny(out: Path, tflite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    net = train_tiny()
    torch.save(net.state_dict(), out / "tiny_cnn_255.pt")
    xt, yt = shortcut_pixels_255(256, seed=1)
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    print(f"tiny_cnn_255: {TINY_STEPS} steps, accuracy {acc:.3f} on 256 held-out shortcut images (seed 1)")
    if not tflite:
        return
    nhwc = NHWC(net).eval()
    f = to_tflite(nhwc, xt[:1].permute(0, 2, 3, 1).contiguous(), out / "tiny_cnn_255_nhwc_float.tflite")
    calib, _ = shortcut_pixels_255(256, seed=2)
    q = quantise_int8(f, calib.permute(0, 2, 3, 1).contiguous().numpy(), out / "tiny_cnn_255_nhwc_int8.tflite")
    for p in (out / "tiny_cnn_255.pt", f, q):
        print(f"wrote {p} ({p.stat().st_size} bytes)")


def _agreement(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    p_ref, p = torch.softmax(reference.double(), 1), torch.softmax(logits.double(), 1)
    return {
        "argmax_agreement": float((reference.argmax(1) == logits.argmax(1)).double().mean()),
        "max_abs_logit_diff": float((reference.double() - logits.double()).abs().max()),
        "max_abs_prob_diff": float((p_ref - p).abs().max()),
        "accuracy": float((logits.argmax(1) == labels).double().mean()),
    }


def make_cifar_resnet20(out: Path, checkpoint: Path, images: str, limit: int, tflite: bool) -> None:
    from overinterp.data.specs import open_images
    from overinterp.models import load_model_spec
    from overinterp.models.classifier import PREPROCESSING_PRESETS
    from overinterp.models.predict import predict_logits

    out.mkdir(parents=True, exist_ok=True)
    model = load_model_spec("resnet20", checkpoint=checkpoint, preprocessing="imagenet")
    net = model.network.eval()
    sample = torch.rand(1, 3, 32, 32)
    onnx_path = out / "resnet20-cifar10.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (sample,),
            str(onnx_path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )
    specs = {"onnx": f"{onnx_path}?preprocessing=imagenet"}
    if tflite:
        mean, std = PREPROCESSING_PRESETS["imagenet"]  # type: ignore[misc]
        folded = NHWC(net, list(mean), list(std))
        path = to_tflite(folded, (sample * 255).permute(0, 2, 3, 1).contiguous(), out / "resnet20-cifar10-255.tflite")
        specs["tflite"] = f"{path}?range=0:255"
    data = open_images(images, limit=limit)
    pixels = data.images.float() / 255 if data.images.dtype == torch.uint8 else data.images
    reference = predict_logits(model, pixels, batch_size=100)
    report: dict[str, object] = {
        "images": f"{images} (first {len(pixels)})",
        "pytorch_accuracy": float((reference.argmax(1) == data.labels).double().mean()),
    }
    for fmt, spec in specs.items():
        logits = predict_logits(load_model_spec(spec), pixels, batch_size=100)
        report[spec] = _agreement(reference, logits, data.labels)
    print(json.dumps(report, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", type=Path, nargs="?", const=ROOT / "tests/models/fixtures", help="fixture folder")
    p.add_argument("--cifar-resnet20", type=Path, metavar="OUTDIR", help="export the pretrained ResNet20 here")
    p.add_argument("--checkpoint", type=Path, default=ROOT.parent / "shared/data/models/resnet20-cifar10.th")
    p.add_argument("--images", default=f"{ROOT.parent / 'shared/data/cifar10-lossless.npz'}:test", help="dataset spec")
    p.add_argument("--limit", type=int, default=1000, help="images for the agreement check")
    p.add_argument("--no-tflite", action="store_true", help="skip the TFLite files (no litert-torch here)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.tiny is None and args.cifar_resnet20 is None:
        args.tiny = ROOT / "tests/models/fixtures"
    if args.tiny is not None:
        make_tiny(args.tiny, not args.no_tflite)
    if args.cifar_resnet20 is not None:
        make_cifar_resnet20(args.cifar_resnet20, args.checkpoint, args.images, args.limit, not args.no_tflite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
