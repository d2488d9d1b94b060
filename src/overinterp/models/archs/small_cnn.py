"""A small CNN for tests and the demo: fast on CPU, any image size and channel count."""

from __future__ import annotations

from torch import Tensor, nn

from overinterp.models.registry import register_model

__all__ = ["SmallCNN", "small_cnn"]


class SmallCNN(nn.Module):
    """conv-bn-relu ×3 (two 2×2 max-pools) → global average pool → linear.

    ``(N, in_channels, H, W)`` → logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pool(self.features(x)).flatten(1))


@register_model("smallcnn", "small 3-layer CNN (tests, demo)", bounds={"in_channels": (1, 4096), "width": (1, 1 << 16)})
def small_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width)
