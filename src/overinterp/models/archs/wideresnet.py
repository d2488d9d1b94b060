"""Wide residual networks (Zagoruyko & Komodakis 2016) for 32×32 images: WRN-28-10, WRN-34-10.

The architectures of most adversarially robust CIFAR-10 models (paper §4.5):
a 3×3 stem with 16 channels, three groups of ``n = (depth − 4) / 6``
pre-activation basic blocks with ``16k``, ``32k`` and ``64k`` channels (``k`` =
widen factor; the second and third groups halve the resolution), then
BN-ReLU, global average pooling and a linear head. A block whose shape changes
has a 1×1 convolution shortcut (``convShortcut``) from the pre-activated input.

State-dict keys follow the layout common to robustness codebases
(``conv1``, ``block1.layer.0.bn1``, ``…conv1``, ``…bn2``, ``…conv2``,
``…convShortcut``, ``bn1``, ``fc``), so their plain WRN checkpoints load
(``module.`` prefixes are stripped); extra unused modules some of them carry
must be removed from the state dict first.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from overinterp.models.registry import register_model

__all__ = ["WideResNet", "WideBasicBlock", "wrn28_10", "wrn34_10"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3×3(stride)-BN-ReLU-(dropout)-conv3×3, plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.equal = in_channels == out_channels and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv1(a)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(a))


class _Group(nn.Module):
    def __init__(self, n: int, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: ``(N, 3, H, W)`` normalised images → ``(N, num_classes)`` logits."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 34, …), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be ≥ 1, got {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = _Group(n, widths[0], widths[1], 1, dropout)
        self.block2 = _Group(n, widths[1], widths[2], 2, dropout)
        self.block3 = _Group(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


#: dropout is a probability; depth 6n+4
_BOUNDS = {"depth": (10, 1000), "widen_factor": (1, 1024), "dropout": (0.0, 1.0)}


@register_model(
    "wrn28_10", "WideResNet-28-10 (36.5M parameters), the usual robust CIFAR-10 architecture", bounds=_BOUNDS
)
def wrn28_10(num_classes: int = 10, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0) -> WideResNet:
    """WideResNet-28-10; ``depth``/``widen_factor`` may be overridden (e.g. small ones for tests)."""
    return WideResNet(depth, widen_factor, num_classes, dropout)


@register_model("wrn34_10", "WideResNet-34-10 (46.2M parameters), TRADES/MART-style robust models", bounds=_BOUNDS)
def wrn34_10(num_classes: int = 10, depth: int = 34, widen_factor: int = 10, dropout: float = 0.0) -> WideResNet:
    """WideResNet-34-10."""
    return WideResNet(depth, widen_factor, num_classes, dropout)
