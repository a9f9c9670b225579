"""Building blocks that widen a network K times so that K models train as one ("packs").

A packed network holds K independent copies of one architecture side by side:

- channels are model-major: channel c of model k is channel k*C + c of the packed tensor;
- every conv is grouped (groups = K) so model k reads only its own channels; the first conv has
  K*out output channels over the one shared input image (groups = 1), which is the same as
  repeating the input K times;
- BatchNorm2d over K*C channels keeps per-model statistics for free;
- channel-mixing ops (option-A padding, shake-shake's shortcut concat, the final linear) go
  through `per_model`, a view of (N, K*C, H, W) as (N, K, C, H, W).

Parameter layout: for every parameter p, p.view(K, -1)[k] is model k's parameter, flattened
in the order of the solo (K = 1) model's parameter of the same name, because every packed
parameter is the K solo parameters concatenated along dim 0. With K = 1 every helper returns
exactly the solo module (same class, shapes and names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
         packs: int = 1, shared_input: bool = False) -> nn.Conv2d:
    """K bias-free convs in one; `shared_input`: the first conv, reading the shared image."""
    if shared_input:
        return nn.Conv2d(in_channels, packs * out_channels, kernel, stride=stride,
                         padding=padding, bias=False)
    return nn.Conv2d(packs * in_channels, packs * out_channels, kernel, stride=stride,
                     padding=padding, bias=False, groups=packs)


def per_model(x: torch.Tensor, packs: int) -> torch.Tensor:
    """View (N, K*C, ...) as (N, K, C, ...)."""
    return x.view(x.shape[0], packs, x.shape[1] // packs, *x.shape[2:])


def merge_models(x: torch.Tensor) -> torch.Tensor:
    """(N, K, C, ...) -> (N, K*C, ...), the inverse of `per_model`."""
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def _nhwc(x: torch.Tensor) -> bool:
    """x is a 4-D tensor stored channels_last: channels innermost (stride 1), more than one."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1


def _per_model_nhwc(x: torch.Tensor, packs: int) -> torch.Tensor:
    """A channels_last (N, K*C, H, W) as its memory: an (N, H, W, K, C) view."""
    return x.permute(0, 2, 3, 1).unflatten(3, (packs, -1))


def _from_nhwc(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, K, C) contiguous -> (N, K*C, H, W) stored channels_last (a view)."""
    return x.flatten(3).permute(0, 3, 1, 2)


def pad_channels(x: torch.Tensor, extra: int, packs: int) -> torch.Tensor:
    """Zero-pad each model's channels at the end: (N, K*C, H, W) -> (N, K*(C+extra), H, W).
    A channels_last x is padded on its NHWC view, so the result stays channels_last."""
    if _nhwc(x):
        return _from_nhwc(F.pad(_per_model_nhwc(x, packs), (0, extra)))
    if packs == 1:
        return F.pad(x, (0, 0, 0, 0, 0, extra))
    return merge_models(F.pad(per_model(x, packs), (0, 0, 0, 0, 0, extra)))


def cat_channels(a: torch.Tensor, b: torch.Tensor, packs: int) -> torch.Tensor:
    """Concatenate each model's channels: model k gets [a_k, b_k]; channels_last inputs are
    concatenated on their NHWC views and give a channels_last result."""
    if _nhwc(a) and _nhwc(b):
        return _from_nhwc(torch.cat([_per_model_nhwc(a, packs), _per_model_nhwc(b, packs)], 4))
    if packs == 1:
        return torch.cat([a, b], dim=1)
    return merge_models(torch.cat([per_model(a, packs), per_model(b, packs)], dim=2))


class PackedLinear(nn.Linear):
    """K linear layers in one: weight (K*out, in), bias (K*out,); (N, K*in) -> (N, K, out).

    logits[n, k] = W_k @ x[n, k] + b_k, one batched matmul (einsum) over the K models.
    Initialised as nn.Linear(in, out) per model (torch's fan_in is `in` for the packed weight).
    """

    def __init__(self, in_features: int, out_features: int, packs: int) -> None:
        super().__init__(in_features, packs * out_features)
        self.packs, self.out_per_model = packs, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, out = self.packs, self.out_per_model
        w = self.weight.view(k, out, self.in_features)
        y = torch.einsum("nki,koi->nko", x.view(x.shape[0], k, self.in_features), w)
        return y + self.bias.view(k, out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_per_model}, " \
               f"packs={self.packs}"


def linear(in_features: int, out_features: int, packs: int = 1) -> nn.Linear:
    """nn.Linear for one model; a `PackedLinear` for K > 1."""
    if packs == 1:
        return nn.Linear(in_features, out_features)
    return PackedLinear(in_features, out_features, packs)
