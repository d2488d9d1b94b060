"""The CIFAR ResNets of He et al. (2016), section 4.2: ResNet20/32/44/56.

A 3×3 stem convolution with 16 channels, then three stages of ``n`` basic
blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 halves
the resolution), global average pooling and a linear head: ``6n + 2`` layers.

Shortcuts are the parameter-free "option A" identities: where a block changes
the shape, the input is subsampled by 2 in space and zero-padded in channels
(equally on both sides). This is the layout of the widely used public
pretrained CIFAR ResNets, whose ``state_dict`` keys (``conv1.weight``,
``bn1.*``, ``layer1.0.conv1.weight``, …, ``linear.weight``, ``linear.bias``)
these modules reproduce exactly, so such weights load with ``strict=True``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from overinterp.models.registry import register_model

__all__ = ["CifarResNet", "BasicBlock", "PadShortcut", "resnet20", "resnet32", "resnet44", "resnet56"]


class PadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` in space, zero-pad channels.

    The extra ``out_channels - in_channels`` channels are split between both
    sides (the odd one, if any, goes after).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"cannot pad {in_channels} channels down to {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        s = self.stride
        if s > 1:
            x = x[:, :, ::s, ::s]
        # F.pad pads the last dimensions first: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the shortcut, then relu."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with ``blocks_per_stage`` basic blocks in each of 3 stages.

    ``(N, in_channels, H, W)`` → logits ``(N, num_classes)``; designed for
    32×32 inputs (8×8 maps before pooling) but works on any size ≥ 4×4.
    """

    widths = (16, 32, 64)

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.blocks_per_stage = blocks_per_stage
        self.depth = 6 * blocks_per_stage + 2
        w1, w2, w3 = self.widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(w1, w1, blocks_per_stage, stride=1)
        self.layer2 = self._stage(w1, w2, blocks_per_stage, stride=2)
        self.layer3 = self._stage(w2, w3, blocks_per_stage, stride=2)
        self.linear = nn.Linear(w3, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean(dim=(2, 3))  # global average pooling
        return self.linear(out)


@register_model("resnet20", "CIFAR ResNet20 (He et al. 2016, 0.27M parameters)")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(3, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet32", "CIFAR ResNet32 (He et al. 2016, 0.46M parameters)")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(5, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet44", "CIFAR ResNet44 (He et al. 2016, 0.66M parameters)")
def resnet44(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(7, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet56", "CIFAR ResNet56 (He et al. 2016, 0.85M parameters)")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(9, num_classes=num_classes, in_channels=in_channels)
