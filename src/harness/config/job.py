"""Typed, validated configuration: the composed Hydra dict becomes frozen dataclasses.

Data flows one way (docs/DESIGN.md section 2): Hydra composes `configs/` + `experiments/` into a
plain dict, `expand()` turns it into one `Config` per cell (the cross product of the
`optimizer.lr` and `decay.weight_decay` lists) and validates every value. A bad value raises
`ConfigError` with one line naming the key and the valid values; nothing else in the harness
parses configuration. Every default lives in the YAML of `configs/` and nowhere else: the
dataclasses have none, and each optimizer and schedule carries only its own options (those
`harness.spec.optimizer.HYPERPARAMETERS` and `harness.spec.schedule.OPTIONS` name).

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
from dataclasses import dataclass
from typing import Any

from harness.spec.dataset import DATASETS, SIZES
from harness.spec.decay import DECAY_MODES
from harness.spec.optimizer import HYPERPARAMETERS, OPTIMIZERS
from harness.spec.schedule import OPTIONS, SCHEDULES

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = ("false", "default", "reduce-overhead", "max-autotune")  # train.compile
WANDB_MODES = ("offline", "online", "disabled")


SEED_MAX = 2**32 - 1  # numpy's legacy seeding and CUDA generators take 32-bit seeds


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line for the user."""


Options = tuple[tuple[str, Any], ...]  # a group's own keys and values, sorted (frozen, hashable)


# No field has a default: configs/ gives every value (its YAML is their one home), and a key
# it lacks is a ConfigError. Build a Config with `harness.config.compose.cells(overrides)`.
@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str | None           # directory holding the files (None: the loader's search)
    path: str | None           # the .npz file for dataset=npz
    download: bool
    train_subset: int | None   # train on the first n (seeded) training images
    test_subset: int | None
    augment: bool              # 4-pixel pad + random crop + horizontal flip
    val_split: float           # fraction of the training images held out for validation


@dataclass(frozen=True)
class ModelConfig:
    name: str


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    lr: float                  # alpha, the base learning rate
    hyper: Options             # its own hyperparameters (harness.spec.optimizer)


@dataclass(frozen=True)
class DecayConfig:
    mode: str
    weight_decay: float        # lambda (lambda_norm when normalized)
    normalized: bool           # paper App. B.1: lambda = lambda_norm*sqrt(b/(B*T))
    exclude: tuple[str, ...]   # fnmatch patterns of parameter names not decayed


@dataclass(frozen=True)
class ScheduleConfig:
    name: str
    options: Options           # its own keys, harness.spec.schedule.OPTIONS[name] (step:
                               # milestones, factor; warm_restarts: t_0, t_mult)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    eval_every: int            # evaluate every n epochs (and after the last)
    eval_batch_size: int
    precision: str             # auto: bf16 on GPU, fp32 on CPU
    compile: str               # torch.compile the train step: false | default |
                               # reduce-overhead | max-autotune
    device: str                # auto: cuda if available, else cpu
    checkpoint_every: int      # epochs between checkpoints (0: never)
    pack: str                  # cells trained at once on one device ("auto" or an int)


@dataclass(frozen=True)
class LoggerConfig:
    wandb_mode: str            # logger.wandb.mode
    wandb_project: str
    wandb_entity: str | None
    wandb_dir: str | None      # None: <results>/<study>/wandb
    progress: str              # auto: a bar on a terminal, a line per epoch otherwise


@dataclass(frozen=True)
class RunOptions:
    results_dir: str
    force: bool                # retrain cells that already have results
    plan: bool                 # print what would run, train nothing
    worker: int                # jobs differing only in worker share a grid via claims


@dataclass(frozen=True)
class Config:
    """One cell: every hyperparameter a scalar."""

    study: str
    seed: int
    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    decay: DecayConfig
    schedule: ScheduleConfig
    train: TrainConfig
    logger: LoggerConfig
    run: RunOptions

    @property
    def run_id(self) -> str:
        """Short hash of the canonical config; logging, output and speed options excluded."""
        return hashlib.sha256(canonical_json(self).encode()).hexdigest()[:12]


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested dicts, each group's own options inside its section (as in YAML)."""
    d = dataclasses.asdict(cfg)
    d["optimizer"] = {"name": cfg.optimizer.name, "lr": cfg.optimizer.lr,
                      **dict(cfg.optimizer.hyper)}
    d["schedule"] = {"name": cfg.schedule.name, **dict(cfg.schedule.options)}
    return d


