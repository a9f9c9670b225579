"""harness.train.models: shapes, backward, parameter counts, shake-shake semantics, speed."""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from harness.train.models import MODELS, build_model, count_parameters
from harness.train.models.shake_shake import ShakeBlock, ShakeShake
from harness.train.packed import build_packed_model, packed_logits

# Published parameter counts at 3x32x32 input, 10 classes (He 2016; Gastaldi 2017; Loshchilov
# & Hutter 2019 for 2x64d's 11.6M; PreAct-18 as in the common CIFAR implementations).
PUBLISHED_PARAMS = {
    "resnet20": 0.27e6,
    "resnet56": 0.85e6,
    "preact_resnet18": 11.17e6,
    "shake_shake_26_2x64d": 11.6e6,
    "shake_shake_26_2x96d": 26.2e6,
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("in_channels,image_size", [(3, 32), (1, 28)])
def test_forward_shape_and_backward(name: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=in_channels, image_size=image_size)
    x = torch.randn(2, in_channels, image_size, image_size)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 7])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_published(name: str) -> None:
    n = count_parameters(build_model(name))
    published = PUBLISHED_PARAMS[name]
    assert abs(n - published) / published < 0.02, f"{name}: {n} vs {published:.0f}"


def test_small_model_size_and_num_classes() -> None:
    model = build_model("small", num_classes=7, in_channels=1, image_size=28)
    assert 80_000 < count_parameters(model) < 120_000
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 7)


def test_conventional_init() -> None:
    model = build_model("resnet20")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)
    conv = model.stages[-1].conv2  # 64 -> 64, 3x3: kaiming fan_out std = sqrt(2 / (9 * 64))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.05)


