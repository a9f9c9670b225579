"""The training loop of one cell: yields one `Epoch` per epoch, does no file or network I/O.

    for epoch e = 1..T:
        for (x, y) in train_batches(seeded permutation, per-image augmentation on the device):
            loss = cross_entropy(model(x), y)        # autocast bf16/fp16 when asked
            loss.backward(); optimizer.step()        # harness.optim: decay mode inside
            scheduler.step()                         # eta_t updated every batch
        evaluate test loss, top-1 and top-5 error every `train.eval_every` epochs and at T

A non-finite training loss ends the cell with `diverged=True` (a result, not a crash).
The caller (run.py) writes records and checkpoints; `Epoch.state()` builds the checkpoint
(model, optimizer, schedule, every RNG state, epoch) and `train(..., resume=state)` continues
from it so that the records equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness import data as data_mod
from harness.config import Config
from harness.models import build_model
from harness.optim import build_optimizer, normalized_weight_decay, param_groups
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


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: data_mod.Dataset, batch_size: int,
             amp: torch.dtype | None) -> tuple[float, float, float]:
    """Test loss (mean cross-entropy), top-1 error and top-5 error, as fractions."""
    model.eval()
    device = ds.x_test.device
    loss = torch.zeros((), device=device)
    wrong1 = torch.zeros((), device=device)
    wrong5 = torch.zeros((), device=device)
    k = min(5, ds.num_classes)
    for x, y in data_mod.test_batches(ds, batch_size):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        top = logits.topk(k, dim=1).indices
        wrong1 += (top[:, 0] != y).sum()
        wrong5 += (top != y[:, None]).all(dim=1).sum()
    n = len(ds.y_test)
    model.train()
    return loss.item() / n, wrong1.item() / n, wrong5.item() / n


def _param_norm(model: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(
        torch.stack([p.detach().float().norm() for p in model.parameters()])).item()


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


def train(cfg: Config, ds: data_mod.Dataset, device: torch.device,
          resume: dict | None = None, progress: bool = False) -> Iterator[Epoch]:
    """Train one cell on `ds` (already on `device`); see the module docstring."""
    seed_everything(cfg.seed)
    model = build_model(cfg.model.name, ds.num_classes, ds.in_channels, ds.image_size)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    n_train, batch = ds.n_train, cfg.train.batch_size
    steps_per_epoch = math.ceil(n_train / batch)
    weight_decay = effective_weight_decay(cfg, n_train, 0)
    groups = param_groups(model.named_parameters(), weight_decay, cfg.decay.exclude)
    optimizer = build_optimizer(groups, cfg.optimizer.name, cfg.decay.mode, cfg.optimizer.lr,
                                weight_decay, **cfg.optimizer.hyper())
    scheduler = build_scheduler(optimizer, cfg.schedule.name, steps_per_epoch, cfg.train.epochs,
                                **cfg.schedule.options())
    amp = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    generator = torch.Generator(device=ds.x_train.device).manual_seed(cfg.seed)
    forward = torch.compile(model) if cfg.train.compile else model
    start_epoch, step, elapsed_before = 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        _set_rng_state(resume["rng"], generator)
        start_epoch, step, elapsed_before = resume["epoch"], resume["step"], resume["elapsed_s"]
    started = time.perf_counter() - elapsed_before
    model.train()
    for epoch in range(start_epoch, cfg.train.epochs):
        weight_decay = _set_weight_decay(optimizer, cfg, n_train, epoch)
        tic = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device)
        seen = 0
        bar = _progress(progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}")
        diverged = False
        for i, (x, y) in enumerate(data_mod.train_batches(ds, batch, generator,
                                                          augment=cfg.dataset.augment)):
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = forward(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(y)
            loss_sum += loss.detach() * len(y)
            wrong += (logits.detach().argmax(1) != y).sum()
            if (i % 20 == 0 or i == steps_per_epoch - 1) and not torch.isfinite(loss_sum):
                diverged = True
                break
            if bar is not None:
                bar.update()
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - tic
        last = epoch + 1 == cfg.train.epochs
        evaluated = not diverged and (last or (epoch + 1) % cfg.train.eval_every == 0)
        test = evaluate(forward, ds, cfg.train.eval_batch_size, amp) if evaluated else (
            math.nan, math.nan, math.nan)
        metrics = EpochMetrics(
            epoch=epoch + 1, step=step, lr_multiplier=scheduler.get_last_lr()[0] / cfg.optimizer.lr,
            weight_decay=weight_decay, train_loss=loss_sum.item() / max(seen, 1),
            train_error=wrong.item() / max(seen, 1), test_loss=test[0], test_error=test[1],
            test_error_top5=test[2], param_norm=_param_norm(model),
            elapsed_s=time.perf_counter() - started, images_per_s=seen / seconds)

        def state(epoch=epoch, step=step, metrics=metrics) -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": _rng_state(generator), "epoch": epoch + 1, "step": step,
                    "elapsed_s": metrics.elapsed_s}

        yield Epoch(metrics=metrics, diverged=diverged, state=state)
        if diverged:
            return


def _set_weight_decay(optimizer: torch.optim.Optimizer, cfg: Config, n_train: int,
                      epoch: int) -> float:
    """Set lambda of the decayed groups for this epoch (changes only with warm restarts)."""
    weight_decay = effective_weight_decay(cfg, n_train, epoch)
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0) != 0.0:
            group["weight_decay"] = weight_decay
    return weight_decay
