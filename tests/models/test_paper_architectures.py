"""The paper's other CIFAR-10 architectures: pre-activation ResNet18 and VGG16-BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import overinterp
from overinterp.models import create_model
from overinterp.models.archs.preact_resnet import PreActBlock
from overinterp.models.registry import build_network


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_and_exported():
    assert {"resnet18", "vgg16_bn", "resnet20"} <= set(overinterp.list_models())
    assert overinterp.create_model is create_model


def test_vgg16_bn_exact_parameter_count_and_layout():
    net = build_network("vgg16_bn", num_classes=10)
    assert n_params(net) == 14_728_266
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.features) == 5
    assert isinstance(net.classifier, nn.Linear) and net.classifier.in_features == 512
    keys = set(net.state_dict())
    assert {"features.0.weight", "features.0.bias", "features.1.running_mean", "classifier.weight"} <= keys
    # one linear head: K classes add 513 parameters each
    assert n_params(build_network("vgg16_bn", num_classes=100)) == 14_728_266 + 90 * 513


def test_resnet18_exact_parameter_count_and_preactivation_layout():
    net = build_network("resnet18", num_classes=10)
    assert n_params(net) == 11_172_170  # with the final BN-ReLU of pre-activation networks
    plain = build_network("resnet18", num_classes=10, final_activation=False)
    assert n_params(plain) == 11_171_146  # the public "PreActResNet18" layout
    assert round(n_params(net) / 1e6, 2) == 11.17
    blocks = [m for m in net.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8
    # projection shortcuts (1×1 conv, no BN) exactly where the shape changes
    assert [b.shortcut is not None for b in blocks] == [False, False, True, False, True, False, True, False]
    assert "layer2.0.shortcut.0.weight" in net.state_dict() and "bn.weight" in net.state_dict()
    assert "bn.weight" not in plain.state_dict()


@pytest.mark.parametrize("name", ["resnet18", "vgg16_bn"])
def test_forward_and_eval_mode(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, preprocessing="cifar10")
    assert all(not m.training for m in model.modules())
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_preactivation_unit_order():
    """BN and ReLU come before each convolution; the shortcut is taken before them
    only when it is the identity."""
    block = PreActBlock(4, 4).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        manual = block.conv2(torch.relu(block.bn2(block.conv1(torch.relu(block.bn1(x)))))) + x
        assert torch.allclose(block(x), manual)
    down = PreActBlock(4, 8, stride=2).eval()
    with torch.no_grad():
        pre = torch.relu(down.bn1(x))
        manual = down.conv2(torch.relu(down.bn2(down.conv1(pre)))) + down.shortcut(pre)
        assert torch.allclose(down(x), manual)


def test_wrong_architecture_checkpoint_names_keys(tmp_path):
    sd = build_network("vgg16_bn", num_classes=10).state_dict()
    torch.save({"state_dict": sd}, tmp_path / "third.pt")
    with pytest.raises(ValueError, match="features.0.weight"):
        create_model("resnet18", checkpoint=tmp_path / "third.pt", preprocessing="cifar10")
