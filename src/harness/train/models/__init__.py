"""Model registry: short keys -> CIFAR-style networks, built with the conventional init.

`build_model(name, num_classes, in_channels, image_size)` looks `name` up in `MODELS` (an unknown
key raises ValueError listing the valid ones; every module of this folder registers its own
models with `@register`, harness.train.models.registry), builds the network and initialises it:
conv weights kaiming-normal (fan_out, ReLU gain), BatchNorm weight 1 and bias 0, linear bias 0
(linear weight keeps torch's default). Every model ends in adaptive average pooling, so any
`image_size` >= MIN_IMAGE_SIZE = 8 works (28 for Fashion-MNIST, 32 for CIFAR). That bound and
MIN_CHANNELS live in harness.spec.dataset, whose `images` checks a dataset's files against them
before any cell starts.

`packs` = K > 1 builds K independent copies of the network as one wide module (grouped convs,
BatchNorm over K*C channels, a batched linear; `harness.train.models.packing`): input (N, C, H, W)
shared by all K, logits (N, K, num_classes); p.view(K, -1)[k] is model k's parameter. Each
model is initialised as a solo model would be (K independent draws). packs=1 is the solo model.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from harness.spec.dataset import MIN_CHANNELS, MIN_IMAGE_SIZE
from harness.train.models.registry import MODELS, register

for _module in pkgutil.iter_modules(__path__):  # each model module registers its own models
    importlib.import_module(f"{__name__}.{_module.name}")


def init_weights(model: nn.Module, packs: int = 1) -> nn.Module:
    """Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0, linear bias 0; in place.

    A packed conv is initialised per model (its slice p.view(K, ...)[k]), so fan_out is that of
    the solo conv, not K times it."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight.view(packs, -1, *module.weight.shape[1:])
            for solo in weight.unbind(0):
                nn.init.kaiming_normal_(solo, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def _check_positive(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {minimum}")


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, packs: int = 1
) -> nn.Module:
    """Build and initialise the registry model `name` for (in_channels, image_size) inputs;
    `packs` = K models side by side (logits (N, K, num_classes) when K > 1)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    _check_positive("num_classes", num_classes, 1)
    _check_positive("in_channels", in_channels, MIN_CHANNELS)
    _check_positive("image_size", image_size, MIN_IMAGE_SIZE)
    _check_positive("packs", packs, 1)
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels,
                         image_size=image_size, packs=packs)
    return init_weights(model, packs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (requires_grad) in `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "build_model", "count_parameters", "init_weights", "register"]
