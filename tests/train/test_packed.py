"""Tests for harness.train.packed and packed models: K packed cells train exactly like K solo runs.

Tolerance. Packing changes only the order of float sums (a grouped conv, BatchNorm over K*C
channels, a batched linear instead of K separate ones). In float64 packed and solo runs agree
to ~1e-12 after several steps for every optimizer and decay mode, so the optimizer matrix runs
in float64 at 1e-9 (x1000 margin; a wrong lr or lambda entry, a mixed-up slice or a leaked
gradient is off by >= 1e-3). In float32, with the same weights, packed and solo logits and
gradients agree to ~1e-6 of each tensor's largest entry at every step; trajectories, though,
are only as stable as the training itself: Adam's first update is ~lr * g / |g|, so a weight
whose gradient is at rounding level (|g| ~ 1e-9 in resnet20) flips sign and moves by 2*lr, and
SGD at lr 0.1 on random labels reaches states where a 1e-7 relative weight perturbation moves
the gradient by 3% (measured; the solo float32 run strays from float64 just as much there).
So float32 trajectories are checked for SGD in a well-conditioned setting (small net, lr <=
0.03, 4 steps: observed <= 1e-6, asserted 1e-5). Errors are relative to each tensor's largest
entry (`assert_scaled`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.train.models import build_model
from harness.train.packed import (
    build_packed_model,
    error_counts,
    evaluate_packed,
    mask_diverged,
    pack_optimizer_states,
    pack_states,
    packed_logits,
    packed_loss,
    param_norms,
    unpack_optimizer_state,
    unpack_state,
)
from harness.train.schedules import eta_table, lr_multiplier
from tests.conftest import make_optimizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads; on a loaded 2-core box spinning OpenMP threads
    made this file 10x slower (68 s instead of 7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LRS = {"sgd": [0.1, 0.03, 0.01], "adam": [1e-2, 3e-3, 1e-3], "rmsprop": [1e-3, 3e-4, 1e-4]}
DECAYS = [5e-3, 1e-3, 0.0]
ONE = torch.ones((), dtype=torch.float64)  # eta_t of a constant schedule, on the CPU


def assert_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """max |actual - expected| <= rel * max |expected| (NaN-aware)."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * max(scale, 1e-30),
                               equal_nan=True)


