"""`python -m harness bench`: steady-state training throughput, naive loop vs harness vs packs.

On synthetic CIFAR-shaped data (3 x 32 x 32 uint8, 10 classes; speed does not depend on pixel
values), in one process, per model:

    naive    what a user would write: a torch Dataset over the uint8 images with per-sample
             torchvision transforms of PIL images (RandomCrop(32, padding=4), RandomHorizontalFlip,
             ToTensor, Normalize), a DataLoader with workers (pinned memory on CUDA), fp32, eager,
             torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), one model; `steps`
             batches timed after `warmup` batches.
    strong:eager, strong:compile, strong:cudagraphs
             the single-model loops a careful user writes, one model each: data and
             augmentation on the device (harness.train.data's batches), bf16 autocast and
             channels_last on CUDA, fused torch.optim.SGD (foreach on a CPU); eager with
             cudnn.benchmark (on CUDA), torch.compile(model) (mode default; on a CPU only with
             --compile), torch.compile(model, mode="reduce-overhead") (CUDA graphs: CUDA only).
             torch._dynamo.reset() before each. A configuration that does not apply here is a
             "skipped" row, one that raises a "failed" row; both say why in `note`.
    strong   the best of the strong:* rows that ran (`note` names it): every ratio_vs_strong
             divides by it.
    harness  `harness.train.loop.train` on K cells packed as one wide model (K = 1: the single-cell
             path): data and augmentation on the device, bf16 autocast and channels_last on GPU,
             harness SGD. Epochs of L = min(warmup, steps) batches: ceil(warmup / L) warm-up
             epochs, then ceil(steps / L) timed epochs, timed by the wall clock from the last
             warm-up epoch's records to the last timed epoch's (no evaluation in between).
             K grows along `--packs` until CUDA runs out of memory; that K is recorded with
             status "oom"; one that raises anything else is a "failed" row (`note`: its first
             line) and ends that method's K too.
    vmap     the same K models the way PyTorch's model-ensembling recipe trains them
             (benchmarks/ensemble.py: stack_module_state + vmap(functional_call), one SGD over
             the stacked parameters), on the strong loop's data, bf16 and channels_last.

`harness+compile` rows: the same with train.compile=default (the compile falls in the warm-up
epochs). `conv_microbench` (the JSON's own list): every grouped conv of the packed model at the
largest K, forward + backward against the dense conv of equal FLOPs (benchmarks/ensemble.py).
The summary printed after the table (benchmarks/bench_summary.py, also in the JSON) says
whether each speed target is met and the GPU-hours of the fig2 studies at the measured rates.
Every images_per_s is images trained in the timed window / its wall time, each image counted
once per model that trained on it: one model for naive and strong, K for vmap, the cells alive at
each timed epoch's start for a pack of K (a batch of B images is K * B images, not more).
ratio_vs_naive and ratio_vs_strong divide it by the naive and strong loops'; roofline_fraction
divides it by ROOFLINE_IMAGES_PER_S (ResNet-20 ~630k img/s, Shake-Shake 2x64d ~41k on an H100;
~840k and ~50k on an H200: bf16 training images/s at the memory-bandwidth bound, not at the
tensor-core peak, which F / P below would put far higher; the issue's constants), None
elsewhere; peak_memory_gib = torch.cuda.max_memory_allocated over the measurement (None
on CPU). MFU = F * images_per_s / P: F = FLOPs of one image's forward + backward through the
solo model, counted by torch.utils.flop_counter.FlopCounterMode (multiply-add = 2 FLOPs;
ResNet-20: 81.1 MFLOPs forward, 242 forward + backward); P = the device's dense bf16 peak
(`PEAK_BF16_FLOPS`, for the fp32 naive loop too), None when unknown (every CPU).
Writes `<out>/<device slug>.json` (results/bench/nvidia-h100-80gb-hbm3.json, cpu.json) and
prints a table. Defaults: on GPU both paper models, K = 1, 4, 16, 64, batch 128, 50 steps; on
CPU ResNet-20, K = 1, 4, batch 64, 10 steps (under a minute on 2 idle cores).

    python -m harness bench                     # full set on GPU, small on CPU
    python -m harness bench --quick             # smoke run: seconds (alias --dry-run)
    python -m harness bench --models resnet20 --packs 1 8 32 --steps 100
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import harness
from harness.config import compose
from harness.config.job import Config
from harness.fsutil import atomic_write_text
from harness.sweep.records import cpu_model, git_sha
from harness.train import data as data_mod
from harness.train.loop import train
from harness.train.models import MODELS, build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path (harness bench)
from benchmarks import bench_summary, ensemble  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peak FLOP/s, matched in order against the device name.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12))
# Training images/s at the memory-bandwidth roofline (bf16), by device name and model: the
# constants stated in the README's performance section; matched in order against the device name.
ROOFLINE_IMAGES_PER_S: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"resnet20": 840e3, "shake_shake_26_2x64d": 50e3}),
    ("H100", {"resnet20": 630e3, "shake_shake_26_2x64d": 41e3}))
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # naive SGD; weight_decay is its L2 lambda
GIB = 2**30
STRONG_CONFIGS = ("eager", "compile", "cudagraphs")


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    packs: tuple[int, ...]      # K values, ascending
    steps: int                  # timed batches per measurement
    warmup: int                 # untimed batches before them (whole epochs for the harness)
    batch_size: int
    device: torch.device
    out: Path                   # directory of <slug>.json
    compile: bool = False       # also measure torch.compile'd loops (default on CUDA)


@dataclass(frozen=True)
class Result:
    model: str
    method: str                 # naive | strong[:config] | harness | harness+compile | vmap
    K: int                      # cells trained at once
    status: str                 # ok | oom | failed | skipped
    images_per_s: float | None  # summed over the K cells
    peak_memory_gib: float | None
    mfu: float | None
    ratio_vs_naive: float | None
    ratio_vs_strong: float | None = None
    roofline_fraction: float | None = None
    note: str | None = None     # why failed or skipped; which configuration a strong row is


@dataclass(frozen=True)
class FlopCount:
    forward: float              # FLOPs per image, multiply-add = 2
    training: float             # forward + backward per image


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name as the run records store it; "cpu" if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() or "cpu"


def device_slug(name: str) -> str:
    """The device name lower-cased, each run of non-alphanumerics one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def peak_flops(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the device called `name`, None when unknown."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key.lower() in name.lower()), None)


def roofline(name: str, model: str) -> float | None:
    """ROOFLINE_IMAGES_PER_S of `model` on the device called `name`, None when unknown."""
    return next((table.get(model) for key, table in ROOFLINE_IMAGES_PER_S
                 if key.lower() in name.lower()), None)


def count_flops(model_name: str, batch: int = 2) -> FlopCount:
    """FLOPs per image of one forward and one forward + backward (train mode, fp32, CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(model_name).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.arange(batch) % 10
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(x), y)
        forward = counter.get_total_flops()
        loss.backward()
    return FlopCount(forward / batch, counter.get_total_flops() / batch)


class NaiveCifar(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's way: one PIL image per sample through `transform`."""

    def __init__(self, x_nhwc: np.ndarray, y: np.ndarray, transform: Callable) -> None:
        self.x, self.y, self.transform = x_nhwc, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_images_per_s(model_name: str, s: Settings) -> float:
    """Images per second of the hand-written fp32 eager loop (see the module docstring)."""
    import torchvision.transforms as T

    from harness.train.datasets import synthetic

    raw = synthetic.generate((s.warmup + s.steps) * s.batch_size, 1)
    x = np.ascontiguousarray(raw.x_train.transpose(0, 2, 3, 1))
    mean, std = (x / 255.0).mean(axis=(0, 1, 2)), (x / 255.0).std(axis=(0, 1, 2))
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean.tolist(), std.tolist())])
    cuda = s.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        NaiveCifar(x, raw.y_train, transform), batch_size=s.batch_size, shuffle=True,
        num_workers=min(8, os.cpu_count() or 1) if cuda else 2, pin_memory=cuda, drop_last=True)
    model = build_model(model_name).to(s.device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    tic = time.perf_counter()
    for i, (xb, yb) in enumerate(loader):
        if i == s.warmup:
            _sync(s.device)
            tic = time.perf_counter()
        xb, yb = xb.to(s.device, non_blocking=True), yb.to(s.device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i + 1 == s.warmup + s.steps:  # stop the clock before the workers shut down
            _sync(s.device)
            break
    return s.steps * s.batch_size / (time.perf_counter() - tic)


def strong_skip_reason(config: str, s: Settings) -> str | None:
    """Why the strong:`config` loop does not run with these settings, None when it does."""
    if config == "cudagraphs" and s.device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if config == "compile" and s.device.type != "cuda" and not s.compile:
        return "torch.compile on a CPU only with --compile"
    return None


def _batches(s: Settings, batches: int):
    """`batches` device batches of the synthetic set (channels_last on CUDA), drawn by a
    fixed generator: the data of the strong and vmap loops."""
    ds = data_mod.load_dataset("synthetic", train_subset=batches * s.batch_size,
                               test_subset=s.batch_size, device=s.device)
    generator = torch.Generator().manual_seed(0)  # batches are drawn on the CPU (data.py)
    for x, y in data_mod.train_batches(ds, s.batch_size, generator):
        yield (x.contiguous(memory_format=torch.channels_last) if s.device.type == "cuda"
               else x), y


def strong_images_per_s(model_name: str, s: Settings, config: str = "eager") -> float:
    """Images per second of the careful single-model loop strong:`config` (eager, compile or
    cudagraphs; see the module docstring)."""
    cuda = s.device.type == "cuda"
    torch._dynamo.reset()
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda
    try:
        model = build_model(model_name).to(s.device).train()
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                    weight_decay=WEIGHT_DECAY, **({"fused": True} if cuda else
                                                                  {"foreach": True}))
        forward = {"eager": lambda: model, "compile": lambda: torch.compile(model),
                   "cudagraphs": lambda: torch.compile(model, mode="reduce-overhead")}[config]()
        tic = time.perf_counter()
        for i, (x, y) in enumerate(_batches(s, s.warmup + s.steps)):
            if i == s.warmup:
                _sync(s.device)
                tic = time.perf_counter()
            if config == "cudagraphs":
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(s.device)
        return s.steps * s.batch_size / (time.perf_counter() - tic)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def vmap_images_per_s(model_name: str, packs: int, s: Settings) -> float:
    """Images per second (K x B per batch) of `packs` models trained by
    ensemble.VmapEnsemble on the strong loop's data (bf16, cudnn.benchmark on CUDA)."""
    cuda = s.device.type == "cuda"
    torch._dynamo.reset()
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda
    try:
        models = [build_model(model_name).to(s.device).train() for _ in range(packs)]
        ens = ensemble.VmapEnsemble(models, LR, MOMENTUM, WEIGHT_DECAY, autocast=cuda)
        del models
        tic = time.perf_counter()
        for i, (x, y) in enumerate(_batches(s, s.warmup + s.steps)):
            if i == s.warmup:
                _sync(s.device)
                tic = time.perf_counter()
            ens.step(x, y)
        _sync(s.device)
        return packs * s.steps * s.batch_size / (time.perf_counter() - tic)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def bench_cells(model_name: str, packs: int, epoch_steps: int, epochs: int,
                s: Settings, compile_mode: str = "false") -> list[Config]:
    """K cells of an lr grid on synthetic data of `epoch_steps` batches; decoupled lambda =
    5e-5 = the naive loop's alpha * lambda, so both decay theta by the same amount per step."""
    (base,) = compose.cells([
        "study=bench", f"model={model_name}", "dataset=synthetic",
        f"dataset.train_subset={epoch_steps * s.batch_size}", f"dataset.test_subset={s.batch_size}",
        "optimizer=sgd", f"optimizer.lr={LR!r}", f"optimizer.momentum={MOMENTUM!r}",
        "decay=decoupled", f"decay.weight_decay={LR * WEIGHT_DECAY!r}", "schedule=cosine",
        f"train.epochs={epochs}", f"train.batch_size={s.batch_size}", "train.eval_every=1000000000",
        f"train.device='{s.device}'", "train.checkpoint_every=0", f"train.pack={packs}",
        f"train.compile={compile_mode}", "logger=none", "logger.progress=none"])
    return [dataclasses.replace(base, optimizer=dataclasses.replace(
        base.optimizer, lr=LR * 2.0 ** -(k % 4))) for k in range(packs)]


def harness_images_per_s(model_name: str, packs: int, s: Settings,
                         compile_mode: str = "false") -> float:
    """Images per second of `packs` cells trained by `harness.train.loop.train`: the images
    the live cells trained in the timed epochs (each batch counted once per cell that had a
    record of that epoch), divided by the wall time from the last warm-up epoch's records to
    the last timed epoch's (reading the records syncs the device). One more epoch is
    configured and never run, so the final evaluation falls outside the window."""
    epoch_steps = min(s.warmup, s.steps) if s.warmup else s.steps
    warm, timed = math.ceil(s.warmup / epoch_steps), math.ceil(s.steps / epoch_steps)
    cells = bench_cells(model_name, packs, epoch_steps, warm + timed + 1, s, compile_mode)
    ds = data_mod.load_dataset("synthetic", train_subset=epoch_steps * s.batch_size,
                               test_subset=s.batch_size, device=s.device)
    epochs = train(cells, ds, s.device)
    images, tic, done = 0, time.perf_counter(), 0
    try:
        for done, records in enumerate(epochs, start=1):
            if done <= warm:
                tic = time.perf_counter()
                continue
            images += epoch_steps * s.batch_size * sum(r is not None for r in records)
            if done == warm + timed:
                break
    finally:
        epochs.close()
    if done < warm + timed:
        raise RuntimeError(f"{model_name} K={packs} diverged after {done} epochs")
    return images / (time.perf_counter() - tic)


def _measured(fn: Callable[[], float], device: torch.device) -> tuple[float, float | None]:
    """(fn(), peak GiB allocated during it on CUDA, else None)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rate = fn()
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return rate, peak


def measure_packs(model_name: str, s: Settings, flops: float, peak: float | None, naive: float,
                  measure: Callable[..., float] | None = None,
                  method: str = "harness",
                  on_row: Callable[[Result], None] = lambda row: None) -> list[Result]:
    """One `method` Result per K in s.packs, each passed to `on_row` once measured; the first K
    that runs out of memory (an "oom" row) or raises anything else (a "failed" row, its
    error's first line in `note`: a compile error must not end the bench) ends the list.
    flops: per training image; peak: the device's FLOP/s; naive: the naive loop's images/s."""
    measure = measure or harness_images_per_s  # read when called: a bench test replaces it
    results: list[Result] = []
    for packs in s.packs:
        try:
            rate, memory = _measured(lambda k=packs: measure(model_name, k, s), s.device)
        except Exception as err:  # noqa: BLE001 - every error is a row; Ctrl-C still stops
            status = "oom" if isinstance(err, RuntimeError) and _out_of_memory(err) else "failed"
            results.append(Result(model_name, method, packs, status, None, None, None, None,
                                  note=_one_line(err)))
            on_row(results[-1])
            _log(f"{model_name} {method} K={packs}: {status}: {results[-1].note}; "
                 "not trying larger K")
            break
        results.append(_result(model_name, method, packs, rate, memory, flops, peak, naive))
        on_row(results[-1])
    return results


def _one_line(err: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _out_of_memory(err: RuntimeError) -> bool:
    """CUDA's caching allocator, or cuDNN allocating its workspace, ran out of device memory."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        text in str(err) for text in ("out of memory", "CUDNN_STATUS_ALLOC_FAILED"))


def _result(model: str, method: str, packs: int, rate: float, memory: float | None,
            flops: float, peak: float | None, naive: float, note: str | None = None) -> Result:
    mfu = flops * rate / peak if peak else None
    _log(f"{model} {method} K={packs}: {rate:.1f} images/s")
    return Result(model, method, packs, "ok", rate, memory, mfu, rate / naive, note=note)


def _log(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run_bench(s: Settings) -> dict:
    """Measure every model and K; rewrite the report after every row (a run cut short keeps
    every row it measured) and return it with its summary (see the module docstring)."""
    name, cuda = device_name(s.device), s.device.type == "cuda"
    peak = peak_flops(name) if cuda else None
    flops: dict[str, FlopCount] = {}
    done: list[Result] = []      # the rows of the models finished
    rows: list[Result] = []      # the rows of the model being measured
    convs: list[dict] = []

    def report() -> dict:
        return {
            "device": name, "device_slug": device_slug(name) if cuda else "cpu",
            "torch_version": torch.__version__, "harness_version": harness.__version__,
            "git_sha": git_sha(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "peak_bf16_flops": peak,
            "roofline_images_per_s": {m: roofline(name, m) for m in s.models} if cuda else None,
            "settings": {"models": list(s.models), "packs": list(s.packs), "steps": s.steps,
                         "warmup": s.warmup, "batch_size": s.batch_size,
                         "device": str(s.device), "compile": s.compile},
            "flops_per_image": {m: dataclasses.asdict(f) for m, f in flops.items()},
            "results": [dataclasses.asdict(r) for r in done + rows],
            "conv_microbench": convs}

    def publish(model_rows: list[Result]) -> None:
        rows[:] = model_rows
        current = report()
        _write_json(current, s.out / f"{current['device_slug']}.json")

    for model_name in s.models:
        flops[model_name] = count_flops(model_name)
        measure_model(model_name, s, flops[model_name].training, peak, name, publish)
        done.extend(rows)
        rows.clear()
        measure_convs(model_name, s, convs, lambda: publish([]))
    final = report()
    final["summary"] = bench_summary.summary_lines(final)
    _write_json(final, s.out / f"{final['device_slug']}.json")
    return final


def measure_strong(model_name: str, s: Settings, per_image: float, peak: float | None,
                   add: Callable[[Result], None]) -> float | None:
    """The strong:<config> rows (each passed to `add`), then the strong row, the best of those
    that ran (its `note` names it); returns its rate, None when none ran."""
    best: Result | None = None
    for config in STRONG_CONFIGS:
        method = f"strong:{config}"
        if reason := strong_skip_reason(config, s):
            add(Result(model_name, method, 1, "skipped", None, None, None, None, note=reason))
            continue
        try:
            rate, memory = _measured(lambda c=config: strong_images_per_s(model_name, s, c),
                                     s.device)
        except Exception as err:  # noqa: BLE001 - a failed configuration is a row
            status = "oom" if isinstance(err, RuntimeError) and _out_of_memory(err) else "failed"
            add(Result(model_name, method, 1, status, None, None, None, None,
                       note=_one_line(err)))
            _log(f"{model_name} {method}: {status}: {_one_line(err)}")
            continue
        add(_result(model_name, method, 1, rate, memory, per_image, peak, 1.0))
        if best is None or rate > best.images_per_s:
            best = Result(model_name, "strong", 1, "ok", rate, memory, None, None,
                          note=f"best of {', '.join(STRONG_CONFIGS)}: {method}")
    if best is None:
        add(Result(model_name, "strong", 1, "failed", None, None, None, None,
                   note="no strong configuration ran"))
        return None
    add(_result(model_name, "strong", 1, best.images_per_s, best.peak_memory_gib, per_image,
                peak, 1.0, note=best.note))
    return best.images_per_s


def measure_model(model_name: str, s: Settings, per_image: float, peak: float | None,
                  name: str,
                  publish: Callable[[list[Result]], None] = lambda rows: None) -> list[Result]:
    """The naive, strong:*, strong, harness, vmap (and harness+compile) rows of one model,
    with ratios and roofline fraction; `publish` gets the model's rows after each one is
    measured (ratio_vs_strong is filled in once the strong row is known)."""
    roof = roofline(name, model_name) if s.device.type == "cuda" else None
    rows: list[Result] = []
    ratios = {"naive": None, "strong": None}

    def fill(row: Result) -> Result:
        rate, naive, strong = row.images_per_s, ratios["naive"], ratios["strong"]
        return dataclasses.replace(
            row, ratio_vs_naive=None if rate is None or not naive else rate / naive,
            ratio_vs_strong=None if rate is None or not strong else rate / strong,
            roofline_fraction=None if rate is None or roof is None else rate / roof)

    def add(row: Result | None = None) -> None:
        rows[:] = [fill(r) for r in rows + ([row] if row else [])]
        publish(list(rows))

    try:
        naive, naive_memory = _measured(lambda: naive_images_per_s(model_name, s), s.device)
    except Exception as err:  # noqa: BLE001
        add(Result(model_name, "naive", 1, "failed", None, None, None, None,
                   note=_one_line(err)))
    else:
        ratios["naive"] = naive
        add(_result(model_name, "naive", 1, naive, naive_memory, per_image, peak, naive))
    ratios["strong"] = measure_strong(model_name, s, per_image, peak, add)
    add()  # every row so far again, now with its ratio to the strong row
    naive = ratios["naive"] or math.nan
    measure_packs(model_name, s, per_image, peak, naive, on_row=add)
    measure_packs(model_name, s, per_image, peak, naive, method="vmap",
                  measure=vmap_images_per_s, on_row=add)
    if s.compile:
        measure_packs(model_name, s, per_image, peak, naive, method="harness+compile",
                      measure=lambda m, k, st: harness_images_per_s(m, k, st, "default"),
                      on_row=add)
    return rows


def measure_convs(model_name: str, s: Settings, out: list[dict],
                  publish: Callable[[], None] = lambda: None) -> list[dict]:
    """ensemble.conv_microbench of every grouped conv shape of the model packed K = the
    largest of s.packs, batch s.batch_size; each shape's dict (or, when it raises, its
    `error`) appended to `out` as measured, then `publish()`. Nothing when K is 1 (no grouped
    conv)."""
    packs = max(s.packs)
    if packs == 1:
        return out
    try:
        shapes = ensemble.packed_conv_shapes(build_model(model_name, packs=packs).eval(),
                                              s.batch_size)
    except Exception as err:  # noqa: BLE001 - the bench goes on
        _log(f"{model_name} conv shapes at K={packs}: {_one_line(err)}")
        return out
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = s.device.type == "cuda"
    try:
        for shape in shapes:
            try:
                row = ensemble.conv_microbench(shape, s.device, reps=max(1, min(s.steps, 20)))
            except Exception as err:  # noqa: BLE001
                row = dict(shape, error=_one_line(err))
            out.append(dict(row, model=model_name))
            _log(f"{model_name} conv {shape}: " + (row.get("error") or
                 f"grouped / dense time {row['grouped_over_dense']:.2f}"))
            publish()
    finally:
        torch.backends.cudnn.benchmark = benchmark
    return out


def _write_json(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def format_table(report: dict) -> str:
    """The results as an aligned text table, one row per measurement (a row's note after it),
    then the grouped vs dense conv microbenchmark."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("model", "method", "K", "images/s", "vs naive", "vs strong", "peak GiB", "MFU",
             "roofline")]
    for r in report["results"]:
        rate = r["status"].upper() if r["status"] != "ok" else num(r["images_per_s"], ",.0f")
        rows.append((r["model"], r["method"], str(r["K"]), rate, num(r["ratio_vs_naive"], ".2f"),
                     num(r.get("ratio_vs_strong"), ".2f"), num(r["peak_memory_gib"], ".2f"),
                     num(r["mfu"], ".1%"), num(r.get("roofline_fraction"), ".1%")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    notes = [None] + [r.get("note") for r in report["results"]]
    lines = [line + (f"  {note}" if note else "") for line, note in zip(lines, notes,
                                                                          strict=True)]
    head = f"{report['device']} | torch {report['torch_version']}"
    convs = [f"{c['model']} K={c['K']} conv {c['in_channels'] // c['K']}->"
             f"{c['out_channels'] // c['K']} {c['kernel']}x{c['kernel']}/{c['stride']} at "
             f"{c['size']}px x{c['count']}: " + (c["error"] if "error" in c else
             f"grouped {c['grouped_s'] * 1e3:.2f} ms ({c['grouped_tflops']:.2f} TFLOP/s), "
             f"dense {c['dense_s'] * 1e3:.2f} ms ({c['dense_tflops']:.2f} TFLOP/s), "
             f"grouped/dense {c['grouped_over_dense']:.2f}")
             for c in report.get("conv_microbench", [])]
    conv_head = ["grouped vs dense conv, forward + backward, batch "
                 f"{report.get('settings', {}).get('batch_size')}:"] if convs else []
    return "\n".join([head, lines[0], "-" * len(lines[0]), *lines[1:], *conv_head, *convs])


# --- command line ---------------------------------------------------------------------------

# (models, packs, steps, warmup, batch_size) when not given, by device type or --quick
DEFAULTS = {"cuda": (("resnet20", "shake_shake_26_2x64d"), (1, 4, 16, 64), 50, 10, 128),
            "cpu": (("resnet20",), (1, 4), 10, 5, 64),
            "quick": (("resnet20",), (1, 2), 2, 1, 16)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse adds the usage)
        print(f"harness bench: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _device(value: str) -> torch.device | None:
    """auto -> cuda if available, else cpu; None for a name that is not cpu or an available
    cuda[:N]."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ok = value == "cpu" or (re.fullmatch(r"cuda(:\d+)?", value) and torch.cuda.is_available())
    return torch.device(value) if ok else None


def parse_args(argv: Sequence[str]) -> Settings:
    p = _Parser(prog="python -m harness bench", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, metavar="MODEL",
                   help=f"registry keys: {', '.join(MODELS)}")
    p.add_argument("--packs", nargs="+", type=int, metavar="K", help="e.g. 1 4 16 64")
    p.add_argument("--steps", type=int, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, help="untimed batches before them")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output directory")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--quick", "--dry-run", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure torch.compile'd loops (default: on CUDA only)")
    a = p.parse_args(list(argv))
    for key, low in (("packs", 1), ("steps", 1), ("warmup", 0), ("batch_size", 1)):
        given = getattr(a, key)
        if given is not None and min(given if key == "packs" else [given]) < low:
            p.error(f"--{key.replace('_', '-')} {given} is not valid; give integers >= {low}")
    if (device := _device(a.device)) is None:
        cuda = "cuda[:N]" if torch.cuda.is_available() else "no CUDA device here"
        p.error(f"--device {a.device!r} is not valid; choose auto or cpu ({cuda})")
    models, packs, steps, warmup, batch = DEFAULTS["quick" if a.quick else device.type]
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return Settings(tuple(pick(a.models, models)), tuple(sorted(set(pick(a.packs, packs)))),
                    pick(a.steps, steps), pick(a.warmup, warmup), pick(a.batch_size, batch),
                    device, a.out, pick(a.compile, device.type == "cuda"))


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    report = run_bench(settings)
    print(format_table(report))
    print("\n".join(report["summary"]))
    print(f"wrote {settings.out / (report['device_slug'] + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
