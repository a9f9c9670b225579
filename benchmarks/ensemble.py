"""What a PyTorch user has without this harness, measured beside it by `harness bench`.

VmapEnsemble: K models trained at once the way PyTorch's model-ensembling recipe does it
(https://pytorch.org/tutorials/intermediate/ensembling.html): `torch.func.stack_module_state`
stacks the K models' parameters and buffers along a new dim 0, `torch.vmap` over
`torch.func.functional_call` of one (meta-device) copy gives the K losses on one shared batch,
their sum is backpropagated (model k's slice of each stacked gradient is the gradient of its
own loss), and one torch.optim.SGD steps the stacked parameters (fused on CUDA, foreach on a
CPU). BatchNorm's running statistics are stacked buffers, updated in place per model. One
optimizer means one lr and one lambda for all K: the recipe has no per-model hyperparameters.
A model that cannot be vmapped (an autograd.Function without functorch support) gets a
failed row.

conv_microbench: every grouped conv of the packed model (groups = K, K models side by side) at
the shape the pack trains it, timed forward + backward against the dense conv of the same
FLOPs (one model's conv on K x B images): grouped / dense time says how much of a pack's
shortfall the grouped kernels account for.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state


class VmapEnsemble:
    """K copies of one architecture as stacked parameters; `step(x, y)` trains all K on (x, y)
    and returns the K losses (detached)."""

    def __init__(self, models: Sequence[nn.Module], lr: float, momentum: float,
                 weight_decay: float, autocast: bool = False) -> None:
        self.params, self.buffers = stack_module_state(list(models))
        base = copy.deepcopy(models[0]).to("meta")
        device = next(iter(self.params.values())).device

        def loss(params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = functional_call(base, (params, buffers), (x,))
            return F.cross_entropy(logits.float(), y)

        self.losses = torch.vmap(loss, in_dims=(0, 0, None, None), randomness="different")
        fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.SGD(list(self.params.values()), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay, **fast)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.losses(self.params, self.buffers, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach()

    def model(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's parameters and buffers by name (views into the stacks)."""
        return {name: t[k] for name, t in (self.params | self.buffers).items()}


def packed_conv_shapes(model: nn.Module, batch: int, image: int = 32) -> list[dict]:
    """The distinct grouped convs (groups > 1) of a packed model as it trains them: one dict
    per (groups, channels, stride, input size), with how many convs share it."""
    seen: dict[tuple, dict] = {}

    def hook(layer: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        if layer.groups == 1:
            return
        key = (layer.groups, layer.in_channels, layer.out_channels, layer.kernel_size[0],
               layer.stride[0], layer.padding[0], inputs[0].shape[-1])
        seen.setdefault(key, dict(zip(("K", "in_channels", "out_channels", "kernel", "stride",
                                       "padding", "size"), key, strict=True), count=0))
        seen[key]["count"] += 1

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image, image))
    finally:
        for h in hooks:
            h.remove()
    return [dict(shape, batch=batch) for shape in seen.values()]


def _conv_seconds(x: torch.Tensor, w: torch.Tensor, shape: dict, groups: int,
                  reps: int) -> float:
    def once() -> None:
        out = F.conv2d(x, w, stride=shape["stride"], padding=shape["padding"], groups=groups)
        out.backward(torch.ones_like(out))

    once()  # warm-up (cudnn.benchmark picks its algorithm here)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    tic = time.perf_counter()
    for _ in range(reps):
        once()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - tic) / reps


def conv_microbench(shape: dict, device: torch.device, reps: int) -> dict:
    """Forward + backward (input and weight gradients) seconds of one packed conv (groups = K
    over K x C channels, batch B) and of the dense conv of equal FLOPs (C channels, batch
    K x B); bf16 channels_last on CUDA, fp32 on a CPU."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    fmt = torch.channels_last if cuda else torch.contiguous_format
    k, c_in, c_out = shape["K"], shape["in_channels"] // shape["K"], shape["out_channels"] // \
        shape["K"]
    b, size, kernel = shape["batch"], shape["size"], shape["kernel"]

    def tensors(n: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, groups * c_in, size, size, device=device, dtype=dtype)
        w = torch.randn(groups * c_out, c_in, kernel, kernel, device=device, dtype=dtype)
        return (x.contiguous(memory_format=fmt).requires_grad_(),
                w.contiguous(memory_format=fmt).requires_grad_())

    grouped = _conv_seconds(*tensors(b, k), shape, k, reps)
    dense = _conv_seconds(*tensors(k * b, 1), shape, 1, reps)
    out = (size + 2 * shape["padding"] - kernel) // shape["stride"] + 1
    flops = 3 * 2 * k * b * c_out * out * out * c_in * kernel * kernel  # fwd + 2 backward
    return dict(shape, dtype=str(dtype).removeprefix("torch."), grouped_s=grouped,
                dense_s=dense, grouped_over_dense=grouped / dense,
                grouped_tflops=flops / grouped / 1e12, dense_tflops=flops / dense / 1e12)
