"""decay.exclude by kind: "norm" and "bias" take out exactly the normalization layers'
parameters and the biases of every registered model, solo and packed, whatever their names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.train.models import MODELS, build_model
from harness.train.optim import param_groups

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
         nn.InstanceNorm2d)


def by_walk(model: nn.Module, kind: str) -> set[int]:
    """An independent walk of the model's modules: ids of the parameters of that kind."""
    found = set()
    for module in model.modules():
        if kind == "norm" and isinstance(module, NORMS):
            found |= {id(p) for p in module.parameters(recurse=False)}
        bias = getattr(module, "bias", None)
        if kind == "bias" and isinstance(bias, nn.Parameter):
            found.add(id(bias))
    return found


@pytest.mark.parametrize("packs", [1, 2])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_kinds_exclude_exactly_the_norm_parameters_and_the_biases(name, packs):
    with torch.device("meta"):  # names and module types only: no memory, no init time
        model = build_model(name, packs=packs)
    every = {id(p) for p in model.parameters()}
    for kinds, expected in ((("norm",), by_walk(model, "norm")),
                            (("bias",), by_walk(model, "bias")),
                            (("norm", "bias"), by_walk(model, "norm") | by_walk(model, "bias"))):
        assert expected and expected != every, (name, kinds)
        groups = param_groups(model, 0.1, exclude=kinds)
        assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
        assert {id(p) for p in groups[1]["params"]} == expected, (name, kinds)
        assert {id(p) for p in groups[0]["params"]} == every - expected, (name, kinds)
    norm_names = {n for n, p in model.named_parameters() if id(p) in by_walk(model, "norm")}
    if name.startswith(("resnet", "shake")):  # the stem's BatchNorm, which "*bn*" misses
        assert {"stem.1.weight", "stem.1.bias"} <= norm_names
