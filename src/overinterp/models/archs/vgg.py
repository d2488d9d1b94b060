"""VGG16 with batch normalisation for 32×32 inputs (Simonyan & Zisserman 2015,
configuration "D"), as commonly adapted to CIFAR.

Thirteen 3×3 convolutions (with bias), each followed by BatchNorm and ReLU, in
five blocks of 64, 128, 256, 512, 512 channels separated by 2×2 max-pools, so a
32×32 input ends as a 1×1×512 map; one linear layer 512 → ``num_classes``
replaces the three fully connected layers of the ImageNet model. With 10
classes: 14,728,266 parameters.

The state dict is ``features.<i>.*`` (conv, BN, ReLU, pool in sequence) and
``classifier.*``, the layout of the public CIFAR VGG implementations with a
single linear classifier.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from overinterp.models.registry import register_model

__all__ = ["VGG", "VGG16_LAYOUT", "VGG_SMALL_LAYOUT", "vgg16_bn", "vgg_small"]

#: Output channels of each 3×3 convolution; "M" is a 2×2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)

#: A narrow VGG-style layout (7 convolutions, 16–128 channels, about a quarter of
#: ResNet20's multiply-adds): a second architecture family cheap enough for exact
#: backward-selection anchors on CPU.
VGG_SMALL_LAYOUT: tuple[int | str, ...] = (16, 16, "M", 32, 32, "M", 64, 64, "M", 128, "M")


class VGG(nn.Module):
    """VGG feature extractor + one linear classifier.

    ``(N, in_channels, 32, 32)`` → logits ``(N, num_classes)``. Other input sizes
    work when they are multiples of 32 (the map is average-pooled to 1×1).
    """

    def __init__(
        self,
        layout: tuple[int | str, ...] = VGG16_LAYOUT,
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            width = int(item)
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He initialisation over the fan-out (k·k·out), zero bias.
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        if out.shape[-2:] != (1, 1):
            out = out.mean(dim=(2, 3))
        return self.classifier(out.flatten(1))


@register_model("vgg16_bn", "VGG16 with batch norm and one linear classifier for CIFAR (14.73M parameters)")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return VGG(VGG16_LAYOUT, num_classes=num_classes, in_channels=in_channels, batch_norm=True)


@register_model("vgg_small", "narrow VGG-style net with batch norm (7 convs, 16-128 channels, 0.15M parameters)")
def vgg_small(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return VGG(VGG_SMALL_LAYOUT, num_classes=num_classes, in_channels=in_channels, batch_norm=True)
