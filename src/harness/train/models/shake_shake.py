"""Shake-Shake ResNet-26 (Gastaldi 2017, arXiv 1705.07485), "Shake-Shake-Image" variant.

conv3x3(16) -> BN -> 3 stages of 4 blocks (widths k, 2k, 4k; stride 2 entering stages 2, 3)
-> ReLU -> global average pool -> linear.  k = 64 ("2x64d", 11.6M params) or 96 (26.2M).

Block: y = shortcut(x) + alpha * b1(x) + (1 - alpha) * b2(x), each branch
b(x) = BN(conv3x3(ReLU(BN(conv3x3(ReLU(x), stride))))).
Training: alpha ~ U(0,1) per image in the forward pass; the backward pass uses an independent
beta ~ U(0,1) per image: dL/db1 = beta * g, dL/db2 = (1 - beta) * g (`ShakeShake`).
Eval: alpha = beta = 0.5. Both coefficients are drawn in the forward pass from the global torch
RNG on the input's device, so `torch.manual_seed` makes training reproducible.
Shortcut when the shape changes: ReLU, then two paths (strided 1x1 average pool + 1x1 conv to
half the channels; the second path shifted by one pixel first), concatenated, then BN.

`packs` = K > 1 builds K independent copies side by side (see `harness.train.models.packing`):
alpha and beta are drawn per image per model, the shortcut concat is per model; input
(N, C, H, W) shared by all, logits (N, K, num_classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.train.models.packing import cat_channels, conv, linear
from harness.train.models.registry import register


class ShakeShake(torch.autograd.Function):
    """out = alpha * x1 + (1 - alpha) * x2; backward: (beta * g, (1 - beta) * g).

    forward and setup_context apart, with a generated vmap rule, so torch.func transforms
    (vmap: the bench's ensemble baseline) take it as they take built-in ops."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, alpha, beta):  # noqa: ANN001, ANN205 (autograd signature)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN205
        ctx.save_for_backward(inputs[3])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake(x1: torch.Tensor, x2: torch.Tensor, training: bool, packs: int = 1) -> torch.Tensor:
    """Mix two branches: random alpha (forward) and beta (backward) per image (and per packed
    model: channels k*C..(k+1)*C - 1 share one value) when training."""
    if not training:
        return 0.5 * (x1 + x2)
    shape = (x1.shape[0], packs) + (1,) * (x1.dim() - 2)
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    beta = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    if packs > 1:  # one value per model, repeated over that model's channels
        channels = x1.shape[1] // packs
        alpha = alpha.repeat_interleave(channels, dim=1)
        beta = beta.repeat_interleave(channels, dim=1)
    return ShakeShake.apply(x1, x2, alpha, beta)


def _branch(in_channels: int, out_channels: int, stride: int, packs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        conv(in_channels, out_channels, 3, stride, 1, packs),
        nn.BatchNorm2d(packs * out_channels),
        nn.ReLU(inplace=True),
        conv(out_channels, out_channels, 3, 1, 1, packs),
        nn.BatchNorm2d(packs * out_channels),
    )


class TwoPathShortcut(nn.Module):
    """ReLU; [avgpool1x1(stride) -> conv1x1(C/2)] ++ [shift 1px -> avgpool -> conv1x1(C/2)]; BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, packs: int = 1) -> None:
        super().__init__()
        self.stride, self.packs = stride, packs
        self.conv1 = conv(in_channels, out_channels // 2, 1, packs=packs)
        self.conv2 = conv(in_channels, out_channels - out_channels // 2, 1, packs=packs)
        self.bn = nn.BatchNorm2d(packs * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        path1 = F.avg_pool2d(x, 1, self.stride)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # the other pixel grid of the stride
        path2 = F.avg_pool2d(shifted, 1, self.stride)
        return self.bn(cat_channels(self.conv1(path1), self.conv2(path2), self.packs))


class ShakeBlock(nn.Module):
    """Two residual branches mixed by `shake`, plus an identity or two-path shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, packs: int = 1) -> None:
        super().__init__()
        self.packs = packs
        self.branch1 = _branch(in_channels, out_channels, stride, packs)
        self.branch2 = _branch(in_channels, out_channels, stride, packs)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = (
            TwoPathShortcut(in_channels, out_channels, stride, packs) if changes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = shake(self.branch1(x), self.branch2(x), self.training, self.packs)
        return self.shortcut(x) + mixed


class ShakeShakeResNet(nn.Module):
    """Shake-Shake ResNet of depth 6 * blocks_per_stage + 2 and base width `width`."""

    def __init__(
        self, width: int, blocks_per_stage: int = 4, num_classes: int = 10, in_channels: int = 3,
        packs: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv(in_channels, 16, 3, 1, 1, packs, shared_input=True), nn.BatchNorm2d(packs * 16)
        )
        layers: list[nn.Module] = []
        in_ch = 16
        for i, out_ch in enumerate([width, 2 * width, 4 * width]):
            for j in range(blocks_per_stage):
                layers.append(ShakeBlock(in_ch, out_ch, 2 if i > 0 and j == 0 else 1, packs))
                in_ch = out_ch
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear(in_ch, num_classes, packs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register("shake_shake_26_2x64d")  # 11.6M, the paper's Figures 1-2 network
def shake_shake_26_2x64d(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, packs: int = 1
) -> ShakeShakeResNet:
    del image_size  # adaptive pooling: any size works
    return ShakeShakeResNet(64, 4, num_classes, in_channels, packs)


@register("shake_shake_26_2x96d")  # 26.2M
def shake_shake_26_2x96d(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, packs: int = 1
) -> ShakeShakeResNet:
    del image_size
    return ShakeShakeResNet(96, 4, num_classes, in_channels, packs)
