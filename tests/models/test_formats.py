"""Model files of other toolchains through the one model spec: TorchScript, torch.export (.pt2),
ONNX and TFLite (float and int8 input), each against the PyTorch original it came from.

The original (``fixtures/tiny_cnn_255.pt``, made by ``scripts/make_format_fixtures.py``) takes
**raw 0–255 pixels**, so every file is loaded with ``range=0:255`` (int8 TFLite: its quantisation's
range, which is 0–255), and a loader that fed it [0, 1] pixels would fail every agreement test.
"""

from __future__ import annotations

import copy
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import overinterp
from overinterp.cli import main
from overinterp.data.synthetic import make_shortcut_dataset
from overinterp.errors import UserInputError
from overinterp.models import BlackBoxClassifier, Classifier, load_model_spec, parse_model_spec
from overinterp.models.formats import detect_format, sniff_format
from overinterp.results import model_fingerprint, read_results
from overinterp.sis.methods.base import GradientsUnavailableError

FIXTURES = Path(__file__).parent / "fixtures"
STATE = FIXTURES / "tiny_cnn_255.pt"
TFLITE_FLOAT = FIXTURES / "tiny_cnn_255_nhwc_float.tflite"
TFLITE_INT8 = FIXTURES / "tiny_cnn_255_nhwc_int8.tflite"

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")


def tiny_cnn() -> nn.Sequential:
    """The fixture network (as in scripts/make_format_fixtures.py): (N, 3, 16, 16) in 0–255 → (N, 4) logits."""
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


class Times255(nn.Module):
    """The original as a Classifier network: pixels in [0, 1] → 0–255 → the net."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 255)


@pytest.fixture(scope="module")
def net() -> nn.Sequential:
    model = tiny_cnn()
    model.load_state_dict(torch.load(STATE, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """(64, 3, 16, 16) held-out shortcut images as uint8-level pixels in [0, 1], and labels."""
    data = make_shortcut_dataset(64, size=16, num_classes=4, seed=1)
    return (data.images * 255).round() / 255, data.labels


@pytest.fixture(scope="module")
def files(net, tmp_path_factory) -> dict[str, Path]:
    """The original exported as ONNX, TorchScript and torch.export (NCHW, 0–255), beside the TFLite fixtures."""
    out = tmp_path_factory.mktemp("formats")
    x = torch.rand(2, 3, 16, 16) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), str(out / "tiny.onnx"), dynamo=False, dynamic_axes={"x": {0: "n"}}, input_names=["x"]
        )
        torch.jit.save(torch.jit.script(net), str(out / "tiny_ts.pt"))
        program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(out / "tiny.pt2"))
        softmax = nn.Sequential(net, nn.Softmax(dim=1)).eval()
        torch.onnx.export(
            softmax, (x,), str(out / "probs.onnx"), dynamo=False, dynamic_axes={"x": {0: "n"}}, input_names=["x"]
        )
    return {
        "onnx": out / "tiny.onnx",
        "torchscript": out / "tiny_ts.pt",
        "pt2": out / "tiny.pt2",
        "tflite": TFLITE_FLOAT,
        "probs": out / "probs.onnx",
    }


def reference(net: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(pixels * 255).double()


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "tflite"])
def test_each_float_format_agrees_with_the_pytorch_original(fmt, files, net, pixels):
    x, _ = pixels
    spec = parse_model_spec(f"{files[fmt]}?range=0:255")
    assert spec.kind == fmt and spec.forward_only == (fmt in ("onnx", "tflite"))
    model = spec.load()
    assert isinstance(model, BlackBoxClassifier) == spec.forward_only and not model.training
    assert model.contract["layout"] == ("nhwc" if fmt == "tflite" else "nchw")  # read from the file
    ref = reference(net, x)
    got = overinterp.models.predict.predict_logits(model, x, batch_size=16).double()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-5), float((got - ref).abs().max())
    # the contract matters: the same file fed [0, 1] pixels (the default range) predicts something else
    wrong = load_model_spec(str(files[fmt]))
    with torch.no_grad():
        assert float((wrong(x).double() - ref).abs().max()) > 1.0


def test_int8_tflite_is_fed_with_its_own_quantisation(net, pixels):
    """q = round(v / scale + zero_point) on the model's int8 input; outputs dequantised."""
    from ai_edge_litert.interpreter import Interpreter

    data = make_shortcut_dataset(256, size=16, num_classes=4, seed=1)
    x = (data.images * 255).round() / 255
    model = load_model_spec(str(TFLITE_INT8))
    assert model.contract["range"] == [0.0, 255.0]  # the range its quantisation covers: the raw 0–255 levels
    got = overinterp.models.predict.predict_logits(model, x, batch_size=64).double()
    # exactly what the interpreter gives for the hand-quantised input
    it = Interpreter(str(TFLITE_INT8))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    (s, z), (os_, oz) = inp["quantization"], out["quantization"]
    assert inp["dtype"] == np.int8 and s > 0
    q = np.clip(np.rint((x[:4] * 255).permute(0, 2, 3, 1).numpy() / s + z), -128, 127).astype(np.int8)
    raw = []
    for i in range(4):
        it.set_tensor(inp["index"], q[i : i + 1])
        it.invoke()
        raw.append((it.get_tensor(out["index"]).astype(np.float64) - oz) * os_)
    assert torch.equal(got[:4], torch.from_numpy(np.concatenate(raw)))
    # against the float original: argmax on most images, probabilities close on average
    ref = reference(net, x)
    agree = float((got.argmax(1) == ref.argmax(1)).double().mean())
    perr = (torch.softmax(got, 1) - torch.softmax(ref, 1)).abs().max(1).values
    assert agree >= 0.95, agree  # measured 0.996
    assert float(perr.mean()) < 0.1 and float(perr.quantile(0.9)) < 0.25, (float(perr.mean()), perr.quantile(0.9))
    assert torch.equal(load_model_spec(f"{TFLITE_INT8}?range=0:255")(x[:8]), got[:8])  # the same, declared


