"""Pre-activation ("v2") ResNet18 for 32×32 inputs (He et al., *Identity Mappings
in Deep Residual Networks*, 2016).

Each residual unit is BN → ReLU → conv3×3 → BN → ReLU → conv3×3, added to the
shortcut. The shortcut is the identity where the shape is kept, else a 1×1
convolution (stride 2, no bias) applied to the *pre-activated* input, as in the
paper's full pre-activation design. For CIFAR the stem is one 3×3 convolution
with 64 channels (no max-pool); four stages of two units with 64/128/256/512
channels (stages 2–4 halve the resolution, 32 → 4), global average pooling and a
linear head.

``final_activation=True`` (default) applies the extra BN → ReLU after the last
unit that the paper prescribes for pre-activation networks: 11,172,170
parameters with 10 classes. ``final_activation=False`` omits it (11,171,146
parameters), the layout of the widely used public CIFAR "PreActResNet18"
implementations, so that their state dicts (``conv1.weight``,
``layer1.0.bn1.*``, ``layer2.0.shortcut.0.weight``, …, ``linear.*``) load.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from overinterp.models.registry import register_model

__all__ = ["PreActBlock", "PreActResNet", "resnet18"]


class PreActBlock(nn.Module):
    """Full pre-activation basic unit."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            # Sequential so that the weight is ``shortcut.0.weight`` (the public layout).
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet with ``blocks`` units per stage (``(2, 2, 2, 2)``: ResNet18).

    ``(N, in_channels, H, W)`` → logits ``(N, num_classes)``; designed for 32×32
    inputs (4×4 maps before pooling), works on any size ≥ 8×8.
    """

    widths = (64, 128, 256, 512)

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        final_activation: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(blocks) != len(self.widths) or min(blocks) < 1:
            raise ValueError(f"blocks must be {len(self.widths)} positive counts, got {blocks}")
        self.conv1 = nn.Conv2d(in_channels, self.widths[0], 3, stride=1, padding=1, bias=False)
        channels = self.widths[0]
        stages = []
        for i, (width, count) in enumerate(zip(self.widths, blocks)):
            units = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                units.append(PreActBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final_activation = final_activation
        self.bn = nn.BatchNorm2d(channels) if final_activation else None
        self.linear = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        out = out.mean(dim=(2, 3))  # global average pooling (4×4 for 32×32 inputs)
        return self.linear(out)


@register_model("resnet18", "pre-activation ResNet18 for 32×32 inputs (He et al. 2016 v2, 11.17M parameters)")
def resnet18(num_classes: int = 10, in_channels: int = 3, final_activation: bool = True) -> nn.Module:
    return PreActResNet(
        (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, final_activation=final_activation
    )
