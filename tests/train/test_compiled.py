"""Compiled equals eager: the whole train step under `train.compile=default` (forward, backward,
optimizer in one graph) and the eager step, run side by side on the same batches, K = 2 packed
cells, a cosine eta_t that changes every step, and cell 1 diverging in between (a NaN planted in
its weights, found by the loop's own check, `diverge.check_training`). After every step both runs
agree on eta_t, the step counts and every parameter of the live cell; the dead cell's parameters
do not move once it is masked; masking it builds no second graph."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.config import compose
from harness.train import data as data_mod
from harness.train import diverge
from harness.train import loop as train_mod
from harness.train.packed import _part
from tests.train.test_step import one_thread  # noqa: F401 - autouse: one CPU thread

# The runs are float64 (the model converted after setup, before its first step): the live cell's
# parameters then differ by at most ~1e-14 between them (measured on torch 2.14: Inductor's fused
# kernels round differently from the eager ops). In float32 the same difference is ~1e-5 after
# one step and ~5e-4 after ten (Adam's m / sqrt(v) amplifies it where g is near 0), the size of a
# step itself, so float32 could not tell a missed eta_t from rounding; float64 can.
RTOL, ATOL = 1e-9, 1e-12
STEPS, DIES_AFTER = 10, 4  # steps in all; cell 1 gets its NaN after this many




def pack_of_two(compile_mode: str, device: str = "cpu"):
    """Two cells (Adam, decoupled decay, cosine schedule over 12 steps) that differ in lr."""
    (cfg,) = compose.cells([
        "model=small", "dataset=synthetic", "dataset.train_subset=96", "dataset.test_subset=32",
        "optimizer=adam", "decay=decoupled", "decay.weight_decay=1e-2", "schedule=cosine",
        "train.epochs=2", "train.batch_size=16", "train.eval_batch_size=32",
        f"train.device={device}",
        f"train.compile={compile_mode}", "logger=none"])
    cells = [dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=lr))
             for lr in (1e-2, 3e-3)]
    ds = data_mod.load_dataset("synthetic", train_subset=96, test_subset=32, device=device)
    run = train_mod.setup(cells, ds, torch.device(device))
    run.model.double()  # the same Parameter objects, still channels_last; no state exists yet
    return run


def advance(run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step as the loop takes it (compiled for full batches once the state exists)."""
    per_cell, _ = train_mod._step(run, x.to(torch.float64, memory_format=torch.channels_last), y)
    run.step += 1
    return per_cell


def cell(run, k: int) -> list[torch.Tensor]:
    return [_part(p.detach(), k, run.packs).clone() for p in run.model.parameters()]


def same(a: torch.Tensor, b: torch.Tensor, what: str, **tolerance) -> None:
    torch.testing.assert_close(a, b, msg=lambda m: f"{what}: {m}", **tolerance)


def step_counts(run) -> set[float]:
    return {float(s["step"]) for s in run.optimizer.state.values()}


def etas_used(run) -> set[float]:
    """eta_t as the optimizer saw it in its last step (a device scalar of each bucket, in the
    parameters' dtype: float64 here)."""
    return {float(bucket.scalars["eta"]) for bucket, _ in run.optimizer._prepared}


CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                            reason="needs a CUDA device")]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_compiled_step_equals_eager_through_a_cell_diverging(device: str) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled, eager = pack_of_two("default", device), pack_of_two("false", device)
    batches = list(data_mod.train_batches(eager.ds, 16, torch.Generator().manual_seed(0)))
    assert len(batches) == 6 and all(len(y) == 16 for _, y in batches)  # full batches only
    sums = {id(run): torch.zeros(2, dtype=torch.float64, device=device)
            for run in (compiled, eager)}
    frozen: dict[int, list[torch.Tensor]] = {}
    for t in range(STEPS):
        x, y = batches[t % len(batches)]
        for run in (compiled, eager):
            sums[id(run)] += advance(run, x, y).double()
            assert run.count.tolist() == [t + 1], "the device step count t"
            assert etas_used(run) == {float(run.etas[t])}, f"eta_t of step {t}"
            assert step_counts(run) == {t + 1.0}, f"Adam's step count after step {t}"
        assert float(eager.etas[t]) != float(eager.etas[t - 1]) or t == 0  # eta_t changes
        for k in [0] if frozen else [0, 1]:  # every parameter of each live cell
            for i, (a, b) in enumerate(zip(cell(compiled, k), cell(eager, k), strict=True)):
                same(a, b, f"step {t}, cell {k}, parameter {i}", rtol=RTOL, atol=ATOL)
        for run in (compiled, eager) if frozen else ():  # the dead cell: not one bit moves
            for i, (a, b) in enumerate(zip(cell(run, 1), frozen[id(run)], strict=True)):
                same(a, b, f"compile={run.cfg.train.compile}, step {t}: the dead cell's "
                     f"parameter {i} moved", rtol=0, atol=0, equal_nan=True)
        if t + 1 == DIES_AFTER:
            for run in (compiled, eager):
                first = next(run.model.parameters())  # the first conv: all its activations NaN
                with torch.no_grad():
                    _part(first, 1, 2)[(0,) * first.dim()] = math.nan
                assert diverge.check_training(run, sums[id(run)])  # the loop's own check
                assert run.active.tolist() == [True, False]
                frozen[id(run)] = cell(run, 1)
    finite = [torch.isfinite(p).all() for p in frozen[id(compiled)]]
    assert finite.count(False) == 1 and len(finite) > 10  # only the planted NaN is NaN
    stats = torch._dynamo.utils.counters["stats"]
    assert stats["unique_graphs"] == 1, f"masking a cell built a new graph: {dict(stats)}"
    assert sum(torch._dynamo.utils.counters["recompiles"].values()) == 0


def test_packs_trained_one_after_another_in_one_process_each_compile_once():
    """A sweep worker trains pack after pack in one process (budgets_cpu's workers failed at
    the ninth: Dynamo counted each new pack's step as a recompile of the same code, and
    fullgraph=True turns its recompile limit into an error). With the limit at 1, three packs
    in turn each take compiled steps."""
    with torch._dynamo.config.patch(recompile_limit=1):
        for _ in range(3):
            run = pack_of_two("default")
            x, y = next(data_mod.train_batches(run.ds, 16, run.generator))
            for _ in range(3):  # the first step eager (no state yet), then compiled
                assert torch.isfinite(advance(run, x, y)).all()
            assert run.compiled is not None and run.compile_s > 0
