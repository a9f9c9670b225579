"""A small, fast conv net for CPU demos and tests (~94k parameters at 3x32x32, 10 classes).

conv3x3(32) -> BN -> ReLU -> maxpool2 -> conv3x3(64) -> BN -> ReLU -> maxpool2
-> conv3x3(128) -> BN -> ReLU -> global average pool -> linear.

BatchNorm follows every conv (convs carry no bias), so, as in the ResNets, the conv weights are
scale-invariant and weight decay acts through the effective learning rate.
`packs` = K > 1: K independent copies side by side (`harness.train.models.packing`), logits
(N, K, C).
"""

from __future__ import annotations

from torch import nn

from harness.train.models.packing import conv, linear
from harness.train.models.registry import register


def _conv_bn_relu(in_channels: int, out_channels: int, packs: int,
                  shared_input: bool = False) -> list[nn.Module]:
    return [
        conv(in_channels, out_channels, 3, 1, 1, packs, shared_input),
        nn.BatchNorm2d(packs * out_channels),
        nn.ReLU(inplace=True),
    ]


@register("small")
class SmallConvNet(nn.Sequential):
    """Three conv-BN-ReLU stages (32/64/128 channels), two 2x2 max pools, global pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 packs: int = 1) -> None:
        del image_size  # any size >= 4 works: the head pools adaptively
        super().__init__(
            *_conv_bn_relu(in_channels, 32, packs, shared_input=True),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64, packs),
            nn.MaxPool2d(2),
            *_conv_bn_relu(64, 128, packs),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            linear(128, num_classes, packs),
        )
