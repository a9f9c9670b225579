"""Step time of harness optimizers vs torch's foreach optimizers on ResNet-18-sized params.

The param list has the 62 tensor shapes of a CIFAR ResNet-18 (11.2M params: convs, BatchNorm
weights and biases, the classifier). Every contender gets its own copy of the params and shares
one set of fixed random gradients; steps are timed one at a time, interleaved across
contenders (round r times every contender once, starting one further along), after warmup.
The table gives the median wall-clock and CPU (process) time per step and their ratios to the
torch reference of the same family; on a loaded machine the CPU-time ratio is the steadier.
Harness optimizers get eta_t = 1 as the train loop passes it: a 0-dim tensor on the device.

    .venv/bin/python benchmarks/bench_optim.py              # CPU, 1 thread: about 10-20 s
    .venv/bin/python benchmarks/bench_optim.py --threads 0  # torch's default thread count
    .venv/bin/python benchmarks/bench_optim.py --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from harness.config import compose
from harness.train.optim import build_optimizer

LR_ADAM, LR_SGD, WEIGHT_DECAY = 1e-3, 0.1, 5e-4
Step = Callable[[], object]  # one optimizer step


def resnet18_shapes(num_classes: int = 10) -> list[tuple[int, ...]]:
    """Parameter shapes of a CIFAR ResNet-18 (3x3 stem, 4 stages of 2 basic blocks)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    in_c = 64
    for out_c, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            shapes += [(out_c, in_c, 3, 3), (out_c,), (out_c,)]
            shapes += [(out_c, out_c, 3, 3), (out_c,), (out_c,)]
            if block == 0 and (stride != 1 or in_c != out_c):
                shapes += [(out_c, in_c, 1, 1), (out_c,), (out_c,)]
            in_c = out_c
    return shapes + [(num_classes, 512), (num_classes,)]


def _ours(params: list[Tensor], optimizer: str, decay: str, lr: float,
          weight_decay: float) -> Step:
    """The step of harness.train.optim with the hyperparameters of
    configs/optimizer/<optimizer>.yaml (equal to the torch references' defaults: sgd momentum
    0.9 as given to torch.optim.SGD below), at eta_t = 1 on the params' device."""
    (cfg,) = compose.cells([f"optimizer={optimizer}"])
    opt = build_optimizer(params, optimizer, decay, lr, weight_decay, **dict(cfg.optimizer.hyper))
    return functools.partial(opt.step, eta=torch.ones((), dtype=torch.float64,
                                                      device=params[0].device))


CONTENDERS: dict[str, tuple[str, Callable[[list[Tensor]], Step]]] = {
    # name: (reference row for the ratio, factory of the step)
    "torch AdamW foreach": ("torch AdamW foreach", lambda p: torch.optim.AdamW(
        p, LR_ADAM, weight_decay=WEIGHT_DECAY, foreach=True).step),
    "harness adam/decoupled_lr": ("torch AdamW foreach", lambda p: _ours(
        p, "adam", "decoupled_lr", LR_ADAM, WEIGHT_DECAY)),
    "harness adam/decoupled": ("torch AdamW foreach", lambda p: _ours(
        p, "adam", "decoupled", LR_ADAM, WEIGHT_DECAY * LR_ADAM)),
    "torch Adam(wd) foreach": ("torch Adam(wd) foreach", lambda p: torch.optim.Adam(
        p, LR_ADAM, weight_decay=WEIGHT_DECAY, foreach=True).step),
    "harness adam/l2": ("torch Adam(wd) foreach", lambda p: _ours(
        p, "adam", "l2", LR_ADAM, WEIGHT_DECAY)),
    "torch SGD foreach": ("torch SGD foreach", lambda p: torch.optim.SGD(
        p, LR_SGD, momentum=0.9, weight_decay=WEIGHT_DECAY, foreach=True).step),
    "harness sgd/decoupled": ("torch SGD foreach", lambda p: _ours(
        p, "sgd", "decoupled", LR_SGD, WEIGHT_DECAY * LR_SGD)),
    "harness sgd/l2": ("torch SGD foreach", lambda p: _ours(
        p, "sgd", "l2", LR_SGD, WEIGHT_DECAY)),
    "torch RMSprop(wd) foreach": ("torch RMSprop(wd) foreach", lambda p: torch.optim.RMSprop(
        p, LR_ADAM, weight_decay=WEIGHT_DECAY, foreach=True).step),
    "harness rmsprop/l2": ("torch RMSprop(wd) foreach", lambda p: _ours(
        p, "rmsprop", "l2", LR_ADAM, WEIGHT_DECAY)),
}


def bench(steps: int, warmup: int, device: str) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per optimizer step for every contender."""
    gen = torch.Generator().manual_seed(0)
    shapes = resnet18_shapes()
    init = [torch.randn(s, generator=gen).to(device) * 0.05 for s in shapes]
    grads = [torch.randn(s, generator=gen).to(device) * 0.01 for s in shapes]
    steppers = {}
    for name, (_, factory) in CONTENDERS.items():
        params = [t.clone().requires_grad_() for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        steppers[name] = factory(params)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steppers}
    names = list(steppers)
    for r in range(warmup + steps):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            step = steppers[name]
            if device == "cuda":
                torch.cuda.synchronize()
            start, cpu = time.perf_counter(), time.process_time()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            if r >= warmup:
                times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return {
        name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
        for name, ts in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (0: torch's default). 1 by default: on a loaded "
                             "machine a second thread spins at barriers and inflates times")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = sum(torch.Size(s).numel() for s in resnet18_shapes())
    print(f"{len(resnet18_shapes())} tensors, {n / 1e6:.2f}M params, float32, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps after {args.warmup} warmup")
    medians = bench(args.steps, args.warmup, args.device)
    print(f"{'optimizer':27s} {'wall ms':>8s} {'ratio':>6s} {'cpu ms':>8s} {'ratio':>6s}  "
          "reference")
    for name, (ref, _) in CONTENDERS.items():
        (wall, cpu), (ref_wall, ref_cpu) = medians[name], medians[ref]
        print(f"{name:27s} {wall * 1e3:8.1f} {wall / ref_wall:6.2f} {cpu * 1e3:8.1f} "
              f"{cpu / ref_cpu:6.2f}  {ref}")


if __name__ == "__main__":
    main()
