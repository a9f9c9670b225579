"""What every `harness run` checks before a cell is claimed or a folder made: the jobs' configs.

    job configs (Hydra composed them) --cells--> expand (every value) --> models, exclude,
      data (found, readable, or downloaded now), batch sizes, results dirs writable

`check(configs)` is called with every job's config before any job starts: by the sweeper
(`hydra/sweeper=harness`, through `harness.cli.run.Task.check`) for `-m`, and by the callback
`CheckRun.on_run_start` for a single run; both come before Hydra makes a folder. The first
problem raises one `ConfigError` (or `DataError`) line saying what to type instead. A plan
(`run.plan=true`) needs no data and downloads nothing: `check` returns one line per dataset
missing instead, and skips the results dir (a plan writes nothing).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from harness.config import compose
from harness.config.job import Config
from harness.config.validate import ConfigError, check_batch_size, expand
from harness.train import data
from harness.train.models import MODELS


def cells(config: DictConfig) -> list[Config]:
    """One job's cells: its config without the `hydra` node, resolved, expanded and checked."""
    job = copy.deepcopy(config)  # Hydra's own config stays as it is
    with read_write(job), open_dict(job):
        job.pop("hydra", None)
    try:
        raw = OmegaConf.to_container(job, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(compose.explain(err)) from None
    return expand(raw)


def check(configs: list[DictConfig]) -> tuple[list[Config], list[str]]:
    """Every cell of these job configs, checked (ConfigError / DataError: one line), and the
    lines a plan prints for data it lacks."""
    found: dict[str, Config] = {}
    for config in configs:
        found |= {c.run_id: c for c in cells(config)}
    checked = list(found.values())
    _check_models(checked)
    _check_exclude(checked)
    plan = any(c.run.plan for c in checked)
    missing = _check_data(checked, plan)
    if not plan:
        _check_writable(checked)
    return checked, missing


class Refused(BaseException):  # noqa: N818 - like SystemExit: it ends the command
    """Bad input that a Hydra callback found: Hydra turns a callback's Exception into a warning
    and runs the job anyway, so the check leaves through a BaseException (as SystemExit does)
    carrying the one-line error (`args[0]`, a ConfigError or DataError) to `harness run`."""


class CheckRun(Callback):
    """A single run's check (`harness run` without -m), before Hydra makes its run folder. A
    config that sweeps (its hydra.sweeper.params) needs -m."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._check(config)
        except (ConfigError, data.DataError) as err:
            raise Refused(err) from None

    @staticmethod
    def _check(config: DictConfig) -> None:
        params = OmegaConf.select(config, "hydra.sweeper.params")
        if params:
            given = {o.lstrip("+~").split("=", 1)[0] for o in config.hydra.overrides.task}
            study = [f"{k}={v}" for k, v in params.items() if k not in given]
            if study:
                name = f"study {config.study}" if "study" in config else "this config"
                raise ConfigError(f"{name} sweeps {', '.join(study)}: add -m (harness run -m "
                                  f"{' '.join(config.hydra.overrides.task)})")
        _, missing = check([config])
        for line in missing:
            print(f"harness run: plan: data missing: {line}")


def _check_data(cells: list[Config], plan: bool = False) -> list[str]:
    """Each dataset the cells use, once: found, readable, or downloaded now (data.check);
    and no batch larger than its training set. A plan downloads nothing and needs no data:
    it returns one line per dataset missing (what data.check says, how to get it)."""
    sizes, missing = {}, []
    for d in sorted({c.dataset for c in cells}, key=repr):
        try:
            sizes[d] = data.check(d.name, root=d.root, path=d.path,
                                  download=d.download and not plan,
                                  train_subset=d.train_subset, test_subset=d.test_subset,
                                  val_split=d.val_split, val_subset=d.val_subset)
        except data.DataError as err:
            if not plan:
                raise
            fetch = "; dataset.download is true, so the run itself downloads it first" \
                if d.download else ""
            missing.append(f"{err}{fetch}")
    for c in cells:
        if c.dataset in sizes:
            check_batch_size(c.train.batch_size, sizes[c.dataset])
    return list(dict.fromkeys(missing))


def _check_models(cells: list[Config]) -> None:
    """Each model a cell names is a network the registry can build (a YAML of the model group
    without its module, or a name typed in a YAML, ends here in one line)."""
    for name in sorted({c.model.name for c in cells}):
        if name not in MODELS:
            raise ConfigError(f"model={name!r} is not valid; choose one of: "
                              f"{', '.join(sorted(MODELS))}")


def _check_exclude(cells: list[Config]) -> None:
    """Each decay.exclude entry matches a parameter of its cells' model (each model built once,
    on the meta device, only to read its parameters): a kind or pattern that matches nothing
    ends the command in one line naming what it could match."""
    import torch

    from harness.spec.values import SpecError
    from harness.train.models import build_model
    from harness.train.optim import excluded_names

    for name, exclude in sorted({(c.model.name, c.decay.exclude) for c in cells
                                 if c.decay.exclude}):
        try:
            with torch.device("meta"):
                model = build_model(name)
        except Exception:  # noqa: BLE001 - a model that cannot be built fails its cells
            continue
        try:
            excluded_names(model, exclude, f"model={name}")
        except SpecError as err:
            raise ConfigError(str(err)) from None


def _check_writable(cells: list[Config]) -> None:
    """Each study's runs/ folder can be created and written (a results dir that is a file,
    on a read-only file system, or a study name too long for it: one line, before any job).
    What this creates to find out is removed again."""
    for study in sorted({Path(c.run.results_dir).absolute() / c.study for c in cells}):
        runs, made = study / "runs", []
        try:
            for folder in (*reversed(runs.parents), runs):
                try:
                    folder.mkdir()
                    made.append(folder)
                except FileExistsError:
                    if not folder.is_dir():
                        raise ConfigError(f"{folder} is a file, not a folder: remove it or "
                                          "choose another run.results_dir") from None
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=runs)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            hint = ("choose a shorter study name" if err.errno == errno.ENAMETOOLONG else
                    "choose a writable run.results_dir")
            raise ConfigError(f"cannot write {err.filename or runs}: "
                              f"{err.strerror or err}; {hint}") from None
        finally:
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
