"""The training loop of K >= 1 cells trained at once; yields records, does no file I/O.

The cells differ only in lr (alpha) and weight_decay (lambda); they share the seed, the
initial weights and every batch, so they are trained as one packed network
(`build_model(..., packs=K)`, harness.train.packed) whose optimizer holds per-cell alpha and lambda.
Three pieces, read one at a time:

    setup(cells, ds, device, resume) -> Run     model, optimizer, eta_t table, RNG, resume
    train_step(run, x, y)                       one batch, all on the device (harness.train.step):
        eta_t = etas[t]                            (harness.train.schedules, a device table)
        loss = sum_k active_k * mean_n CE(model(x)[n, k], y[n])   (autocast bf16 on GPU)
        loss.backward(); optimizer.step(eta=eta_t); t += 1   (harness.train.optim: decay inside)
    run_epoch(run, epoch) -> [Epoch | None]     the epoch's batches, a divergence check every
                                               DIVERGENCE_CHECK_EVERY steps and at the epoch's
                                               last step (the only host reads), evaluation
                                               every `train.eval_every`

K = 1 is the single-cell path. A cell whose training loss, parameters or evaluation loss turn
non-finite is masked out of the pack (`diverged=True`, a result, not a crash; the rule:
harness.train.diverge) and the others go on. `train.compile` (default |
reduce-overhead | max-autotune) compiles the whole train step (forward, backward, optimizer)
with static shapes: the first step (it creates the optimizer state) and the epoch's last,
partial batch run eagerly (padding it would change BatchNorm's batch statistics), evaluation
is eager, so no other graph is built; the compile time is logged, not counted in images/s.

The caller writes the records (harness.sweep.recorder: parquet, checkpoints, W&B, from the
Epochs this loop yields): `Epoch.state()` is the cell's own checkpoint in the solo format
(its model and optimizer state, every RNG state, epoch, step), and `train(..., resume=states)`
continues from them so that the records equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from harness import stops
from harness.config.job import Config
from harness.spec.records import EpochMetrics
from harness.train import data as data_mod
from harness.train import diverge, packed
from harness.train.buckets import is_zero
from harness.train.diverge import DIVERGENCE_CHECK_EVERY
from harness.train.models import build_model
from harness.train.optim import (
    ChainOptimizer,
    build_optimizer,
    normalized_weight_decay,
    param_groups,
)
from harness.train.rng import rng_state, seed_everything, set_rng_state
from harness.train.schedules import current_period_epochs, eta_table, lr_multiplier
from harness.train.step import Run, train_step


class ResumeError(RuntimeError):
    """A checkpoint's state cannot be loaded into this run's model, optimizer or RNGs (`setup`);
    the message is one line. The caller retrains the cell from scratch."""


@dataclass(frozen=True)
class Epoch:
    metrics: EpochMetrics
    diverged: bool
    state: Callable[[], dict]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means fp32; auto is bf16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def effective_weight_decay(cfg: Config, n_train: int, epoch: int) -> float:
    """lambda for 0-based `epoch`: lambda_norm*sqrt(b/(B*T)) when normalized, T = run length
    or, with warm restarts, the length of the current restart period (paper App. B.1)."""
    if not cfg.decay.normalized:
        return cfg.decay.weight_decay
    epochs = cfg.train.epochs
    if cfg.schedule.name == "warm_restarts":
        options = dict(cfg.schedule.options)
        epochs = current_period_epochs(epoch, options["t_0"], options["t_mult"])
    return normalized_weight_decay(cfg.decay.weight_decay, cfg.train.batch_size, n_train, epochs)


def setup(cells: Sequence[Config], ds: data_mod.Dataset, device: torch.device,
          resume: Sequence[dict] | None = None) -> Run:
    """Model, optimizer and eta_t table of `cells` on `device`, continued from `resume`."""
    cfg, packs = cells[0], len(cells)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels
    # channels_last on every device: measured faster on CPU too (ResNet-20 -12%, small -38%)
    model = _build_model(cfg, ds, packs).to(device, memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(ds.n_train / cfg.train.batch_size)
    decays = [effective_weight_decay(c, ds.n_train, 0) for c in cells]
    groups = param_groups(model, _per_cell(decays), cfg.decay.exclude, f"model={cfg.model.name}")
    optimizer = build_optimizer(groups, cfg.optimizer.name, cfg.decay.mode,
                                _per_cell([c.optimizer.lr for c in cells]), _per_cell(decays),
                                **dict(cfg.optimizer.hyper))
    multiplier = lr_multiplier(cfg.schedule.name, steps_per_epoch, cfg.train.epochs,
                               **dict(cfg.schedule.options))
    etas = eta_table(multiplier, steps_per_epoch * cfg.train.epochs)
    amp = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    generator = torch.Generator().manual_seed(cfg.seed)  # on the CPU: data.train_batches
    start_epoch, step, elapsed_before = 0, 0, 0.0
    if resume is not None:
        try:
            model.load_state_dict(packed.pack_states([r["model"] for r in resume]))
            optimizer.load_state_dict(
                packed.pack_optimizer_states([r["optimizer"] for r in resume]))
            scaler.load_state_dict(resume[0]["scaler"])
            set_rng_state(resume[0]["rng"], generator)
        except Exception as err:  # noqa: BLE001 - any mismatch of a checkpoint with this model
            raise ResumeError(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") \
                from err
        start_epoch, step, elapsed_before = (resume[0]["epoch"], resume[0]["step"],
                                             resume[0]["elapsed_s"])
    return Run(cells, ds, device, model, optimizer, scaler, generator, amp, multiplier,
               etas.to(device), torch.tensor([step], device=device),
               torch.ones(packs, dtype=torch.bool, device=device), step, start_epoch,
               time.perf_counter() - elapsed_before)


def _step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """train_step, through the compiled graph for full batches once the state exists. A sweep
    worker trains pack after pack in one process: each pack's graph replaces the previous
    one's (`torch.compiler.reset`), as Dynamo would otherwise count every pack as a recompile
    of the same code and fail the ninth (fullgraph=True)."""
    run.optimizer.zero_grad(set_to_none=True)
    mode = run.cfg.train.compile
    if mode == "false" or run.step == 0 or len(y) != run.cfg.train.batch_size:
        return train_step(run, x, y)
    if run.compiled is None:
        torch.compiler.reset()  # Inductor's on-disk cache still makes the new compile fast
        options = {} if mode == "default" else {"mode": mode}
        run.compiled = torch.compile(
            lambda x, y: train_step(run, x, y, run.optimizer.apply_prepared),
            fullgraph=True, **options)
    run.optimizer.prepare(assume_grads=True)
    first = run.compile_s == 0.0
    tic = time.perf_counter()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        out = run.compiled(x, y)
    if first:
        run.compile_s = time.perf_counter() - tic
        print(f"train: compiled the train step ({mode}) in {run.compile_s:.1f} s; "
              "not counted in images/s", file=sys.stderr)
    return out


def run_epoch(run: Run, epoch: int, progress: bool = False) -> list[Epoch | None]:
    """Train 0-based `epoch`, evaluate when due; one Epoch per cell (None: masked earlier)."""
    cfg, ds, packs = run.cfg, run.ds, run.packs
    decays = _set_weight_decay(run.optimizer, run.cells, ds.n_train, epoch)
    alive = run.active.tolist()  # the epoch's start: which cells get a record
    loss_sum = torch.zeros(packs, device=run.device, dtype=torch.float64)
    wrong = torch.zeros(packs, device=run.device, dtype=torch.float64)
    seen, timed, skipped_s = 0, 0, 0.0
    steps = math.ceil(ds.n_train / cfg.train.batch_size)
    bar = _progress(progress, steps, f"epoch {epoch + 1}/{cfg.train.epochs}")
    tic = time.perf_counter()
    for i, (x, y) in enumerate(data_mod.train_batches(ds, cfg.train.batch_size, run.generator,
                                                      augment=cfg.dataset.augment)):
        stops.check()  # a signal whose exception a library swallowed stops here
        x = x.contiguous(memory_format=torch.channels_last)
        compiling = run.compiled is None and run.compile_s == 0.0
        before = time.perf_counter()
        per_cell, errors = _step(run, x, y)
        if compiling and run.compile_s:
            skipped_s += time.perf_counter() - before  # the compiling call: not throughput
        else:
            timed += len(y)
        run.step, seen = run.step + 1, seen + len(y)
        loss_sum += per_cell * len(y)
        wrong += errors
        if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 or i == steps - 1:
            if diverge.check_training(run, loss_sum) and not run.active.any():
                break
            if bar is not None:
                bar.set_postfix(loss=f"{(loss_sum / seen).nanmean().item():.3f}")
        if bar is not None:
            bar.update()
    seconds = time.perf_counter() - tic - skipped_s
    if bar is not None:
        bar.close()
    return _epoch_records(run, epoch, alive, decays, loss_sum / max(seen, 1),
                          wrong / max(seen, 1), timed / max(seconds, 1e-9))


def _epoch_records(run: Run, epoch: int, alive: list[bool], decays: list[float],
                   losses: torch.Tensor, errors: torch.Tensor,
                   images_per_s: float) -> list[Epoch | None]:
    cfg, packs = run.cfg, run.packs
    last = epoch + 1 == cfg.train.epochs
    test = val = None
    if any(run.active.tolist()) and (last or (epoch + 1) % cfg.train.eval_every == 0):
        test = packed.evaluate_packed(run.model, data_mod.test_batches(
            run.ds, cfg.train.eval_batch_size), run.amp)
        if run.ds.n_val:
            val = packed.evaluate_packed(run.model, data_mod.val_batches(
                run.ds, cfg.train.eval_batch_size), run.amp)
        diverge.check_evaluation(run, test.loss, None if val is None else val.loss)
    active = run.active.tolist()  # after the evaluation: a NaN test or val loss is diverged
    norms = packed.param_norms(run.model, packs).tolist()
    losses, errors = losses.tolist(), errors.tolist()
    out: list[Epoch | None] = []
    for k in range(packs):
        if not alive[k]:
            out.append(None)
            continue
        ok = active[k] and test is not None
        metrics = EpochMetrics(
            epoch=epoch + 1, step=run.step, lr_multiplier=run.multiplier(run.step),
            weight_decay=decays[k], train_loss=losses[k], train_error=errors[k],
            test_loss=float(test.loss[k]) if ok else math.nan,
            test_error=float(test.error[k]) if ok else math.nan,
            test_error_top5=float(test.error_top5[k]) if ok else math.nan,
            val_loss=float(val.loss[k]) if ok and val is not None else math.nan,
            val_error=float(val.error[k]) if ok and val is not None else math.nan,
            param_norm=norms[k], elapsed_s=time.perf_counter() - run.started,
            images_per_s=sum(alive) * images_per_s)  # the cells that trained, once each
        out.append(Epoch(metrics=metrics, diverged=not active[k],
                         state=_state_fn(run, k, epoch + 1, metrics.elapsed_s)))
    return out


def train(cells: Sequence[Config], ds: data_mod.Dataset, device: torch.device,
          resume: Sequence[dict] | None = None,
          progress: bool = False) -> Iterator[list[Epoch | None]]:
    """Train `cells` (K >= 1, equal but for lr and weight_decay) on `ds`, already on `device`.
    Yields, per epoch, one Epoch per cell still training (None for cells masked earlier)."""
    run = setup(cells, ds, device, resume)
    run.model.train()
    for epoch in range(run.start_epoch, run.cfg.train.epochs):
        yield run_epoch(run, epoch, progress)
        if not run.active.any():
            return


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


def _per_cell(values: list[float]) -> torch.Tensor:
    """harness.train.optim's per-model values, a K-vector (K = 1 too: a solo cell then runs the
    optimizer arithmetic of a pack, so packed and solo records agree to rounding)."""
    return torch.tensor(values, dtype=torch.float64)


def _build_model(cfg: Config, ds: data_mod.Dataset, packs: int) -> torch.nn.Module:
    """The packed model with every cell at the solo model's initial weights; the global RNG
    is left where a solo run leaves it (seed, then one solo model's initialization)."""
    seed_everything(cfg.seed)
    args = (cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size)
    solo = build_model(*args)
    return solo if packs == 1 else packed.build_packed_model(*args, [solo.state_dict()] * packs)


def _set_weight_decay(optimizer: ChainOptimizer, cells: Sequence[Config], n_train: int,
                      epoch: int) -> list[float]:
    """Set lambda of the decayed groups for this epoch; it changes only with warm restarts,
    and only then is the group value replaced (the optimizer lays it out again)."""
    values = [effective_weight_decay(c, n_train, epoch) for c in cells]
    for group in optimizer.param_groups:
        current = group["weight_decay"]
        if is_zero(current):  # excluded groups (weight_decay 0) stay 0
            continue
        if torch.as_tensor(current, dtype=torch.float64).expand(len(values)).tolist() != values:
            group["weight_decay"] = _per_cell(values)
    return values


def _state_fn(run: Run, k: int, epoch: int, elapsed_s: float) -> Callable[[], dict]:
    """Cell k's own checkpoint, in the solo format whatever the pack."""
    model, optimizer, packs, step = run.model, run.optimizer, run.packs, run.step

    def state() -> dict:
        opt = optimizer.state_dict()
        return {"model": packed.unpack_state(model.state_dict(), k, packs) if packs > 1
                else model.state_dict(),
                "optimizer": packed.unpack_optimizer_state(opt, k, packs),
                "scaler": run.scaler.state_dict(), "rng": rng_state(run.generator),
                "epoch": epoch, "step": step, "elapsed_s": elapsed_s}
    return state