def test_probability_outputs_are_detected_and_give_the_same_order(files, net, pixels):
    x, _ = pixels
    model = load_model_spec(f"{files['probs']}?range=0:255")
    assert model.contract["outputs"] == "probabilities"
    assert load_model_spec(f"{files['onnx']}?range=0:255").contract["outputs"] == "logits"
    original = Classifier(Times255(net)).eval()
    features = overinterp.patch_features(16, 16, 4)
    a = overinterp.backselect(model, x[:2], method=overinterp.Exact(), features=features, progress=False)
    b = overinterp.backselect(original, x[:2], method=overinterp.Exact(), features=features, progress=False)
    assert torch.equal(a.order, b.order)  # log p has the logits' log-odds
    assert torch.allclose(a.logodds, b.logodds, atol=1e-3)


def test_resize_and_normalisation_contract(files, net, pixels):
    x, _ = pixels
    big = torch.nn.functional.interpolate(x[:4], size=(32, 32), mode="nearest")
    with pytest.raises(UserInputError, match="resize=bilinear"):
        load_model_spec(f"{files['onnx']}?range=0:255")(big)
    model = load_model_spec(f"{files['onnx']}?range=0:255&resize=bilinear")
    want = reference(net, torch.nn.functional.interpolate(big, size=(16, 16), mode="bilinear", antialias=True))
    assert torch.allclose(model(big).double(), want, atol=1e-4)
    # (v − mean) / std in the range's units: mean 0, std 1/255 on [0, 1] is the same function as range=0:255
    same = load_model_spec(f"{files['onnx']}?std=0.00392156862745098")
    assert torch.allclose(same(x).double(), reference(net, x), atol=1e-3)
    # the default baseline is the pixel the model sees as 0
    assert float(load_model_spec(f"{files['onnx']}?range=-1:1").baseline) == 0.5
    assert load_model_spec(f"{files['onnx']}?preprocessing=imagenet").baseline.tolist() == pytest.approx(
        [0.485, 0.456, 0.406]
    )


# --------------------------------------------------------------------------- detection and contract errors


def test_format_is_detected_from_the_bytes(files, tmp_path, net):
    assert [sniff_format(files[k]) for k in ("onnx", "torchscript", "pt2", "tflite")] == [
        "onnx",
        "torchscript",
        "pt2",
        "tflite",
    ]
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    assert detect_format(tmp_path / "weights.pt") == "checkpoint"
    # names without a telling extension still work; a contradicting extension is refused, naming the fix
    shutil.copy(files["onnx"], tmp_path / "model.bin")
    assert parse_model_spec(str(tmp_path / "model.bin")).kind == "onnx"
    shutil.copy(TFLITE_FLOAT, tmp_path / "model.onnx")
    with pytest.raises(UserInputError, match=r"extension \.onnx says onnx, but the bytes are TFLite.*FORMAT:"):
        parse_model_spec(str(tmp_path / "model.onnx"))
    assert parse_model_spec(f"tflite:{tmp_path / 'model.onnx'}?range=0:255").kind == "tflite"
    with pytest.raises(UserInputError, match="named onnx, but its bytes are TFLite"):
        parse_model_spec(f"onnx:{TFLITE_FLOAT}")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(UserInputError, match="unknown model file format; supported: torchscript.*onnx.*tflite"):
        parse_model_spec(str(tmp_path / "model.h5"))
    with pytest.raises(FileNotFoundError, match="file not found"):
        parse_model_spec(f"{tmp_path / 'absent.onnx'}?range=0:255")