def solo_models(name: str, k: int, dtype: torch.dtype, size: int) -> list[torch.nn.Module]:
    """K differently initialised solo models (a stronger test than K copies of one init)."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(build_model(name, 10, 3, size).to(dtype))
    return models


def packed_from(solos: list[torch.nn.Module], name: str, size: int) -> torch.nn.Module:
    return build_packed_model(name, 10, 3, size, [m.state_dict() for m in solos])


def batches(steps: int, size: int, dtype: torch.dtype, n: int = 8):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 3, size, size, generator=g).to(dtype),
             torch.randint(0, 10, (n,), generator=g)) for _ in range(steps)]


def solo_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y, eta=ONE) -> float:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step(eta=eta)
    return loss.item()


def packed_step(model, opt, x, y, active, eta=ONE) -> torch.Tensor:
    total, per_model = packed_loss(packed_logits(model, x), y, active)
    opt.zero_grad()
    total.backward()
    opt.step(eta=eta)
    return per_model.detach()


def train_both(name, optimizer, decay, dtype, size, steps, lrs=None, k=3):
    """K solo runs and one packed run over the same batches; returns both and the losses."""
    lrs = lrs or LRS[optimizer]
    solos = solo_models(name, k, dtype, size)
    packed = packed_from(solos, name, size)
    solo_opts = [make_optimizer(m.parameters(), optimizer, decay, lrs[i], DECAYS[i])
                 for i, m in enumerate(solos)]
    tensor = {"dtype": torch.float64}
    opt = make_optimizer(packed.parameters(), optimizer, decay, torch.tensor(lrs[:k], **tensor),
                          torch.tensor(DECAYS[:k], **tensor))
    active = torch.ones(k, dtype=torch.bool)
    losses = []
    for x, y in batches(steps, size, dtype):
        solo = [solo_step(m, o, x, y) for m, o in zip(solos, solo_opts, strict=True)]
        losses.append((torch.tensor(solo, dtype=dtype), packed_step(packed, opt, x, y, active)))
    return solos, packed, losses


def assert_states_match(solos, packed, rel: float) -> None:
    state = packed.state_dict()
    for k, solo in enumerate(solos):
        unpacked = unpack_state(state, k, len(solos))
        for key, value in solo.state_dict().items():
            assert_scaled(unpacked[key], value, rel)


# --- training equivalence ---------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("decay", ["none", "l2", "decoupled", "decoupled_lr"])
def test_packed_cells_train_like_solo_runs_float64(optimizer: str, decay: str) -> None:
    solos, packed, losses = train_both("small", optimizer, decay, torch.float64, 8, steps=4)
    for solo, per_model in losses:
        assert_scaled(per_model, solo, 1e-9)
    assert_states_match(solos, packed, 1e-9)  # weights, BN running stats, num_batches_tracked
    assert losses[-1][0][0] != losses[-1][0][2]  # the cells really differ


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_packed_resnet20_trains_like_solo_runs_float64(optimizer: str) -> None:
    """Option-A shortcuts (per-model zero padding) under training."""
    solos, packed, losses = train_both("resnet20", optimizer, "decoupled", torch.float64, 8,
                                       steps=3, k=2)
    for solo, per_model in losses:
        assert_scaled(per_model, solo, 1e-9)
    assert_states_match(solos, packed, 1e-9)


@pytest.mark.parametrize("decay", ["none", "l2", "decoupled", "decoupled_lr"])
def test_packed_sgd_float32_matches_solo_at_1e5(decay: str) -> None:
    solos, packed, losses = train_both("small", "sgd", decay, torch.float32, 16, steps=4,
                                       lrs=[0.03, 0.01], k=2)
    for solo, per_model in losses:
        assert_scaled(per_model, solo, 1e-5)
    assert_states_match(solos, packed, 1e-5)


# --- building ---------------------------------------------------------------------------------


def test_build_packed_model_uses_no_rng_and_leaves_nothing_on_meta() -> None:
    solos = solo_models("resnet20", 2, torch.float32, 8)
    rng = torch.get_rng_state()
    packed = packed_from(solos, "resnet20", 8)
    assert torch.equal(torch.get_rng_state(), rng)
    tensors = list(packed.parameters()) + list(packed.buffers())
    assert all(t.device.type == "cpu" for t in tensors)
    assert all(p.requires_grad and isinstance(p, torch.nn.Parameter) for p in packed.parameters())


# --- loss, divergence -------------------------------------------------------------------------


def test_packed_loss_is_nan_safe() -> None:
    logits = torch.randn(6, 3, 10)
    logits[:, 1] = float("nan")  # model 1 diverged
    logits.requires_grad_(True)
    y = torch.randint(0, 10, (6,))
    total, per_model = packed_loss(logits, y, torch.tensor([True, False, True]))
    assert torch.isnan(per_model[1])
    expected = [F.cross_entropy(logits[:, k].detach(), y) for k in (0, 2)]
    torch.testing.assert_close(total, expected[0] + expected[1])
    torch.testing.assert_close(per_model[[0, 2]], torch.stack(expected))
    total.backward()
    for k in (0, 2):  # each active model gets the gradient of its own mean loss, finite
        solo = logits[:, k].detach().requires_grad_(True)
        F.cross_entropy(solo, y).backward()
        torch.testing.assert_close(logits.grad[:, k], solo.grad)


@pytest.mark.parametrize("check_every", [1, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_diverged_cell_is_detected_masked_and_others_match_solo(optimizer: str,
                                                                check_every: int) -> None:
    """Cell 1 gets lr 1e300. The loop checks the per-model loss before backward every step
    (cell 1 is masked while its weights are still finite, so they must not move by one bit),
    or every 3 steps after the optimizer step (its weights are NaN by then)."""
    lrs = [LRS[optimizer][0], 1e300, LRS[optimizer][2]]
    solos = solo_models("small", 3, torch.float64, 8)
    packed = packed_from(solos, "small", 8)
    solo_opts = [make_optimizer(m.parameters(), optimizer, "decoupled", lrs[i], DECAYS[i])
                 for i, m in enumerate(solos) if i != 1]
    f64 = {"dtype": torch.float64}
    opt = make_optimizer(packed.parameters(), optimizer, "decoupled", torch.tensor(lrs, **f64),
                          torch.tensor(DECAYS, **f64))
    active = torch.ones(3, dtype=torch.bool)
    loss_sum, frozen = torch.zeros(3, **f64), None
    for step, (x, y) in enumerate(batches(6, 8, torch.float64)):
        for m, o in zip([solos[0], solos[2]], solo_opts, strict=True):
            solo_step(m, o, x, y)
        logits = packed_logits(packed, x)
        total, per_model = packed_loss(logits, y, active)
        loss_sum += per_model.detach()
        if step % check_every == check_every - 1:
            newly = active & ~torch.isfinite(loss_sum)
            for k in newly.nonzero().flatten().tolist():
                frozen = [p.detach().view(3, -1)[k].clone() for p in packed.parameters()]
                mask_diverged(opt, packed, k)
            active &= ~newly
            total, _ = packed_loss(logits, y, active)
        opt.zero_grad()
        total.backward()
        opt.step(eta=ONE)
        if frozen is not None:
            for p, before in zip(packed.parameters(), frozen, strict=True):
                after = p.detach().view(3, -1)[1]  # inert: not one bit moves
                torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)
    assert active.tolist() == [True, False, True]
    assert all(torch.isfinite(p).all() for p in frozen) == (check_every == 1)
    state = packed.state_dict()
    for k in (0, 2):
        unpacked = unpack_state(state, k, 3)
        for key, value in solos[k].state_dict().items():
            assert_scaled(unpacked[key], value, 1e-9)
    assert opt.cell_mask.tolist() == [True, False, True]
    assert opt.param_groups[0]["lr"].tolist() == lrs  # the cells' own values are kept
    assert all(torch.isfinite(v).all() for s in opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))  # no NaN left in any moment


def test_mask_diverged_needs_per_model_lr_and_a_valid_index() -> None:
    model = build_model("small", 10, 3, 8, packs=2)
    with pytest.raises(ValueError, match="per-model lr"):
        mask_diverged(make_optimizer(model.parameters(), "sgd", "none", 0.1, 0.0), model, 0)
    opt = make_optimizer(model.parameters(), "sgd", "none", torch.tensor([0.1, 0.1]), 0.0)
    with pytest.raises(ValueError, match="k=2"):
        mask_diverged(opt, model, 2)


# --- state dicts ------------------------------------------------------------------------------


def test_pack_unpack_state_round_trip_with_bn_buffers() -> None:
    solos = solo_models("resnet20", 3, torch.float32, 8)
    for i, m in enumerate(solos):  # non-trivial running stats, num_batches_tracked = i + 1
        for _ in range(i + 1):
            m(torch.randn(4, 3, 8, 8))
    with pytest.raises(ValueError, match="num_batches_tracked"):
        pack_states([m.state_dict() for m in solos])
    for m in solos:
        for buf in m.buffers():
            if buf.dim() == 0:
                buf.fill_(7)
    packed = packed_from(solos, "resnet20", 8)
    state = packed.state_dict()
    for k, m in enumerate(solos):
        unpacked = unpack_state(state, k, 3)
        assert list(unpacked) == list(m.state_dict())
        for key, value in m.state_dict().items():
            assert torch.equal(unpacked[key], value), key
            assert unpacked[key].untyped_storage().nbytes() == value.numel() * value.itemsize
    with pytest.raises(ValueError, match="k=3"):
        unpack_state(state, 3, 3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_round_trip_continues_like_solo(optimizer: str) -> None:
    """Solo runs -> pack model and optimizer -> packed steps == solo steps -> unpack == solo,
    under a cosine eta_t: the state holds alpha and lambda, the step count, no schedule."""
    f64 = torch.float64
    solos = solo_models("small", 2, f64, 8)
    lrs = LRS[optimizer][:2]
    opts = [make_optimizer(m.parameters(), optimizer, "decoupled", lrs[i], DECAYS[i])
            for i, m in enumerate(solos)]
    data = batches(4, 8, f64)
    etas = eta_table(lr_multiplier("cosine", 1, 4), 4)
    for t, (x, y) in enumerate(data[:2]):
        for m, o in zip(solos, opts, strict=True):
            solo_step(m, o, x, y, etas[t])
    packed = packed_from(solos, "small", 8)
    popt = make_optimizer(packed.parameters(), optimizer, "decoupled",
                           torch.tensor([1.0, 1.0], dtype=f64), torch.tensor([0.0, 0.0]))
    popt.load_state_dict(pack_optimizer_states([o.state_dict() for o in opts]))
    assert popt.param_groups[0]["lr"].tolist() == lrs
    active = torch.ones(2, dtype=torch.bool)
    for t, (x, y) in enumerate(data[2:], start=2):
        solo = [solo_step(m, o, x, y, etas[t]) for m, o in zip(solos, opts, strict=True)]
        assert_scaled(packed_step(packed, popt, x, y, active, etas[t]),
                      torch.tensor(solo, dtype=f64), 1e-9)
    assert_states_match(solos, packed, 1e-9)
    for k, o in enumerate(opts):
        unpacked, solo = unpack_optimizer_state(popt.state_dict(), k, 2), o.state_dict()
        assert unpacked["param_groups"] == solo["param_groups"]  # alpha, lambda, hyper: exact
        for index, entry in solo["state"].items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    assert_scaled(unpacked["state"][index][name], value, 1e-9)
                else:
                    assert unpacked["state"][index][name] == value


# --- metrics ----------------------------------------------------------------------------------


def test_error_counts_top1_top5() -> None:
    logits = torch.tensor([[[5.0, 1, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6]],
                           [[0, 9.0, 0, 0, 0, 0, 0], [6, 5, 4, 3, 2, 1, 0]]])  # (N=2, K=2, C=7)
    y = torch.tensor([0, 6])
    assert error_counts(logits, y, 1).tolist() == [1, 2]
    assert error_counts(logits, y, 5).tolist() == [0, 2]  # class 0 ranks 7th for model 1


def test_evaluate_packed_and_param_norms_match_solo_models() -> None:
    solos = [m.eval() for m in solo_models("small", 3, torch.float32, 8)]
    packed = packed_from(solos, "small", 8).train()
    data = batches(3, 8, torch.float32, n=10)
    result = evaluate_packed(packed, data)
    assert packed.training  # mode restored
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    with torch.no_grad():
        for k, m in enumerate(solos):
            logits = m(x)
            top5 = logits.topk(5, dim=1).indices
            assert result.loss[k].item() == pytest.approx(F.cross_entropy(logits, y).item(),
                                                          rel=1e-5)
            assert result.error[k].item() == pytest.approx((logits.argmax(1) != y).float().mean())
            assert result.error_top5[k].item() == pytest.approx(
                (top5 != y[:, None]).all(1).float().mean())
            norm = torch.linalg.vector_norm(torch.cat([p.flatten() for p in m.parameters()]))
            assert param_norms(packed, 3)[k].item() == pytest.approx(norm.item(), rel=1e-5)
