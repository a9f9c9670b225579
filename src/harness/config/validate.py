"""Validation: the composed Hydra dict becomes one checked `Config` per cell (`expand`).

Data flows one way (docs/DESIGN.md section 2): Hydra composes `configs/` + `experiments/` into a
plain dict, `expand()` turns it into one `Config` per cell (the cross product of the
`optimizer.lr` and `decay.weight_decay` lists) and validates every value. A bad value raises
`ConfigError` with one line naming the key and the valid values.

What a kind allows is checked by its spec, once for the whole harness: an optimizer's
hyperparameters (`harness.spec.optimizer.check`), a schedule's options
(`harness.spec.schedule.check`), the decay (`harness.spec.decay.check`), a dataset's name,
subsets and val_split (`harness.spec.dataset`); their SpecError becomes a ConfigError with the
same line. Checked here: the layout of the dict (unknown and missing keys of a section) and
the keys that are the config's own (train, logger, run, study, seed).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from harness.config.job import (
    Config,
    DatasetConfig,
    DecayConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    RunOptions,
    ScheduleConfig,
    TrainConfig,
)
from harness.spec import dataset, decay, optimizer, schedule
from harness.spec.values import Number, SpecError, as_list, check_keys, flag, one_of

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = ("false", "default", "reduce-overhead", "max-autotune")  # train.compile
WANDB_MODES = ("offline", "online", "disabled")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding and CUDA generators take 32-bit seeds
_COUNT = Number(low=1, integer=True)
_INTEGER = Number(integer=True)  # >= 0


class ConfigError(SpecError):
    """A configuration value is invalid; the message is one line for the user."""


F = TypeVar("F", bound=Callable[..., Any])


def _config_errors(f: F) -> F:
    """A spec's SpecError raised inside `f` leaves it as a ConfigError with the same line."""
    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ConfigError:
            raise
        except SpecError as err:
            raise ConfigError(str(err)) from None
    return checked  # type: ignore[return-value]


def _path(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} is not valid; give a path")
    return value


def _sub(raw: dict[str, Any], section: str, cls: type) -> dict[str, Any]:
    """A section's keys: each field of `cls` must be there, since configs/ gives every value;
    an unknown or a missing key is a ConfigError."""
    given = dict(raw.get(section) or {})
    names = [f.name for f in dataclasses.fields(cls)]
    def shown(key: str) -> str:  # logger.wandb.mode is flattened to logger.wandb_mode here
        return f"{section}.{key}".replace("logger.wandb_", "logger.wandb.")

    valid = ", ".join(sorted(shown(n).split(".", 1)[1] for n in names))
    check_keys(given, names,
               unknown=lambda key: f"{shown(key)} is not a valid key; valid keys: {valid}",
               missing=lambda key: f"{shown(key)} is missing; set {shown(key)}=... (configs/ "
                                   "gives every key)")
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


@_config_errors
def expand(raw: dict[str, Any]) -> list[Config]:
    """Validate a composed config dict and return one Config per (lr, weight_decay) cell."""
    raw = {k: v for k, v in raw.items() if k not in ("hydra", "grid", "panel", "experiment")}
    top = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{key} is not a valid key; valid keys: {', '.join(sorted(top))}")
    opt = dict(raw.get("optimizer") or {})  # name, lr and its own options (_optimizer)
    decay_section = _sub(raw, "decay", DecayConfig)
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
    seed = int(_INTEGER.check("seed", _required(raw, "seed")))
    if seed > SEED_MAX:
        raise ConfigError(f"seed={seed} is not valid; it must be an integer in 0..{SEED_MAX}")
    lrs = [float(optimizer.LR.check("optimizer.lr", x))
           for x in as_list(_required(opt, "lr", "optimizer."))]
    wds = [decay.check(decay_section["mode"], x)[1]
           for x in as_list(_required(decay_section, "weight_decay", "decay."))]
    base_decay = _decay(DecayConfig(**decay_section))
    base_opt = _optimizer(opt, lrs[0])  # validated once; the cells differ only in lr
    cells = [Config(study=study, seed=seed, **sections,
                     optimizer=dataclasses.replace(base_opt, lr=lr),
                     decay=dataclasses.replace(base_decay, weight_decay=wd))
             for lr, wd in itertools.product(lrs, wds)]
    check_batch_size(cells[0].train.batch_size, _n_train(cells[0]))
    schedule.check(cells[0].schedule.name, dict(cells[0].schedule.options),
                   epochs=cells[0].train.epochs)  # milestones inside the run
    return cells


def _dataset(d: DatasetConfig) -> DatasetConfig:
    dataset.get(d.name)
    checked = {"root": _path("dataset.root", d.root), "path": _path("dataset.path", d.path),
               "download": flag("dataset.download", d.download),
               "augment": flag("dataset.augment", d.augment)}
    split = dataset.split(d.name, d.train_subset, d.test_subset, d.val_split, d.val_subset)
    return dataclasses.replace(d, **checked, **split._asdict())


def _optimizer(section: dict[str, Any], lr: float) -> OptimizerConfig:
    name = section.get("name")
    hyper = optimizer.check(name, {k: v for k, v in section.items() if k not in ("name", "lr")})
    return OptimizerConfig(name=name, lr=lr, hyper=tuple(sorted(hyper.items())))


def _decay(d: DecayConfig) -> DecayConfig:
    return dataclasses.replace(d, normalized=flag("decay.normalized", d.normalized),
                               exclude=decay.check_exclude(d.exclude))


def _schedule(section: dict[str, Any]) -> ScheduleConfig:
    name = section.pop("name", None)
    options = schedule.check(name, section)
    return ScheduleConfig(name=name, options=tuple(sorted(options.items())))


@_config_errors
def _train(t: TrainConfig) -> TrainConfig:
    for key in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
        _COUNT.check(f"train.{key}", getattr(t, key))
    _INTEGER.check("train.checkpoint_every", t.checkpoint_every)
    one_of("train.precision", t.precision, PRECISIONS)
    pack = str(t.pack)
    if pack != "auto":
        _COUNT.check("train.pack", pack)
    compile_mode = {False: "false", True: "default"}.get(t.compile, t.compile)
    one_of("train.compile", compile_mode, COMPILE_MODES)
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
    return dataclasses.replace(r, force=flag("run.force", r.force),
                               plan=flag("run.plan", r.plan),
                               worker=int(_INTEGER.check("run.worker", r.worker)))


def _logger(lg: LoggerConfig) -> LoggerConfig:
    one_of("logger.wandb.mode", lg.wandb_mode, WANDB_MODES)
    one_of("logger.progress", lg.progress, ("auto", "bar", "line", "none"))
    return lg


def _n_train(cfg: Config) -> int | None:
    """Training images when known without loading data: the subset less the held-out split."""
    d = cfg.dataset
    return dataset.train_images(d.name, dataset.Split(d.train_subset, d.test_subset,
                                                      d.val_split, d.val_subset))


def check_batch_size(batch_size: int, n_train: int | None) -> None:
    """A batch must fit in the training set (n_train None: not known yet, checked on load)."""
    if n_train is not None and batch_size > n_train:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the training set "
                          f"({n_train} images); choose at most {n_train}")


def planned_images(cfg: Config) -> int | None:
    """Training images one cell will see (epochs x training-set size), when known."""
    n = _n_train(cfg)
    return None if n is None else n * cfg.train.epochs