# Keys that do not change what a cell computes, so they are not part of its identity.
_NOT_IDENTITY = {"logger", "run", "dataset.root", "dataset.download", "train.device",
                 "train.compile", "train.checkpoint_every", "train.pack", "train.eval_batch_size"}

# The run_id hashes the layout the first committed studies had: an optimizer section with the
# keys of every optimizer and a schedule section with the keys of every schedule. A key that
# the cell's optimizer or schedule does not take is hashed at the value it held then. These
# are not defaults (no cell trains with them); they keep every committed run_id what it was.
# (One study moved: `restarts` set t_0 = 10 for its cosine cells too, which they never used;
# those cells now hash t_0 = 100. No results of it were committed.)
_UNUSED_IN_ID = {
    "optimizer": {"momentum": 0.9, "betas": [0.9, 0.999], "eps": 1e-8, "alpha": 0.99},
    "schedule": {"milestones": [30, 60, 80], "factor": 0.1, "t_0": 100, "t_mult": 2},
}

# Keys added after studies were committed: left out of the identity while at these values,
# so the run_id of every earlier cell (and its committed parquet file) still holds.
_ADDED_LATER = {"dataset.val_split": 0.0, "optimizer.dampening": 0.0,
                "optimizer.nesterov": False}


def canonical_json(cfg: Config) -> str:
    """The identity-relevant part of a cell's config as sorted JSON."""
    d = to_dict(cfg)
    for section, unused in _UNUSED_IN_ID.items():
        d[section] = unused | d[section]
    for key, value in _ADDED_LATER.items():
        section, name = key.split(".")
        given = d[section].get(name)
        if type(given) is type(value) and given == value:
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
    """A section's keys: each field of `cls` must be there, since configs/ gives every value;
    an unknown or a missing key is a ConfigError."""
    given = dict(raw.get(section) or {})
    names = [f.name for f in dataclasses.fields(cls)]
    def shown(key: str) -> str:  # logger.wandb.mode is flattened to logger.wandb_mode here
        return f"{section}.{key}".replace("logger.wandb_", "logger.wandb.")

    for key in given:
        if key not in names:
            raise ConfigError(f"{shown(key)} is not a valid key; valid keys: "
                              f"{', '.join(sorted(shown(n).split('.', 1)[1] for n in names))}")
    for key in names:
        if key not in given:
            raise ConfigError(f"{shown(key)} is missing; set {shown(key)}=... (configs/ gives "
                              "every key)")
    return given


def _own_options(group: str, name: str, given: dict[str, Any],
                 valid: tuple[str, ...]) -> Options:
    """The options of `group`=`name` (e.g. optimizer=adam: betas, eps), each one given and
    checked; a key `name` does not take is a ConfigError naming those it takes."""
    takes = ", ".join(valid) or "no options"
    for key in given:
        if key not in valid:
            raise ConfigError(f"{group}.{key} is not an option of {group}={name}; it takes: "
                              f"{takes}")
    for key in valid:
        if key not in given:
            raise ConfigError(f"{group}.{key} is missing; {group}={name} takes {takes} "
                              f"(each file in configs/{group}/ gives them)")
    return tuple(sorted((key, _option(f"{group}.{key}", given[key])) for key in valid))


