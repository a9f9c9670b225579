"""Typed, validated configuration: the composed Hydra dict becomes frozen dataclasses.

Data flows one way (DESIGN.md section 2): Hydra composes `configs/` + `experiments/` into a
plain dict, `expand()` turns it into one `Config` per cell (the cross product of the
`optimizer.lr` and `decay.weight_decay` lists) and validates every value. A bad value raises
`ConfigError` with one line naming the key and the valid values; nothing else in the harness
parses configuration.

Units: `optimizer.lr` is alpha, the base learning rate (lr_t = alpha * eta_t).
`decay.weight_decay` is lambda under the explicit `decay.mode`; when `decay.normalized` is
true it is lambda_norm and the lambda used is lambda_norm * sqrt(b / (B * T)).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = ("false", "default", "reduce-overhead", "max-autotune")  # train.compile
WANDB_MODES = ("offline", "online", "disabled")
# Known training-set sizes, for planning a sweep without loading data.
N_TRAIN = {"cifar10": 50_000, "fashion_mnist": 60_000, "imagenet32": 1_281_167,
           "synthetic": 5_000}


SEED_MAX = 2**32 - 1  # numpy's legacy seeding and CUDA generators take 32-bit seeds


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line for the user."""


def registry(kind: str) -> tuple[str, ...]:
    """The valid keys of `kind`, read from the module that builds them (imported only now, so
    this module stays free of torch; each registry has exactly one home)."""
    import importlib

    module, name = {"optimizer": ("harness.modes", "OPTIMIZERS"),
                    "decay": ("harness.modes", "DECAY_MODES"),
                    "schedule": ("harness.schedules", "SCHEDULES"),
                    "dataset": ("harness.data", "DATASETS"),
                    "model": ("harness.models", "MODELS")}[kind]
    return tuple(getattr(importlib.import_module(module), name))


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "synthetic"
    root: str | None = None          # directory holding the files (None: the loader's default)
    path: str | None = None          # the .npz file for dataset=npz
    download: bool = False
    train_subset: int | None = None  # train on the first n (seeded) training images
    test_subset: int | None = None
    augment: bool = True             # 4-pixel pad + random crop + horizontal flip
    val_split: float = 0.0           # fraction of the training images held out for validation


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small"


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3                     # alpha, the base learning rate
    momentum: float = 0.9                # sgd: heavy ball; rmsprop: 0 by default
    betas: tuple[float, float] = (0.9, 0.999)   # adam
    eps: float = 1e-8                    # adam, rmsprop
    alpha: float = 0.99                  # rmsprop: smoothing of the squared gradient

    def hyper(self) -> dict[str, Any]:
        """The keyword arguments `harness.optim.build_optimizer` takes for this optimizer."""
        if self.name == "sgd":
            return {"momentum": self.momentum}
        if self.name == "adam":
            return {"betas": tuple(self.betas), "eps": self.eps}
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum}


@dataclass(frozen=True)
class DecayConfig:
    mode: str = "decoupled"
    weight_decay: float = 0.0            # lambda (lambda_norm when normalized)
    normalized: bool = False             # paper App. B.1: lambda = lambda_norm*sqrt(b/(B*T))
    exclude: tuple[str, ...] = ()        # fnmatch patterns of parameter names not decayed


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"
    milestones: tuple[int, ...] = (30, 60, 80)  # step: epochs at which lr drops
    factor: float = 0.1                          # step: multiplier per drop
    t_0: int = 100                               # warm_restarts: first period, epochs
    t_mult: int = 2                              # warm_restarts: period growth

    def options(self) -> dict[str, Any]:
        """The keyword arguments `harness.schedules.build_scheduler` takes for this schedule."""
        if self.name == "step":
            return {"milestones": self.milestones, "factor": self.factor}
        if self.name == "warm_restarts":
            return {"t_0": self.t_0, "t_mult": self.t_mult}
        return {}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 128
    eval_every: int = 1                  # evaluate every n epochs (and after the last)
    eval_batch_size: int = 1024
    precision: str = "auto"              # auto: bf16 on GPU, fp32 on CPU
    compile: str = "false"               # torch.compile the train step: false | default |
                                         # reduce-overhead | max-autotune
    device: str = "auto"                 # auto: cuda if available, else cpu
    checkpoint_every: int = 1            # epochs between checkpoints (0: never)
    pack: str = "1"                      # cells trained at once on one device ("auto" or an int)


