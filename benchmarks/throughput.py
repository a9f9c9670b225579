"""`python -m harness bench`: steady-state training throughput, naive loop vs harness vs packs.

On synthetic CIFAR-shaped data (3 x 32 x 32 uint8, 10 classes; speed does not depend on pixel
values), in one process, per model:

    naive    what a user would write: a torch Dataset over the uint8 images with per-sample
             torchvision transforms of PIL images (RandomCrop(32, padding=4), RandomHorizontalFlip,
             ToTensor, Normalize), a DataLoader with workers (pinned memory on CUDA), fp32, eager,
             torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), one model; `steps`
             batches timed after `warmup` batches.
    strong   the strongest single-model loop a careful user writes: data and augmentation on
             the device (harness.train.data's batches), bf16 autocast and channels_last on CUDA,
             fused torch.optim.SGD (foreach on a CPU), torch.compile of the model on CUDA (and
             on a CPU with --compile); one model.
    harness  `harness.train.loop.train` on K cells packed as one wide model (K = 1: the single-cell
             path): data and augmentation on the device, bf16 autocast and channels_last on GPU,
             harness SGD. Epochs of L = min(warmup, steps) batches: ceil(warmup / L) warm-up
             epochs, then ceil(steps / L) timed epochs, timed by the wall clock from the last
             warm-up epoch's records to the last timed epoch's (no evaluation in between).
             K grows along `--packs` until CUDA runs out of memory; that K is recorded with
             status "oom".

`harness+compile` rows: the same with train.compile=default (the compile falls in the warm-up
epochs). Every images_per_s is images trained in the timed window / its wall time, each image
counted once per model that trained on it: one model for naive and strong, the cells alive at
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
    method: str                 # naive | strong | harness | harness+compile
    K: int                      # cells trained at once
    status: str                 # ok | oom
    images_per_s: float | None  # summed over the K cells
    peak_memory_gib: float | None
    mfu: float | None
    ratio_vs_naive: float | None
    ratio_vs_strong: float | None = None
    roofline_fraction: float | None = None


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


def strong_images_per_s(model_name: str, s: Settings) -> float:
    """Images per second of the careful single-model loop (see the module docstring)."""
    cuda = s.device.type == "cuda"
    ds = data_mod.load_dataset("synthetic", train_subset=(s.warmup + s.steps) * s.batch_size,
                               test_subset=s.batch_size, device=s.device)
    model = build_model(model_name).to(s.device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY, **({"fused": True} if cuda else
                                                              {"foreach": True}))
    forward = torch.compile(model) if cuda or s.compile else model
    generator = torch.Generator(device=s.device).manual_seed(0)
    tic = time.perf_counter()
    for i, (x, y) in enumerate(data_mod.train_batches(ds, s.batch_size, generator)):
        if i == s.warmup:
            _sync(s.device)
            tic = time.perf_counter()
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(s.device)
    return s.steps * s.batch_size / (time.perf_counter() - tic)


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
    that runs out of memory ends the list. flops: per training image; peak: the device's
    FLOP/s; naive: the naive loop's images/s."""
    measure = measure or harness_images_per_s  # read when called: a bench test replaces it
    results: list[Result] = []
    for packs in s.packs:
        try:
            rate, memory = _measured(lambda k=packs: measure(model_name, k, s), s.device)
        except RuntimeError as err:
            if not _out_of_memory(err):
                raise
            results.append(Result(model_name, method, packs, "oom", None, None, None, None))
            on_row(results[-1])
            _log(f"{model_name} {method} K={packs}: out of memory; not trying larger K")
            break
        results.append(_result(model_name, method, packs, rate, memory, flops, peak, naive))
        on_row(results[-1])
    return results


def _out_of_memory(err: RuntimeError) -> bool:
    """CUDA's caching allocator, or cuDNN allocating its workspace, ran out of device memory."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        text in str(err) for text in ("out of memory", "CUDNN_STATUS_ALLOC_FAILED"))


def _result(model: str, method: str, packs: int, rate: float, memory: float | None,
            flops: float, peak: float | None, naive: float) -> Result:
    mfu = flops * rate / peak if peak else None
    _log(f"{model} {method} K={packs}: {rate:.1f} images/s")
    return Result(model, method, packs, "ok", rate, memory, mfu, rate / naive)


def _log(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run_bench(s: Settings) -> dict:
    """Measure every model and K; rewrite the report after every row (a run cut short keeps
    every row it measured) and return it (see the module docstring)."""
    name, cuda = device_name(s.device), s.device.type == "cuda"
    peak = peak_flops(name) if cuda else None
    flops: dict[str, FlopCount] = {}
    results: list[Result] = []

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
            "results": [dataclasses.asdict(r) for r in results]}

    def emit(row: Result) -> None:
        results.append(row)
        done = report()
        _write_json(done, s.out / f"{done['device_slug']}.json")

    for model_name in s.models:
        flops[model_name] = count_flops(model_name)
        measure_model(model_name, s, flops[model_name].training, peak, name, emit)
    return report()


def measure_model(model_name: str, s: Settings, per_image: float, peak: float | None,
                  name: str, emit: Callable[[Result], None] = lambda row: None) -> list[Result]:
    """The naive, strong and harness rows of one model, with ratios and roofline fraction;
    `emit` gets each row as soon as it is measured (naive's once strong's is)."""
    roof = roofline(name, model_name) if s.device.type == "cuda" else None
    naive, naive_memory = _measured(lambda: naive_images_per_s(model_name, s), s.device)
    strong, memory = _measured(lambda: strong_images_per_s(model_name, s), s.device)
    rows: list[Result] = []

    def add(row: Result) -> None:
        rows.append(dataclasses.replace(
            row, ratio_vs_strong=None if row.images_per_s is None else row.images_per_s / strong,
            roofline_fraction=None if row.images_per_s is None or roof is None
            else row.images_per_s / roof))
        emit(rows[-1])

    add(_result(model_name, "naive", 1, naive, naive_memory, per_image, peak, naive))
    add(_result(model_name, "strong", 1, strong, memory, per_image, peak, naive))
    measure_packs(model_name, s, per_image, peak, naive, on_row=add)
    if s.compile:
        measure_packs(model_name, s, per_image, peak, naive, method="harness+compile",
                      measure=lambda m, k, st: harness_images_per_s(m, k, st, "default"),
                      on_row=add)
    return rows


def _write_json(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def format_table(report: dict) -> str:
    """The results as an aligned text table, one row per measurement."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("model", "method", "K", "images/s", "vs naive", "vs strong", "peak GiB", "MFU",
             "roofline")]
    for r in report["results"]:
        rate = "OOM" if r["status"] == "oom" else num(r["images_per_s"], ",.0f")
        rows.append((r["model"], r["method"], str(r["K"]), rate, num(r["ratio_vs_naive"], ".2f"),
                     num(r.get("ratio_vs_strong"), ".2f"), num(r["peak_memory_gib"], ".2f"),
                     num(r["mfu"], ".1%"), num(r.get("roofline_fraction"), ".1%")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    head = f"{report['device']} | torch {report['torch_version']}"
    return "\n".join([head, lines[0], "-" * len(lines[0]), *lines[1:]])


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
    print(f"wrote {settings.out / (report['device_slug'] + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
