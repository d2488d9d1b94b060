"""Black-box classifiers: adapter contract, errors, ties, relative thresholds,
superpixels, and a real quantised TFLite MobileNet on a photo."""

from pathlib import Path

import numpy as np
import pytest
import torch

import overinterp
from overinterp import (
    BatchedGradient,
    BlackBoxClassifier,
    Exact,
    KStep,
    find_sis_relative,
    patch_features,
    superpixel_features,
)
from reference import TinyCNN

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet-tflite"


@pytest.fixture(scope="module")
def net():
    return TinyCNN(num_classes=4, height=8, width=8, seed=3, scale=0.3).double()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_probabilities_give_the_same_order_as_the_logits(net, images):
    """log p − log Σ_{j≠t} p_j is the logits' log-odds, so the order is the network's."""
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        with torch.no_grad():
            return torch.softmax(net(x.double()), 1).numpy()

    bb = BlackBoxClassifier(fn, num_classes=4, input_format="torch:nchw:float32", max_batch=5)
    feats = patch_features(8, 8, 2)
    ref = overinterp.backselect(net, images, method=Exact(), features=feats, progress=False, mask_value=0.0)
    got = overinterp.backselect(bb, images.float().double(), method=Exact(), features=feats, progress=False)
    assert torch.equal(ref.order, got.order)
    assert torch.allclose(ref.logodds.double(), got.logodds.double(), atol=1e-4)
    assert max(calls) <= 5 and bb.calls == sum(calls)


def test_numpy_uint8_nhwc_with_quantised_outputs(net):
    seen = {}

    def fn(x):
        seen["dtype"], seen["shape"] = x.dtype, x.shape
        t = torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255
        with torch.no_grad():
            p = torch.softmax(net(t), 1)
        return np.round(p.numpy() * 256).clip(0, 255).astype(np.uint8)

    bb = BlackBoxClassifier(
        fn, num_classes=4, input_format="numpy:nhwc:uint8", dequantize=(1 / 256, 0), input_size=(8, 8), baseline=0.5
    )
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = bb(x)
    assert seen["dtype"] == np.uint8 and seen["shape"] == (3, 8, 8, 3)
    q = torch.from_numpy(fn((x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())).double() / 256
    assert torch.allclose(out, torch.log(q.clamp(min=1e-12)))
    trace = overinterp.backselect(bb, x, method=KStep(4), features=patch_features(8, 8, 2), progress=False)
    res = trace.find_sis(0.3, bb, x)
    assert res.verified and all(s is None or s.numel() >= 1 for s in res)


def test_declared_probabilities_that_are_logits_are_refused(net, images):
    bb = BlackBoxClassifier(lambda x: net(x.double()).detach(), num_classes=4)
    with pytest.raises(ValueError, match="outputs='logits'"):
        bb(images.float())
    # rows inside [0, 1] that do not sum to 1 are refused too
    bb2 = BlackBoxClassifier(lambda x: torch.full((x.shape[0], 4), 0.9), num_classes=4)
    with pytest.raises(ValueError, match="row sums"):
        bb2(images.float())
    ok = BlackBoxClassifier(lambda x: net(x.double()).detach(), num_classes=4, outputs="logits")
    assert torch.allclose(ok(images.float()), net(images.float().double()).detach())


def test_bad_outputs_and_inputs_are_clear_errors(images):
    x = images.float()
    with pytest.raises(TypeError, match="dequantize"):
        BlackBoxClassifier(lambda b: np.zeros((b.shape[0], 4), np.uint8), num_classes=4)(x)
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        BlackBoxClassifier(lambda b: np.full((b.shape[0], 3), 1 / 3), num_classes=4)(x)
    with pytest.raises(ValueError, match="resize"):
        BlackBoxClassifier(lambda b: np.full((b.shape[0], 4), 0.25), num_classes=4, input_size=(16, 16))(x)
    with pytest.raises(ValueError, match="input_format"):
        BlackBoxClassifier(lambda b: b, num_classes=4, input_format="nchw")
    with pytest.raises(TypeError, match="callable"):
        BlackBoxClassifier("not a function", num_classes=4)
    with pytest.raises(ValueError, match="Classifier takes pixels"):
        overinterp.backselect(
            BlackBoxClassifier(lambda b: np.full((b.shape[0], 4), 0.25), num_classes=4), x * 3, progress=False
        )


def test_gradient_method_on_a_black_box_says_use_a_forward_only_method(net, images):
    bb = BlackBoxClassifier(lambda x: torch.softmax(net(x.double()), 1).detach().numpy(), num_classes=4)
    with pytest.raises(TypeError, match="forward-only method"):
        overinterp.backselect(bb, images.float(), method=BatchedGradient(4), progress=False)


def test_ties_go_to_the_lowest_feature_id():
    """Scores that move in steps tie; a constant black box removes features in id order."""
    bb = BlackBoxClassifier(lambda x: np.tile([0.7, 0.2, 0.1], (x.shape[0], 1)), num_classes=3)
    x = torch.rand(1, 3, 4, 4)
    for method in (Exact(), KStep(3)):
        trace = overinterp.backselect(bb, x, method=method, features=patch_features(4, 4, 2), progress=False)
        assert trace.order[0].tolist() == [0, 1, 2, 3]


def test_relative_threshold_is_a_fraction_of_each_images_confidence(net, images):
    bb = BlackBoxClassifier(lambda x: torch.softmax(net(x.double()), 1).detach().numpy(), num_classes=4)
    x = images.float()
    trace = overinterp.backselect(bb, x, method=Exact(), features=patch_features(8, 8, 2), progress=False)
    res = find_sis_relative(trace, 0.8, bb, x)
    f = torch.sigmoid(trace.full_logodds.double())
    assert torch.allclose(res.thresholds, 0.8 * f)
    assert res.verified and all(s is not None for s in res)
    assert (res.confidence >= res.thresholds - 1e-9).all()
    # the SIS is the smallest suffix that reaches τ_i: one feature fewer falls short
    for i, s in enumerate(res):
        fixed = trace.find_sis(float(res.thresholds[i]))[i]
        assert torch.equal(s, fixed)
    with pytest.raises(ValueError, match="ratio"):
        find_sis_relative(trace, 1.5)


def test_superpixels_follow_colour_edges_and_use_every_id():
    img = torch.zeros(3, 16, 16)
    img[0, :, :7] = 1.0  # red left part, black right part: boundary at column 7
    g = superpixel_features(img, n_segments=8, compactness=0.1)
    assert g.shape == (16, 16) and g.dtype == torch.int64
    assert torch.equal(torch.unique(g), torch.arange(int(g.max()) + 1))
    left, right = set(g[:, :7].unique().tolist()), set(g[:, 7:].unique().tolist())
    assert not left & right, "a superpixel straddles the colour edge"
    assert torch.equal(g, superpixel_features(img, n_segments=8, compactness=0.1))
    batch = superpixel_features(torch.stack([img, img.flip(-1)]), n_segments=8)
    assert batch.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="n_segments"):
        superpixel_features(img, n_segments=0)