@dataclass(frozen=True)
class LoggerConfig:
    wandb_mode: str = "offline"          # logger.wandb.mode
    wandb_project: str = "harness"
    wandb_entity: str | None = None
    wandb_dir: str | None = None         # None: <results>/<study>/wandb
    progress: str = "auto"               # auto: a bar on a terminal, a line per epoch otherwise


@dataclass(frozen=True)
class RunOptions:
    results_dir: str = "results"
    force: bool = False                  # retrain cells that already have results
    plan: bool = False                   # print what would run, train nothing
    worker: int = 0                      # jobs differing only in worker share a grid via claims


@dataclass(frozen=True)
class Config:
    """One cell: every hyperparameter a scalar."""

    study: str = "default"
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    decay: DecayConfig = field(default_factory=DecayConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunOptions = field(default_factory=RunOptions)

    @property
    def run_id(self) -> str:
        """Short hash of the canonical config; logging, output and speed options excluded."""
        return hashlib.sha256(canonical_json(self).encode()).hexdigest()[:12]


# Keys that do not change what a cell computes, so they are not part of its identity.
_NOT_IDENTITY = {"logger", "run", "dataset.root", "dataset.download", "train.device",
                 "train.compile", "train.checkpoint_every", "train.pack", "train.eval_batch_size"}


# Keys added after studies were committed: left out of the identity while at these defaults,
# so the run_id of every earlier cell (and its committed parquet file) still holds.
_ADDED_LATER = {"dataset.val_split": 0.0}


def canonical_json(cfg: Config) -> str:
    """The identity-relevant part of a cell's config as sorted JSON."""
    d = dataclasses.asdict(cfg)
    for key, default in _ADDED_LATER.items():
        section, name = key.split(".")
        if d[section][name] == default:
            del d[section][name]
    for key in _NOT_IDENTITY:
        parts = key.split(".")
        parent = d
        for p in parts[:-1]:
            parent = parent[p]
        parent.pop(parts[-1], None)
    return json.dumps(d, sort_keys=True, default=list)


def _one_of(key: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    return value


def _number(key: str, value: Any, *, low: float = 0.0, integer: bool = False,
            strict: bool = False) -> Any:
    what = "an integer" if integer else "a number"
    bound = f"> {low:g}" if strict else f">= {low:g}"
    try:
        x = int(value) if integer else float(value)
        ok = (not integer or float(value) == int(value)) and math.isfinite(x)
    except (TypeError, ValueError):
        ok = False
    if not ok or (x <= low if strict else x < low):
        raise ConfigError(f"{key}={value!r} is not valid; it must be {what} {bound}")
    return x


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not valid; type {key}=true or {key}=false")
    return value


def _optional_int(key: str, value: Any) -> int | None:
    return None if value is None else int(_number(key, value, low=1, integer=True))


def _path(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} is not valid; give a path")
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _sub(raw: dict[str, Any], section: str, cls: type) -> dict[str, Any]:
    """Keep a section's known keys; an unknown key is a ConfigError naming the valid ones."""
    given = dict(raw.get(section) or {})
    names = {f.name for f in dataclasses.fields(cls)}
    for key in given:
        if key not in names:
            raise ConfigError(f"{section}.{key} is not a valid key; valid keys: "
                              f"{', '.join(sorted(names))}")
    return given


def _required(section: dict[str, Any], key: str, prefix: str = "") -> Any:
    """section[key]: configs/ gives every value, so a missing one is an error, not a fallback."""
    if section.get(key) is None:
        raise ConfigError(f"{prefix}{key} is missing; set {prefix}{key}=...")
    return section[key]


def _flatten_logger(raw: dict[str, Any]) -> dict[str, Any]:
    logger = dict(raw.get("logger") or {})
    wandb = dict(logger.pop("wandb", None) or {})
    for key, value in wandb.items():
        logger[f"wandb_{key}"] = value
    return logger


def expand(raw: dict[str, Any]) -> list[Config]:
    """Validate a composed config dict and return one Config per (lr, weight_decay) cell."""
    raw = {k: v for k, v in raw.items() if k not in ("hydra", "grid", "panel", "experiment")}
    top = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{key} is not a valid key; valid keys: {', '.join(sorted(top))}")
    opt = _sub(raw, "optimizer", OptimizerConfig)
    decay = _sub(raw, "decay", DecayConfig)
    sections = {
        "dataset": DatasetConfig(**_sub(raw, "dataset", DatasetConfig)),
        "model": ModelConfig(**_sub(raw, "model", ModelConfig)),
        "schedule": _schedule(ScheduleConfig(**_sub(raw, "schedule", ScheduleConfig))),
        "train": _train(TrainConfig(**_sub(raw, "train", TrainConfig))),
        "logger": _logger(LoggerConfig(**_sub({"logger": _flatten_logger(raw)}, "logger",
                                              LoggerConfig))),
        "run": _run(RunOptions(**_sub(raw, "run", RunOptions))),
    }
    sections["dataset"] = _dataset(sections["dataset"])
    _one_of("model", sections["model"].name, registry("model"))
    study = str(_required(raw, "study"))
    if not study or "/" in study or study.startswith("."):
        raise ConfigError(f"study={study!r} is not valid; use a plain name like fig2_lite")
    seed = int(_number("seed", _required(raw, "seed"), integer=True))
    if seed > SEED_MAX:
        raise ConfigError(f"seed={seed} is not valid; it must be an integer in 0..{SEED_MAX}")
    lrs = [_number("optimizer.lr", x, strict=True)
           for x in _as_list(_required(opt, "lr", "optimizer."))]
    wds = [_number("decay.weight_decay", x)
           for x in _as_list(_required(decay, "weight_decay", "decay."))]
    del opt["lr"], decay["weight_decay"]
    base_opt = _optimizer(OptimizerConfig(**opt))
    base_decay = _decay(DecayConfig(**decay))
    cells = [Config(study=study, seed=seed, **sections,
                     optimizer=dataclasses.replace(base_opt, lr=lr),
                     decay=dataclasses.replace(base_decay, weight_decay=wd))
             for lr, wd in itertools.product(lrs, wds)]
    _check_batch_size(cells[0])
    _check_milestones(cells[0])
    return cells


def _dataset(d: DatasetConfig) -> DatasetConfig:
    _one_of("dataset", d.name, registry("dataset"))
    return dataclasses.replace(
        d, root=_path("dataset.root", d.root), path=_path("dataset.path", d.path),
        download=_bool("dataset.download", d.download),
        augment=_bool("dataset.augment", d.augment),
        train_subset=_optional_int("dataset.train_subset", d.train_subset),
        test_subset=_optional_int("dataset.test_subset", d.test_subset),
        val_split=_val_split(d.val_split))


def _val_split(value: Any) -> float:
    fraction = _number("dataset.val_split", value)
    if fraction >= 1:
        raise ConfigError(f"dataset.val_split={value!r} is not valid; give a fraction in [0, 1), "
                          "e.g. dataset.val_split=0.1")
    return fraction


def _optimizer(o: OptimizerConfig) -> OptimizerConfig:
    _one_of("optimizer", o.name, registry("optimizer"))
    betas = tuple(float(b) for b in _as_list(o.betas))
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optimizer.betas={list(betas)} is not valid; "
                          "give two numbers in [0, 1)")
    _number("optimizer.eps", o.eps, strict=True)
    momentum = _number("optimizer.momentum", o.momentum)
    if momentum >= 1:
        raise ConfigError(f"optimizer.momentum={momentum} is not valid; it must be in [0, 1)")
    return dataclasses.replace(o, betas=betas, momentum=momentum, alpha=float(o.alpha))


def _decay(d: DecayConfig) -> DecayConfig:
    _one_of("decay", d.mode, registry("decay"))
    return dataclasses.replace(d, normalized=_bool("decay.normalized", d.normalized),
                               exclude=tuple(str(p) for p in _as_list(d.exclude or ())))


def _schedule(s: ScheduleConfig) -> ScheduleConfig:
    _one_of("schedule", s.name, registry("schedule"))
    milestones = tuple(int(_number("schedule.milestones", m, low=1, integer=True))
                       for m in _as_list(s.milestones))
    if list(milestones) != sorted(set(milestones)):
        raise ConfigError(f"schedule.milestones={list(milestones)} is not valid; give "
                          "increasing epochs, e.g. schedule.milestones=[30,60,80]")
    return dataclasses.replace(
        s, milestones=milestones, factor=_number("schedule.factor", s.factor, strict=True),
        t_0=int(_number("schedule.t_0", s.t_0, low=1, integer=True)),
        t_mult=int(_number("schedule.t_mult", s.t_mult, low=1, integer=True)))


def _train(t: TrainConfig) -> TrainConfig:
    for key in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
        _number(f"train.{key}", getattr(t, key), low=1, integer=True)
    _number("train.checkpoint_every", t.checkpoint_every, integer=True)
    _one_of("train.precision", t.precision, PRECISIONS)
    pack = str(t.pack)
    if pack != "auto":
        _number("train.pack", pack, low=1, integer=True)
    compile_mode = {False: "false", True: "default"}.get(t.compile, t.compile)
    _one_of("train.compile", compile_mode, COMPILE_MODES)
    if compile_mode != "false" and t.precision == "fp16":
        raise ConfigError("train.compile needs train.precision auto, bf16 or fp32 (fp16's "
                          "GradScaler reads the device every step); choose train.compile=false")
    if t.device != "auto" and not t.device.startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"train.device={t.device!r} is not valid; choose auto, cpu or cuda[:N]")
    return dataclasses.replace(t, epochs=int(t.epochs), batch_size=int(t.batch_size),
                               eval_every=int(t.eval_every), pack=pack, compile=compile_mode)