def test_unknown_name_raises_listing_keys() -> None:
    with pytest.raises(ValueError, match="resnet20.*shake_shake_26_2x64d") as info:
        build_model("resnet18")
    assert "'resnet18'" in str(info.value)
    assert all(key in str(info.value) for key in MODELS)


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"in_channels": 0}, {"image_size": 4}, {"packs": 0}]
)
def test_bad_sizes_raise(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        build_model("small", **kwargs)


def test_option_a_shortcut_is_parameter_free() -> None:
    block = build_model("resnet20").stages[3]  # first block of stage 2: 16 -> 32, stride 2
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(s[:, 16:], torch.zeros_like(s[:, 16:]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_packed_model_layout(name: str) -> None:
    """packs=K: same parameter names, every parameter K solo ones stacked on dim 0."""
    solo = build_model(name, num_classes=7, in_channels=1, image_size=8)
    packed = build_model(name, num_classes=7, in_channels=1, image_size=8, packs=3)
    shapes = {n: p.shape for n, p in solo.named_parameters()}
    for n, p in packed.named_parameters():
        assert p.shape == (3 * shapes[n][0], *shapes[n][1:]), n
    assert list(shapes) == [n for n, _ in packed.named_parameters()]
    assert count_parameters(packed) == 3 * count_parameters(solo)
    out = packed(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 3, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in packed.parameters())


# --- shake-shake -------------------------------------------------------------------------------


def _block_and_input(seed: int = 0) -> tuple[ShakeBlock, torch.Tensor]:
    torch.manual_seed(seed)
    block = ShakeBlock(8, 8, 1)  # identity shortcut: y = x + mix(b1(x), b2(x))
    return block, torch.randn(4, 8, 6, 6)


def test_shake_eval_is_deterministic_half_mix() -> None:
    block, x = _block_and_input()
    block.eval()
    with torch.no_grad():
        out1, out2 = block(x), block(x)
        expected = x + 0.5 * block.branch1(x) + 0.5 * block.branch2(x)
    assert torch.equal(out1, out2)
    torch.testing.assert_close(out1, expected)


def test_shake_train_forward_is_random_and_seeded() -> None:
    block, x = _block_and_input()
    block.train()
    out1, out2 = block(x), block(x)
    assert not torch.allclose(out1, out2)
    torch.manual_seed(123)
    again1 = block(x)
    torch.manual_seed(123)
    again2 = block(x)
    torch.testing.assert_close(again1, again2, rtol=0, atol=0)


def test_shake_function_forward_alpha_backward_beta() -> None:
    x1 = torch.randn(3, 2, 4, 4, requires_grad=True)
    x2 = torch.randn(3, 2, 4, 4, requires_grad=True)
    alpha = torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1, 1)
    beta = torch.tensor([0.7, 0.2, 0.4]).view(3, 1, 1, 1)
    out = ShakeShake.apply(x1, x2, alpha, beta)
    torch.testing.assert_close(out, alpha * x1 + (1 - alpha) * x2)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    torch.testing.assert_close(x1.grad, beta * upstream)
    torch.testing.assert_close(x2.grad, (1 - beta) * upstream)


def test_shake_block_backward_uses_independent_beta_per_image() -> None:
    """Recover alpha (forward) and beta (backward) per image from the real block's tensors."""
    block, x = _block_and_input(seed=1)
    block.train()
    branches = []

    def keep(_module, _inputs, output):  # noqa: ANN001, ANN202
        output.retain_grad()
        branches.append(output)

    block.branch1.register_forward_hook(keep)
    block.branch2.register_forward_hook(keep)
    out = block(x)
    b1, b2 = branches
    upstream = torch.randn_like(out)
    out.backward(upstream)
    # gradients to the two branches sum to the upstream gradient, element by element
    torch.testing.assert_close(b1.grad + b2.grad, upstream)
    beta = b1.grad / upstream  # one value per image, constant over C, H, W
    alpha = (out - x - b2) / (b1 - b2)
    for coeff in (alpha, beta):
        per_image = coeff.flatten(1)
        constant = per_image[:, :1].expand_as(per_image)
        torch.testing.assert_close(per_image, constant, atol=1e-3, rtol=1e-3)
        assert ((per_image >= 0) & (per_image <= 1)).all()
    alpha_img, beta_img = alpha.flatten(1)[:, 0], beta.flatten(1)[:, 0]
    assert alpha_img.unique().numel() == 4  # per image, not per batch
    assert (alpha_img - beta_img).abs().min() > 1e-4  # backward coefficient differs from forward


def test_shake_shake_downsampling_shortcut_shape() -> None:
    torch.manual_seed(0)
    block = ShakeBlock(16, 32, 2)
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


# --- speed of the CPU demo model ---------------------------------------------------------------


def test_small_model_training_step_time() -> None:
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, in_channels=1, image_size=28)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    times, losses = [], []
    for _ in range(8):
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    step = statistics.median(times[2:])
    threads = torch.get_num_threads()
    print(
        f"small: {step * 1e3:.1f} ms/step (batch 128, 1x28x28, {threads} threads); "
        f"~{step * 10_000 / 128:.1f} s per 10k images"
    )
    assert losses[-1] < losses[0]  # the timed steps really train (fits the fixed batch)


# --- packed models (K models side by side; harness.train.packed builds on these) ----------------


def _solos(name: str, k: int, size: int) -> list[torch.nn.Module]:
    """K differently initialised solo models."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(build_model(name, 10, 3, size))
    return models


def _packed(solos: list[torch.nn.Module], name: str, size: int) -> torch.nn.Module:
    return build_packed_model(name, 10, 3, size, [m.state_dict() for m in solos])


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"shake_shake_26_2x96d"}))  # 2x64d's class
def test_packed_forward_equals_vmap_of_solo_models(name: str) -> None:
    solos = [m.eval() for m in _solos(name, 2, 8)]
    packed = _packed(solos, name, 8).eval()
    params, buffers = stack_module_state(solos)
    base = copy.deepcopy(solos[0]).to("meta")

    def run(p, b, x):
        return functional_call(base, (p, b), (x,))

    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        reference = torch.vmap(run, in_dims=(0, 0, None))(params, buffers, x)  # (K, N, C)
        out = packed_logits(packed, x)
    assert out.shape == (4, 2, 10)
    scale = reference.abs().max().item()  # grouped vs plain conv: float32 sums reordered
    torch.testing.assert_close(out, reference.transpose(0, 1), rtol=0, atol=1e-5 * scale)
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_k1_packed_is_the_solo_model() -> None:
    for name in ("small", "resnet20"):
        torch.manual_seed(3)
        solo = build_model(name, 10, 3, 16)
        torch.manual_seed(3)
        packed = build_model(name, 10, 3, 16, packs=1)
        a, b = solo.state_dict(), packed.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[key], b[key]) for key in a)
        x = torch.randn(4, 3, 16, 16)
        out = packed_logits(packed, x)
        assert out.shape == (4, 1, 10)
        assert torch.equal(out[:, 0], solo(x))


def test_packed_init_is_per_model_kaiming() -> None:
    torch.manual_seed(0)
    conv = build_model("resnet20", packs=4).stages[-1].conv2  # per model 64 -> 64, 3x3
    per_model = conv.weight.view(4, -1)
    expected = (2 / (9 * 64)) ** 0.5  # fan_out of the solo conv, not 4x it
    for k in range(4):
        assert per_model[k].std().item() == pytest.approx(expected, rel=0.05)
    assert not torch.equal(per_model[0], per_model[1])


def test_packed_shake_draws_alpha_per_model_per_image() -> None:
    torch.manual_seed(0)
    block = ShakeBlock(4, 4, 1, packs=2).train()
    x = torch.randn(5, 8, 6, 6)
    branches = []
    for branch in (block.branch1, block.branch2):
        branch.register_forward_hook(lambda _m, _i, out: branches.append(out))
    out = block(x)
    b1, b2 = branches
    alpha = ((out - x - b2) / (b1 - b2)).view(5, 2, -1)  # per image, per model, per element
    torch.testing.assert_close(alpha, alpha[:, :, :1].expand_as(alpha), atol=1e-3, rtol=1e-3)
    assert (alpha[:, 0, 0] - alpha[:, 1, 0]).abs().min() > 1e-4


def test_nan_in_one_slice_leaves_other_slices_bitwise_equal() -> None:
    """Grouped conv, BatchNorm (train mode) and the batched linear keep slices apart."""
    solos = _solos("resnet20", 3, 16)
    clean, poisoned = _packed(solos, "resnet20", 16), _packed(solos, "resnet20", 16)
    with torch.no_grad():
        for p in poisoned.parameters():
            p.view(3, -1)[1] = float("nan")
    x = torch.randn(8, 3, 16, 16)
    outs = []
    for model in (clean, poisoned):
        logits = packed_logits(model, x)
        logits.float().sum().backward()  # even a plain sum: d total / d slice k is 1
        outs.append(logits)
    keep = torch.tensor([0, 2])
    assert torch.isnan(outs[1][:, 1]).all()
    assert torch.equal(outs[0][:, keep], outs[1][:, keep])
    for p, q in zip(clean.parameters(), poisoned.parameters(), strict=True):
        assert torch.equal(p.grad.view(3, -1)[keep], q.grad.view(3, -1)[keep])


@pytest.mark.parametrize("packs", [1, 4])
@pytest.mark.parametrize("name", ["resnet20", "shake_shake_26_2x64d"])
def test_every_conv_gets_channels_last_input(name: str, packs: int) -> None:
    """channels_last survives the packed channel pad / concat: no conv sees an NCHW input
    (cuDNN would transpose it), forward and backward, K = 1 and K = 4."""
    model = build_model(name, 10, 3, 8, packs=packs).to(memory_format=torch.channels_last)
    layouts: list[bool] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        layouts.append(not x.is_contiguous()
                       and x.is_contiguous(memory_format=torch.channels_last))

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(record)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(layouts) == convs and all(layouts), f"{layouts.count(False)} of {convs} NCHW"


def test_shake_shake_trains_under_vmap_as_the_bench_ensemble_runs_it() -> None:
    """torch.func.vmap over Shake-Shake (the bench's VmapEnsemble baseline; on the H200 it
    failed: the shake Function had no setup_context): K = 2 tiny nets step, each model's
    parameters move, and the mix's gradient rule holds under vmap, per image and model."""
    from benchmarks.ensemble import VmapEnsemble

    from harness.train.models.shake_shake import ShakeShakeResNet

    torch.manual_seed(0)
    models = [ShakeShakeResNet(4, 1, 10, 3, 1) for _ in range(2)]
    ensemble = VmapEnsemble(models, lr=0.1, momentum=0.9, weight_decay=0.0)
    before = {k: v.clone() for k, v in ensemble.model(1).items()}
    losses = ensemble.step(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    assert any(not torch.equal(before[k], v) for k, v in ensemble.model(1).items())

    x1, x2 = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    alpha, beta = torch.rand(2, 3, 1, 1, 1), torch.rand(2, 3, 1, 1, 1)
    grads = torch.func.vmap(torch.func.grad(
        lambda a, b, al, be: ShakeShake.apply(a, b, al, be).sum(), argnums=(0, 1)))(
        x1, x2, alpha, beta)
    torch.testing.assert_close(grads[0], beta.expand_as(x1))
    torch.testing.assert_close(grads[1], (1 - beta).expand_as(x2))