def test_missing_tflite_runtime_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match="ai-edge-litert"):
        overinterp.tflite_classifier(tmp_path / "m.tflite")


@pytest.mark.data
def test_tflite_mobilenet_sis_on_a_photo_is_sufficient():
    """A real quantised MobileNet (no gradients): KStep over 8×8 patches on a
    photo; the SIS alone, masked and re-run through the interpreter, keeps ≥ τ."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install -e .[test])")
    model_path = SHARED / "mobilenet_v1_0.25_128_quant.tflite"
    if not model_path.is_file():
        pytest.skip(f"shared data not found at {SHARED.resolve()} (real-data test)")
    from overinterp.data.imagenet import load_photo

    model = overinterp.tflite_classifier(model_path, labels=SHARED / "imagenet_labels.txt")
    assert model.input_size == (128, 128) and model.num_classes == 1001
    x = load_photo(SHARED / "photos" / "parrot.jpg", 128)[None]
    p_full = model.probabilities(x)[0]
    assert model.class_names[int(p_full.argmax())].startswith("macaw")
    feats = patch_features(128, 128, 8)  # 256 features
    trace = overinterp.backselect(model, x, method=KStep(16), features=feats, progress=False)
    res = find_sis_relative(trace, 0.9, model, x)
    sis = res[0]
    assert sis is not None and 0 < sis.numel() < 256
    # independent check: mask everything outside the SIS, run the interpreter again
    keep = torch.isin(feats, sis)
    masked = torch.where(keep, x[0], model.baseline.view(-1, 1, 1)).unsqueeze(0)
    p = model.probabilities(masked)[0]
    t = int(trace.target[0])
    assert float(p[t]) >= float(res.thresholds[0])
    # the full image is above τ and the all-masked image below it: the SIS is not trivial
    blank = model.probabilities(model.baseline.expand(1, 3, 128, 128).clone())[0]
    assert float(blank[t]) < float(res.thresholds[0]) <= float(p_full[t] / p_full.sum())


@pytest.mark.data
def test_blackbox_command_line_with_superpixels(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install -e .[test])")
    if not (SHARED / "mobilenet_v1_0.25_128_quant.tflite").is_file():
        pytest.skip(f"shared data not found at {SHARED.resolve()} (real-data test)")
    import json

    from overinterp.cli import main

    rc = main(
        [
            "blackbox-sis",
            "--tflite",
            str(SHARED / "mobilenet_v1_0.25_128_quant.tflite"),
            "--labels",
            str(SHARED / "imagenet_labels.txt"),
            "--image",
            str(SHARED / "photos" / "sunflower.bmp"),
            "--superpixels",
            "24",
            "--k",
            "2",
            "--ratio",
            "0.8",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    row = summary["images"][0]
    assert row["class"].startswith("daisy") and 10 <= row["features"] <= 40
    assert row["sis_confidence"] >= row["threshold"] and (tmp_path / "panels.png").is_file()
    trace = overinterp.BackselectTrace.load(tmp_path / "trace.pt")
    assert trace.features.shape == (1, 128, 128)
