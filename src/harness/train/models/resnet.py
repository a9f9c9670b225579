"""CIFAR ResNets: He et al. 2016 (arXiv 1512.03385, Sec. 4.2) and PreAct ResNet-18 (1603.05027).

`CifarResNet(n)`: depth 6n+2; conv3x3(16) -> BN -> ReLU -> 3 stages of n basic blocks with
16/32/64 channels (stride 2 entering stages 2 and 3) -> global average pool -> linear.
Basic block: y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)).
Shortcut option A (the paper's CIFAR choice, parameter-free): identity, or, when the shape
changes, x subsampled by 2 and zero-padded to the new channel count.
resnet20 (n=3): 0.27M parameters; resnet56 (n=9): 0.85M.

`PreActResNet18`: conv3x3(64) -> 4 stages of 2 pre-activation blocks (64/128/256/512) ->
BN -> ReLU -> global average pool -> linear; block: y = conv(ReLU(BN(conv(ReLU(BN(x)))))) +
shortcut, the shortcut a 1x1 conv on ReLU(BN(x)) when the shape changes. 11.17M parameters.

`packs` = K > 1 builds K independent copies side by side (see `harness.train.models.packing`):
input (N, C, H, W) shared by all, logits (N, K, num_classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.train.models.packing import conv, linear, pad_channels
from harness.train.models.registry import register


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, packs: int = 1,
            shared_input: bool = False) -> nn.Conv2d:
    return conv(in_channels, out_channels, 3, stride, 1, packs, shared_input)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by `stride`, then zero-pad channels up to `out_channels`
    (each packed model's own channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, packs: int = 1) -> None:
        super().__init__()
        self.stride, self.extra, self.packs = stride, out_channels - in_channels, packs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return pad_channels(x, self.extra, self.packs)


class BasicBlock(nn.Module):
    """Post-activation basic block with an option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, packs: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride, packs)
        self.bn1 = nn.BatchNorm2d(packs * out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, packs=packs)
        self.bn2 = nn.BatchNorm2d(packs * out_channels)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ZeroPadShortcut(in_channels, out_channels, stride, packs) if changes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block; 1x1 conv projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, packs: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(packs * in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride, packs)
        self.bn2 = nn.BatchNorm2d(packs * out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, packs=packs)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = conv(in_channels, out_channels, 1, stride, packs=packs) if changes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def _stages(block: type[nn.Module], widths: list[int], blocks: int, in_ch: int,
            packs: int) -> nn.Sequential:
    """Stages of `blocks` blocks each; the first stage keeps the resolution, the others halve it."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            layers.append(block(in_ch, width, stride, packs))
            in_ch = width
    return nn.Sequential(*layers)


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet of depth 6n+2 (option A shortcuts)."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3,
                 packs: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, 16, packs=packs, shared_input=True),
                                  nn.BatchNorm2d(packs * 16), nn.ReLU())
        self.stages = _stages(BasicBlock, [16, 32, 64], n, 16, packs)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  linear(64, num_classes, packs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for CIFAR (3x3 stem, no max pool), final BN-ReLU before pooling."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, packs: int = 1) -> None:
        super().__init__()
        self.stem = conv3x3(in_channels, 64, packs=packs, shared_input=True)
        self.stages = _stages(PreActBlock, [64, 128, 256, 512], 2, 64, packs)
        self.head = nn.Sequential(
            nn.BatchNorm2d(packs * 512),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            linear(512, num_classes, packs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register("resnet20")  # 0.27M params, option A shortcuts
def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             packs: int = 1) -> CifarResNet:
    del image_size  # adaptive pooling: any size works
    return CifarResNet(3, num_classes, in_channels, packs)


@register("resnet56")  # 0.85M
def resnet56(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             packs: int = 1) -> CifarResNet:
    del image_size
    return CifarResNet(9, num_classes, in_channels, packs)


@register("preact_resnet18")  # 11.17M
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                    packs: int = 1) -> PreActResNet18:
    del image_size
    return PreActResNet18(num_classes, in_channels, packs)
