"""The training loop of K >= 1 cells trained at once; yields records, does no file I/O.

The cells differ only in lr (alpha) and weight_decay (lambda); they share the seed, the
initial weights and every batch, so they are trained as one packed network
(`build_model(..., packs=K)`, harness.packed) whose optimizer holds per-cell alpha and lambda:

    for epoch e = 1..T:
        for (x, y) in train_batches(seeded permutation, per-image augmentation on the device):
            loss = sum_k mean_n CE(model(x)[n, k], y[n])   # autocast bf16/fp16 when asked
            loss.backward(); optimizer.step()              # harness.optim: decay mode inside
            scheduler.step()                               # eta_t updated every batch
        evaluate test loss, top-1 and top-5 error every `train.eval_every` epochs and at T

K = 1 is the single-cell path. A cell whose loss turns non-finite is masked out of the pack
(`diverged=True`, a result, not a crash) and the others go on. The caller (cells.py) writes
records and checkpoints: `Epoch.state()` is the cell's own checkpoint (its model, optimizer
and schedule state, every RNG state, epoch), and `train(..., resume=states)` continues from
them so that the records equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from harness import data as data_mod
from harness import packed
from harness.config import Config
from harness.models import build_model
from harness.optim import PerModel, build_optimizer, normalized_weight_decay, param_groups
from harness.schedules import build_scheduler, current_period_epochs


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int               # 1-based
    step: int                # optimizer steps so far
    lr_multiplier: float     # eta_t after the epoch's last step
    weight_decay: float      # lambda used in this epoch (after normalization)
    train_loss: float        # mean over the epoch's training batches (augmented, train mode)
    train_error: float       # top-1, fraction
    test_loss: float         # NaN when not evaluated this epoch
    test_error: float
    test_error_top5: float
    param_norm: float        # ||theta||_2 over all parameters
    elapsed_s: float         # wall time since the cell started (resumed runs include before)
    images_per_s: float      # training throughput of this epoch


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
        epochs = current_period_epochs(epoch, cfg.schedule.t_0, cfg.schedule.t_mult)
    return normalized_weight_decay(cfg.decay.weight_decay, cfg.train.batch_size, n_train, epochs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": random.getstate()}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


def _per_cell(values: list[float]) -> float | torch.Tensor:
    """A float for one cell, a K-vector for a pack (harness.optim's per-model values)."""
    return values[0] if len(values) == 1 else torch.tensor(values, dtype=torch.float64)


def _build_model(cfg: Config, ds: data_mod.Dataset, packs: int) -> torch.nn.Module:
    """The packed model with every cell at the solo model's initial weights; the global RNG
    is left where a solo run leaves it (seed, then one solo model's initialization)."""
    seed_everything(cfg.seed)
    args = (cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size)
    solo = build_model(*args)
    return solo if packs == 1 else packed.build_packed_model(*args, [solo.state_dict()] * packs)


def _scheduler_state(state: dict, k: int) -> dict:
    """Cell k's solo LambdaLR state (floats) from a packed one (PerModel lrs)."""
    pick = [float(v.tensor()[k]) if isinstance(v, PerModel) else v for v in state["_last_lr"]]
    base = [float(v.tensor()[k]) if isinstance(v, PerModel) else v for v in state["base_lrs"]]
    return state | {"_last_lr": pick, "base_lrs": base}


def _pack_scheduler_states(states: list[dict]) -> dict:
    if len(states) == 1:
        return states[0]
    per_cell = {key: [PerModel(torch.tensor([s[key][i] for s in states], dtype=torch.float64))
                      for i in range(len(states[0][key]))] for key in ("_last_lr", "base_lrs")}
    return states[0] | per_cell


def _set_weight_decay(optimizer: torch.optim.Optimizer, cells: Sequence[Config], n_train: int,
                      epoch: int, active: torch.Tensor) -> list[float]:
    """Set lambda of the decayed groups for this epoch (it changes only with warm restarts);
    a masked (diverged) cell keeps 0."""
    values = [effective_weight_decay(c, n_train, epoch) if bool(a) else 0.0
              for c, a in zip(cells, active.tolist(), strict=True)]
    for group in optimizer.param_groups:
        if not _is_zero(group["weight_decay"]):  # excluded groups (weight_decay 0) stay 0
            group["weight_decay"] = _per_cell(values)
    return values


def _is_zero(value: float | torch.Tensor) -> bool:
    return bool((torch.as_tensor(value) == 0).all())


def train(cells: Sequence[Config], ds: data_mod.Dataset, device: torch.device,
          resume: Sequence[dict] | None = None,
          progress: bool = False) -> Iterator[list[Epoch | None]]:
    """Train `cells` (K >= 1, equal but for lr and weight_decay) on `ds`, already on `device`.
    Yields, per epoch, one Epoch per cell still training (None for cells masked earlier)."""
    cfg, packs = cells[0], len(cells)
    model = _build_model(cfg, ds, packs).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    n_train, batch = ds.n_train, cfg.train.batch_size
    steps_per_epoch = math.ceil(n_train / batch)
    decays = [effective_weight_decay(c, n_train, 0) for c in cells]
    groups = param_groups(model.named_parameters(), _per_cell(decays), cfg.decay.exclude)
    optimizer = build_optimizer(groups, cfg.optimizer.name, cfg.decay.mode,
                                _per_cell([c.optimizer.lr for c in cells]), _per_cell(decays),
                                **cfg.optimizer.hyper())
    scheduler = build_scheduler(optimizer, cfg.schedule.name, steps_per_epoch, cfg.train.epochs,
                                **cfg.schedule.options())
    amp = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    generator = torch.Generator(device=ds.x_train.device).manual_seed(cfg.seed)
    forward = torch.compile(model) if cfg.train.compile else model
    start_epoch, step, elapsed_before = 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(packed.pack_states([r["model"] for r in resume]))
        optimizer.load_state_dict(packed.pack_optimizer_states([r["optimizer"] for r in resume])
                                  if packs > 1 else resume[0]["optimizer"])
        scheduler.load_state_dict(_pack_scheduler_states([r["scheduler"] for r in resume]))
        scaler.load_state_dict(resume[0]["scaler"])
        _set_rng_state(resume[0]["rng"], generator)
        start_epoch, step, elapsed_before = (resume[0]["epoch"], resume[0]["step"],
                                             resume[0]["elapsed_s"])
    active = torch.ones(packs, dtype=torch.bool)
    started = time.perf_counter() - elapsed_before
    model.train()
    for epoch in range(start_epoch, cfg.train.epochs):
        decays = _set_weight_decay(optimizer, cells, n_train, epoch, active)
        was_active = active.clone()
        tic = time.perf_counter()
        loss_sum = torch.zeros(packs, device=device, dtype=torch.float64)
        wrong = torch.zeros(packs, device=device, dtype=torch.float64)
        seen = 0
        bar = _progress(progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}")
        for i, (x, y) in enumerate(data_mod.train_batches(ds, batch, generator,
                                                          augment=cfg.dataset.augment)):
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = packed.packed_logits(forward, x)
            total, per_cell = packed.packed_loss(logits, y, active)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(y)
            loss_sum += per_cell.detach() * len(y)
            wrong += packed.error_counts(logits.detach(), y)
            if i % 20 == 0 or i == steps_per_epoch - 1:
                if _mask_diverged(optimizer, model, loss_sum, active):
                    if not active.any():
                        break
            if bar is not None:
                bar.update()
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{total.item() / max(int(active.sum()), 1):.3f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - tic
        last = epoch + 1 == cfg.train.epochs
        test = None
        if active.any() and (last or (epoch + 1) % cfg.train.eval_every == 0):
            test = packed.evaluate_packed(forward, data_mod.test_batches(
                ds, cfg.train.eval_batch_size), amp)
        norms = packed.param_norms(model, packs).tolist()
        eta = scheduler.get_last_lr()[0] / cfg.optimizer.lr if packs == 1 else \
            float(optimizer.param_groups[0]["lr"].scale)
        losses, errors = (loss_sum / max(seen, 1)).tolist(), (wrong / max(seen, 1)).tolist()
        epochs: list[Epoch | None] = []
        for k in range(packs):
            if not was_active[k]:
                epochs.append(None)
                continue
            ok = bool(active[k]) and test is not None
            metrics = EpochMetrics(
                epoch=epoch + 1, step=step, lr_multiplier=eta, weight_decay=decays[k],
                train_loss=losses[k], train_error=errors[k],
                test_loss=float(test.loss[k]) if ok else math.nan,
                test_error=float(test.error[k]) if ok else math.nan,
                test_error_top5=float(test.error_top5[k]) if ok else math.nan,
                param_norm=norms[k], elapsed_s=time.perf_counter() - started,
                images_per_s=seen / seconds)
            epochs.append(Epoch(metrics=metrics, diverged=not bool(active[k]),
                                state=_state_fn(model, optimizer, scheduler, scaler, generator,
                                                k, packs, epoch + 1, step, metrics.elapsed_s)))
        yield epochs
        if not active.any():
            return


def _mask_diverged(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                   loss_sum: torch.Tensor, active: torch.Tensor) -> bool:
    """Mask every active cell whose summed loss is no longer finite; True if any was."""
    newly = (~torch.isfinite(loss_sum)).cpu() & active
    for k in newly.nonzero().flatten().tolist():
        active[k] = False
        if len(active) > 1:
            packed.mask_diverged(optimizer, model, k)
    return bool(newly.any())


def _state_fn(model, optimizer, scheduler, scaler, generator, k: int, packs: int, epoch: int,
              step: int, elapsed_s: float) -> Callable[[], dict]:
    """Cell k's own checkpoint, in the solo format whatever the pack."""
    def state() -> dict:
        opt = optimizer.state_dict()
        sched = scheduler.state_dict()
        return {"model": packed.unpack_state(model.state_dict(), k, packs) if packs > 1
                else model.state_dict(),
                "optimizer": packed.unpack_optimizer_state(opt, k, packs) if packs > 1 else opt,
                "scheduler": _scheduler_state(sched, k) if packs > 1 else sched,
                "scaler": scaler.state_dict(), "rng": _rng_state(generator),
                "epoch": epoch, "step": step, "elapsed_s": elapsed_s}
    return state
