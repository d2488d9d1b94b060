"""ImageNet classifiers (torchvision, timm), RobustBench and user architectures."""

import sys
import types

import pytest
import torch
from torch import nn

import overinterp
from overinterp.models.external import (
    CIFAR10_MEAN_PIXEL,
    MissingDependencyError,
    imagenet_classifier,
    read_weights,
    robustbench_classifier,
    user_model,
)


def test_inception_v3_from_a_weights_file_has_its_own_input_size(tmp_path):
    torch.manual_seed(0)
    net = imagenet_classifier("inception_v3", "random")
    path = tmp_path / "inception.pth"
    torch.save(net.network.state_dict(), path)
    model = imagenet_classifier("inception_v3", path)
    assert (model.input_size, model.resize) == (299, 342)
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"
    assert torch.allclose(model.baseline, torch.tensor([0.485, 0.456, 0.406]))
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5)
    assert not model.training


def test_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        imagenet_classifier("mobilenet_v3_small")
    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    expected = tmp_path / "checkpoints" / url.rsplit("/", 1)[1]
    assert (
        str(expected) in str(err.value) and url in str(err.value) and "weights=PATH" in str(err.value)
    )  # the library names its argument
    net = torchvision.models.mobilenet_v3_small()
    expected.parent.mkdir(parents=True)
    torch.save(net.state_dict(), expected)
    model = imagenet_classifier("mobilenet_v3_small")
    assert (model.input_size, model.resize) == (224, 256) and model.weights == str(expected)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = net.eval()(torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        assert torch.allclose(model(x), ref, atol=1e-5)


def test_wrong_weights_and_unknown_models_are_clear_errors(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"model": {"fc.weight": torch.zeros(3, 3)}}, path)
    assert set(read_weights(path)) == {"fc.weight"}
    with pytest.raises(ValueError, match="does not fit"):
        imagenet_classifier("mobilenet_v3_small", path)
    with pytest.raises(ValueError, match="not a torchvision model"):
        imagenet_classifier("no_such_net", source="torchvision")
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="no state dict"):
        read_weights(path)


def test_timm_source_without_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(MissingDependencyError, match="pip install timm"):
        imagenet_classifier("convnext_atto", source="timm")


def test_robustbench_missing_and_failing_and_working(monkeypatch):
    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    with pytest.raises(MissingDependencyError, match="robustbench") as err:
        robustbench_classifier("Carmon2019Unlabeled")
    assert isinstance(err.value, ValueError) and "Offline" in str(err.value)

    calls = {}

    def load_model(model_name, dataset, threat_model, model_dir):
        calls.update(model_name=model_name, dataset=dataset, threat_model=threat_model)
        if model_name == "offline":
            raise ConnectionError("no route to host")
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)).train()

    pkg, utils = types.ModuleType("robustbench"), types.ModuleType("robustbench.utils")
    utils.load_model = load_model
    pkg.utils = utils
    monkeypatch.setitem(sys.modules, "robustbench", pkg)
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    with pytest.raises(ValueError, match="needs internet"):
        robustbench_classifier("offline")
    model = robustbench_classifier("Carmon2019Unlabeled", threat_model="L2")
    assert calls == {"model_name": "Carmon2019Unlabeled", "dataset": "cifar10", "threat_model": "L2"}
    assert not model.training and model.preprocessing is None
    assert torch.allclose(model.baseline, torch.tensor(CIFAR10_MEAN_PIXEL))


MODULE = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, hidden=5, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x))
"""


def test_user_architecture_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "their_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("their_models")
    net = mod.Net(hidden=7, classes=4)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, ckpt)
    model = user_model("their_models:Net", ckpt, kwargs={"hidden": 7, "classes": 4}, baseline=CIFAR10_MEAN_PIXEL)
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x))
    assert model.name == "Net" and model.preprocessing is None
    trace = overinterp.backselect(model, x, progress=False)  # usable as any Classifier
    assert trace.P == 16
    with pytest.raises(ValueError, match="does not fit"):
        user_model("their_models:Net", ckpt, kwargs={"hidden": 5, "classes": 4})
    with pytest.raises(ValueError, match="package.module:ClassName"):
        user_model("their_models.Net")
    with pytest.raises(ValueError, match="cannot import"):
        user_model("not_a_module_here:Net")
    with pytest.raises(ValueError, match="no attribute"):
        user_model("their_models:Missing")
    with pytest.raises(ValueError, match="failed"):
        user_model("their_models:Net", kwargs={"width": 3})
