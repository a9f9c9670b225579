"""A cell's configuration and its identity: frozen dataclasses and `run_id`.

One `Config` is one cell: every hyperparameter a scalar, each group's own options (those
`harness.spec.optimizer.HYPERPARAMETERS` and `harness.spec.schedule.OPTIONS` name) inside its
section. `harness.config.validate.expand` builds them from the composed Hydra dict and checks
every value; nothing else in the harness parses configuration. Every default lives in the YAML
of `configs/` and nowhere else: the dataclasses have none.

A cell is identified by `run_id`, the hash of `canonical_json`: its identity-relevant keys in
the layout the first committed studies had, so run_ids never change under a refactor
(tests/config/test_config.py finds every committed cell's parquet file).

Units: `optimizer.lr` is alpha, the base learning rate (lr_t = alpha * eta_t).
`decay.weight_decay` is lambda under the explicit `decay.mode`; when `decay.normalized` is
true it is lambda_norm and the lambda used is lambda_norm * sqrt(b / (B * T)).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

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
    val_subset: int | None     # or: validate on n (seeded) training images outside the subset


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
    exclude: tuple[str, ...]   # not decayed: kinds (norm, bias) or fnmatch name patterns


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
_ADDED_LATER = {"dataset.val_split": 0.0, "dataset.val_subset": None,
                "optimizer.dampening": 0.0, "optimizer.nesterov": False}


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