def _option(key: str, value: Any) -> Any:
    """One optimizer or schedule option, checked and normalized by its name."""
    name = key.split(".")[-1]
    if name in ("momentum", "dampening", "alpha"):
        x = _number(key, value)
        if x >= 1:
            raise ConfigError(f"{key}={value!r} is not valid; it must be in [0, 1)")
        return x
    if name == "eps":
        return _number(key, value, strict=True)
    if name == "factor":
        x = _number(key, value, strict=True)
        if x > 1:
            raise ConfigError(f"{key}={value!r} is not valid; it must be in (0, 1]")
        return x
    if name == "nesterov":
        return _bool(key, value)
    if name == "betas":
        betas = tuple(_number(key, b) for b in _as_list(value))
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"{key}={list(betas)} is not valid; give two numbers in [0, 1)")
        return betas
    if name == "milestones":
        ms = tuple(int(_number(key, m, low=1, integer=True)) for m in _as_list(value))
        if list(ms) != sorted(set(ms)):
            raise ConfigError(f"{key}={list(ms)} is not valid; give increasing epochs, "
                              f"e.g. {key}=[30,60,80]")
        return ms
    if name in ("t_0", "t_mult"):
        return int(_number(key, value, low=1, integer=True))
    return value


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
    opt = dict(raw.get("optimizer") or {})  # name, lr and its own options (_optimizer)
    decay = _sub(raw, "decay", DecayConfig)
    sections = {
        "dataset": _dataset(DatasetConfig(**_sub(raw, "dataset", DatasetConfig))),
        "model": ModelConfig(**_sub(raw, "model", ModelConfig)),
        "schedule": _schedule(dict(raw.get("schedule") or {})),
        "train": _train(TrainConfig(**_sub(raw, "train", TrainConfig))),
        "logger": _logger(LoggerConfig(**_sub({"logger": _flatten_logger(raw)}, "logger",
                                              LoggerConfig))),
        "run": _run(RunOptions(**_sub(raw, "run", RunOptions))),
    }
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
    base_decay = _decay(DecayConfig(**decay))
    base_opt = _optimizer(opt, lrs[0])  # validated once; the cells differ only in lr
    cells = [Config(study=study, seed=seed, **sections,
                     optimizer=dataclasses.replace(base_opt, lr=lr),
                     decay=dataclasses.replace(base_decay, weight_decay=wd))
             for lr, wd in itertools.product(lrs, wds)]
    check_batch_size(cells[0].train.batch_size, _n_train(cells[0]))
    _check_milestones(cells[0])
    return cells


def _dataset(d: DatasetConfig) -> DatasetConfig:
    _one_of("dataset", d.name, DATASETS)
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


def _optimizer(section: dict[str, Any], lr: float) -> OptimizerConfig:
    name = _one_of("optimizer", section.get("name"), OPTIMIZERS)
    given = {k: v for k, v in section.items() if k not in ("name", "lr")}
    hyper = _own_options("optimizer", name, given, HYPERPARAMETERS[name])
    h = dict(hyper)
    if h.get("nesterov") and (h["momentum"] <= 0 or h["dampening"] != 0):
        raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0 and "
                          "optimizer.dampening=0; or type optimizer.nesterov=false")
    return OptimizerConfig(name=name, lr=lr, hyper=hyper)


def _decay(d: DecayConfig) -> DecayConfig:
    _one_of("decay", d.mode, DECAY_MODES)
    return dataclasses.replace(d, normalized=_bool("decay.normalized", d.normalized),
                               exclude=tuple(str(p) for p in _as_list(d.exclude or ())))


def _schedule(section: dict[str, Any]) -> ScheduleConfig:
    name = _one_of("schedule", section.pop("name", None), SCHEDULES)
    return ScheduleConfig(name=name, options=_own_options(
        "schedule", name, section, OPTIONS[name]))


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
    n = cfg.dataset.train_subset or SIZES.get(cfg.dataset.name, (None, None))[0]
    return None if n is None else n - round(cfg.dataset.val_split * n)


def check_batch_size(batch_size: int, n_train: int | None) -> None:
    """A batch must fit in the training set (n_train None: not known yet, checked on load)."""
    if n_train is not None and batch_size > n_train:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the training set "
                          f"({n_train} images); choose at most {n_train}")


def _check_milestones(cfg: Config) -> None:
    """Step milestones must lie inside the run: 0 < m < train.epochs (a drop at the last
    epoch or later never happens), as harness.train.schedules requires."""
    if cfg.schedule.name != "step":
        return
    milestones, epochs = dict(cfg.schedule.options)["milestones"], cfg.train.epochs
    if all(0 < m < epochs for m in milestones):
        return
    fit = sorted({min(epochs - 1, max(1, round(m * epochs / max(milestones))))
                  for m in milestones})
    hint = (f"e.g. schedule.milestones=[{','.join(map(str, fit))}]" if epochs > 1
            else "or schedule=constant")
    raise ConfigError(f"schedule.milestones={list(milestones)} has epochs outside the run "
                      f"(train.epochs={epochs}); give milestones in 1..{epochs - 1}, {hint}")


def planned_images(cfg: Config) -> int | None:
    """Training images one cell will see (epochs x training-set size), when known."""
    n = _n_train(cfg)
    return None if n is None else n * cfg.train.epochs