def _run(r: RunOptions) -> RunOptions:
    if not isinstance(r.results_dir, str) or not r.results_dir:
        raise ConfigError(f"run.results_dir={r.results_dir!r} is not valid; give a directory")
    return dataclasses.replace(r, force=_bool("run.force", r.force),
                               plan=_bool("run.plan", r.plan),
                               worker=int(_number("run.worker", r.worker, integer=True)))


def _logger(lg: LoggerConfig) -> LoggerConfig:
    _one_of("logger.wandb.mode", lg.wandb_mode, WANDB_MODES)
    _one_of("logger.progress", lg.progress, ("auto", "bar", "line", "none"))
    return lg


def _n_train(cfg: Config) -> int | None:
    """Training images when known without loading data: the subset less the held-out split."""
    n = cfg.dataset.train_subset or N_TRAIN.get(cfg.dataset.name)
    return None if n is None else n - round(cfg.dataset.val_split * n)


def _check_batch_size(cfg: Config) -> None:
    n = _n_train(cfg)
    if n is not None and cfg.train.batch_size > n:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the training "
                          f"set ({n} images); choose at most {n}")


def _check_milestones(cfg: Config) -> None:
    """Step milestones must lie inside the run: 0 < m < train.epochs (a drop at the last
    epoch or later never happens), as harness.schedules requires."""
    s, epochs = cfg.schedule, cfg.train.epochs
    if s.name != "step" or all(0 < m < epochs for m in s.milestones):
        return
    fit = sorted({min(epochs - 1, max(1, round(m * epochs / max(s.milestones))))
                  for m in s.milestones})
    hint = (f"e.g. schedule.milestones=[{','.join(map(str, fit))}]" if epochs > 1
            else "or schedule=constant")
    raise ConfigError(f"schedule.milestones={list(s.milestones)} has epochs outside the run "
                      f"(train.epochs={epochs}); give milestones in 1..{epochs - 1}, {hint}")


def planned_images(cfg: Config) -> int | None:
    """Training images one cell will see (epochs x training-set size), when known."""
    n = _n_train(cfg)
    return None if n is None else n * cfg.train.epochs
