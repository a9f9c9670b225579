"""The model registry: short keys -> builders, filled by the model modules themselves.

A model is added by one new module in `harness/train/models/` whose builder is decorated with
`@register("key")` (the package imports every module in its folder, so nothing else is edited)
and one YAML, `configs/model/key.yaml` with `name: key`. A builder takes
`(num_classes, in_channels, image_size, packs)` and returns an `nn.Module`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make `builder` the model `name` (a second model of that name is an error)."""
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS and MODELS[name] is not builder:
            raise ValueError(f"model {name!r} is registered twice ({MODELS[name].__module__} "
                             f"and {builder.__module__}); choose another name")
        MODELS[name] = builder
        return builder
    return add