def test_contract_that_contradicts_the_model_is_refused_before_work(files):
    onnx, tfl = files["onnx"], TFLITE_FLOAT
    with pytest.raises(UserInputError, match="size=32x32 contradicts the model, whose input height is 16"):
        load_model_spec(f"{onnx}?size=32")
    with pytest.raises(UserInputError, match="looks NHWC: use layout=nhwc"):
        load_model_spec(f"{tfl}?layout=nchw")
    with pytest.raises(UserInputError, match="mean has 2 values for a model with 3 input channels"):
        load_model_spec(f"{onnx}?mean=1,2")
    with pytest.raises(UserInputError, match="num_classes=10, but the model outputs 4"):
        load_model_spec(f"{onnx}?num_classes=10")
    # checked by the parser, before anything is loaded
    with pytest.raises(UserInputError, match="unknown model-file option.*colour.*range, mean, std, layout"):
        parse_model_spec(f"{onnx}?colour=red")
    with pytest.raises(UserInputError, match="expected LO:HI"):
        parse_model_spec(f"{onnx}?range=255:0")
    with pytest.raises(ValueError, match="checkpoint: model .* holds its weights; do not also give one"):
        parse_model_spec(str(onnx), checkpoint=str(onnx))
    model = load_model_spec(f"{tfl}?range=0:255")
    with pytest.raises(UserInputError, match="takes 3-channel images; these have 1"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(UserInputError, match="takes 16×16 images, these are 8×8"):
        overinterp.models.predict.probe_model(model, (3, 8, 8))


def test_spec_is_plain_data_and_the_fingerprint_is_file_plus_contract(files, tmp_path, net):
    spec = parse_model_spec(f"mine={files['onnx']}?range=0:255&outputs=logits")
    assert spec.name == f"onnx:{files['onnx'].resolve()}" and spec.checkpoint is None and spec.label == "mine"
    assert spec.options == {"range": "0:255", "outputs": "logits"} and spec.display_name == "mine"
    assert type(spec).from_dict(spec.to_dict()) == spec
    assert parse_model_spec(str(spec.name) + "?range=0:255&outputs=logits").load().name == "tiny"
    fp = model_fingerprint(spec.load())
    assert fp == model_fingerprint(spec.load())  # deterministic: what dataset jobs check on every worker
    assert fp != model_fingerprint(load_model_spec(f"{files['onnx']}?range=0:254"))  # another contract
    assert model_fingerprint(load_model_spec(f"{files['onnx']}?threads=2&range=0:255&outputs=logits")) == fp
    other = tiny_cnn()
    other.load_state_dict({k: v + 0.01 for k, v in net.state_dict().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(other.eval(), (torch.rand(1, 3, 16, 16),), str(tmp_path / "other.onnx"), dynamo=False)
    assert model_fingerprint(load_model_spec(f"{tmp_path / 'other.onnx'}?range=0:255&outputs=logits")) != fp


def test_forward_only_models_survive_the_copies_dataset_jobs_make(files, net, pixels):
    """Jobs on another device or dtype run ``copy.deepcopy(model).to(...)``; runtime sessions cannot be copied."""
    x, _ = pixels
    for spec in (f"{files['onnx']}?range=0:255", str(TFLITE_INT8)):
        model = load_model_spec(spec)
        copied = copy.deepcopy(model).to(dtype=torch.float64)
        assert torch.equal(copied(x[:4].double()), model(x[:4]).double())
        assert model_fingerprint(copy.deepcopy(model)) == model_fingerprint(model)


# --------------------------------------------------------------------------- methods


def test_gradient_methods_are_refused_for_forward_only_models_only(files, net, pixels):
    x, _ = pixels
    features = overinterp.patch_features(16, 16, 4)
    onnx = load_model_spec(f"{files['onnx']}?range=0:255")
    for method in (overinterp.BatchedGradient(4), overinterp.Fast(), overinterp.Adaptive(head="gradient")):
        with pytest.raises(GradientsUnavailableError, match=r"forward-only \(onnx\); use a forward-only method: exact"):
            overinterp.backselect(onnx, x[:1], method=method, features=features, progress=False)
    ref = overinterp.backselect(
        Classifier(Times255(net)).eval(), x[:2], method=overinterp.BatchedGradient(2), features=features, progress=False
    )
    for fmt in ("torchscript", "pt2"):  # differentiable: gradient methods run and agree
        model = load_model_spec(f"{files[fmt]}?range=0:255")
        trace = overinterp.backselect(
            model, x[:2], method=overinterp.BatchedGradient(2), features=features, progress=False
        )
        assert torch.equal(trace.order, ref.order), fmt


def test_backselect_dataset_evaluate_on_onnx_and_torchscript_match_pytorch(files, net, tmp_path, capsys):
    """End to end on the command line: the job's orders equal those of the PyTorch original."""
    data = make_shortcut_dataset(2, size=16, num_classes=4, seed=3)
    u8 = (data.images * 255).round().to(torch.uint8)
    npz = tmp_path / "two.npz"
    np.savez(
        npz, test_images=u8.permute(0, 2, 3, 1).numpy(), test_labels=data.labels.numpy(), classes=np.array(list("abcd"))
    )
    x = u8.float() / 255
    features = overinterp.patch_features(16, 16, 4)
    ref = overinterp.backselect(
        Classifier(Times255(net)).eval(), x, method=overinterp.KStep(2), features=features, progress=False
    )
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"job-{fmt}"
        spec = f"{files[fmt]}?range=0:255"
        opts = f"--dataset {npz}:test --method kstep --k 2 --patch 4 --shard-size 1 --out {out} --no-progress"
        argv = ["backselect-dataset", "--model", spec, *opts.split()]
        assert main(argv) == 0, capsys.readouterr().err
        job = overinterp.jobs.load_job(out)
        assert torch.equal(job.trace.order, ref.order), fmt
        assert torch.allclose(job.trace.logodds, ref.logodds, atol=1e-4)
        assert job.manifest["identity"]["model_fingerprint"] == model_fingerprint(job.load_model())
        results = tmp_path / f"{fmt}.csv"
        assert (
            main(["evaluate", "--model", spec, "--dataset", f"{npz}:test", "--results", str(results), "--no-progress"])
            == 0
        )
        rows = read_results(results)
        assert {r["fingerprint"] for r in rows} == {model_fingerprint(load_model_spec(spec))}
    capsys.readouterr()
    opts = f"--dataset {npz}:test --method gradient --patch 4 --out {tmp_path / 'refused'} --no-progress"
    argv = ["backselect-dataset", "--model", f"{files['onnx']}?range=0:255", *opts.split()]
    assert main(argv) == 2
    assert re.search(r"use a forward-only method: exact, .*kstep", capsys.readouterr().err)
    assert not (tmp_path / "refused").exists()  # refused before the manifest: another --method can follow
    audit = ["audit", f"{files['onnx']}?range=0:255", f"{npz}:test", "--out", str(tmp_path / "audit")]
    assert main([*audit, "--method", "fast", "--no-progress", "--probe-seconds", "0.1"]) == 2
    assert "forward-only methods: exact, adaptive" in capsys.readouterr().err


@pytest.mark.data
def test_shared_uint8_mobilenet_through_the_spec_equals_tflite_classifier(shared_data):
    """A real uint8-input, uint8-output TFLite model: the spec's default contract (its quantisation's
    range: q = round(255·x); outputs detected as probabilities) gives what ``tflite_classifier`` gives."""
    from overinterp.data.imagenet import load_photo

    path = shared_data / "imagenet-tflite" / "mobilenet_v1_0.25_128_quant.tflite"
    if not path.is_file():
        pytest.skip(f"needs {path}")
    model = load_model_spec(f"{path}?resize=bilinear")
    assert model.contract["outputs"] == "probabilities" and model.contract["size"] == (128, 128)
    assert float(model.baseline) == pytest.approx(128 / 255)  # the pixel the network sees as 0, as tflite_classifier
    x = load_photo(shared_data / "imagenet-tflite" / "photos" / "parrot.jpg", 128)[None]
    same = overinterp.tflite_classifier(path)
    assert torch.equal(model(x), same(x))
    big = torch.nn.functional.interpolate(x, size=(160, 160), mode="bilinear")  # resized back to 128×128
    assert int(model(big).argmax()) == int(same(x).argmax())


def test_files_exported_for_a_fixed_batch_are_fed_in_chunks(net, pixels, tmp_path):
    """Exported without a dynamic batch dimension: any number of images still works (chunks, last one padded)."""
    x, _ = pixels
    one = torch.rand(1, 3, 16, 16) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(net, (one,)), str(tmp_path / "b1.pt2"))
        torch.onnx.export(net, (one,), str(tmp_path / "b1.onnx"), dynamo=False)
    for name in ("b1.pt2", "b1.onnx"):
        model = load_model_spec(f"{tmp_path / name}?range=0:255")
        with torch.no_grad():
            assert torch.allclose(model(x[:5]).double(), reference(net, x[:5]), atol=1e-4), name


def test_a_preprocessing_preset_normalises_unit_pixels_also_for_integer_input_models():
    """``preprocessing=imagenet`` on an int8-input file means ImageNet statistics of [0, 1] pixels,
    not of the quantised range (which would saturate every input)."""
    from overinterp.models import load_model_file

    path = Path(__file__).parent / "fixtures" / "tiny_cnn_255_nhwc_int8.tflite"
    model = load_model_file(path, preprocessing="imagenet")
    assert torch.allclose(
        model.baseline.flatten()[:3].double(), torch.tensor([0.485, 0.456, 0.406]).double(), atol=1e-4
    )
