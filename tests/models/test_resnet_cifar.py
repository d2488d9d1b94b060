"""CIFAR ResNets (He et al. 2016): sizes, layout of the state dict, shortcuts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overinterp.models import create_model, list_models
from overinterp.models.archs.resnet_cifar import BasicBlock, CifarResNet, PadShortcut
from overinterp.models.registry import build_network

EXPECTED_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}
BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_registered_with_exact_parameter_count(name):
    assert name in list_models()
    net = build_network(name, num_classes=10)
    assert n_params(net) == EXPECTED_PARAMS[name]
    assert net.depth == 6 * BLOCKS[name] + 2
    for stage in (net.layer1, net.layer2, net.layer3):
        assert isinstance(stage, nn.Sequential) and len(stage) == BLOCKS[name]


def test_parameter_count_follows_num_classes():
    # the head is 64 → K with bias
    assert n_params(build_network("resnet20", num_classes=100)) == EXPECTED_PARAMS["resnet20"] + 90 * 65


def test_output_shape_and_eval_mode():
    model = create_model("resnet20")
    assert not model.training and all(not m.training for m in model.modules())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    net = build_network("resnet32", num_classes=7).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def public_layout_keys(blocks: int) -> list[str]:
    """The state_dict keys of the public pretrained CIFAR ResNets (without num_batches_tracked)."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for stage in (1, 2, 3):
        for b in range(blocks):
            p = f"layer{stage}.{b}."
            keys += [p + "conv1.weight"] + [p + f"bn1.{s}" for s in bn]
            keys += [p + "conv2.weight"] + [p + f"bn2.{s}" for s in bn]
    return keys + ["linear.weight", "linear.bias"]


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_state_dict_keys_match_public_layout(name):
    state = build_network(name, num_classes=10).state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    assert keys == public_layout_keys(BLOCKS[name])
    if name == "resnet20":
        assert len(keys) == 97  # as in the public resnet20-cifar10.th
    assert tuple(state["conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["layer2.0.conv1.weight"].shape) == (32, 16, 3, 3)
    assert tuple(state["layer3.0.conv1.weight"].shape) == (64, 32, 3, 3)
    assert tuple(state["linear.weight"].shape) == (10, 64)
    assert not any("shortcut" in k for k in state)


def test_convs_have_no_bias_and_blocks_have_named_parts():
    net = build_network("resnet20", num_classes=10)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None and m.kernel_size == (3, 3)
    block = net.layer2[0]
    assert isinstance(block, BasicBlock)
    for part in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
        assert hasattr(block, part)
    assert isinstance(block.shortcut, PadShortcut) and n_params(block.shortcut) == 0
    assert isinstance(net.layer1[0].shortcut, nn.Identity)
    assert isinstance(net.layer2[1].shortcut, nn.Identity)


def test_option_a_shortcut_subsamples_and_pads_equally():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0


def test_kaiming_normal_init_scale():
    torch.manual_seed(0)
    net = CifarResNet(3)
    w = net.layer3[1].conv1.weight  # fan_in = 64 * 9
    expected_std = (2.0 / (64 * 9)) ** 0.5
    assert abs(w.std().item() - expected_std) / expected_std < 0.05


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="blocks_per_stage"):
        CifarResNet(0)
    with pytest.raises(ValueError, match="num_classes"):
        CifarResNet(3, num_classes=0)
