"""WideResNet-28-10 / 34-10 in the registry."""

import pytest
import torch

import overinterp
from overinterp.models.archs.wideresnet import WideResNet


@pytest.mark.parametrize("name, params", [("wrn28_10", 36_479_194), ("wrn34_10", 46_160_474)])
def test_parameter_counts_match_the_published_architectures(name, params):
    assert name in overinterp.list_models()
    model = overinterp.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert not model.training


def test_layout_and_forward_of_a_small_instance():
    model = overinterp.create_model("wrn28_10", depth=10, widen_factor=2, preprocessing="cifar10")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    keys = set(model.network.state_dict())
    assert {
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.convShortcut.weight",
        "block2.layer.0.conv2.weight",
        "bn1.running_mean",
        "fc.weight",
    } <= keys
    # depth 10: one block per group; the first group's block widens 16 → 32 channels
    assert model.network.block1.layer[0].conv1.weight.shape == (32, 16, 3, 3)
    assert model.network.block2.layer[0].conv1.stride == (2, 2)


def test_third_party_checkpoint_with_dataparallel_prefix_loads(tmp_path):
    net = WideResNet(10, 1, 10)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    path = tmp_path / "wrn.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = overinterp.create_model("wrn28_10", checkpoint=path, preprocessing="none", depth=10, widen_factor=1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x))
    with pytest.raises(ValueError, match="does not fit"):
        overinterp.create_model("wrn28_10", checkpoint=path, preprocessing="none", depth=10, widen_factor=2)


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="6n"):
        WideResNet(depth=27)
