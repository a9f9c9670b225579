"""The only Hydra entry: `harness run <overrides>` trains every cell it is given.

    argv --Hydra's own parser--> compose.validate (every cell) --> data.check (each dataset)
         --> Hydra (single run or -m sweep, any launcher) --> _task(cfg)
         --> config.expand(cfg): one Config per (lr, weight_decay) --> cells.run_cells(...)

Hydra's command line works as Hydra documents it (`--help`, `--cfg job|hydra`, `--info`, `-m`,
`--config-name`, `--config-dir`, `-sc install=bash`); those that only show something go straight
to Hydra. Before a run, every configuration is composed and validated and every dataset is checked
once, and (unless it is a plan) each study's folder is found writable, so bad input, missing
data or a results dir that cannot be written ends the command with one line (exit 2) and
nothing is written. A plan (`run.plan=true`) needs no data, downloads nothing and writes
nothing (its Hydra folders live in a temporary folder): it prints the plan, then a line per
dataset missing saying how to get it, and exits 0. Each Hydra job, on whichever launcher,
writes its cells' outcomes into this command's ledger directory (`$HARNESS_OUTCOMES`, under the
results dir, removed at the end; cli/outcomes.py); `main` prints the summary of exactly those
cells, each the strongest outcome any job saw, and exits 1 if one failed or went unrecorded.
SIGINT or SIGTERM in this process (its jobs on the basic launcher included) ends it with one
line, exit 130 / 143: the cells' checkpoints stay for the rerun, the ledger goes.

Relative paths (run.results_dir, dataset.root, dataset.path, logger.wandb.dir, the ./data
searched for datasets) mean the directory the command was started in, whatever
`hydra.job.chdir`, `hydra.run.dir` or `hydra.sweep.dir` say: each job trains its cells in
Hydra's original working directory (`hydra.runtime.cwd`, which every launcher's job carries:
submitit composes a job's config from the launching one's), not in its job folder. Nothing is
rewritten, so a cell's run_id (which hashes dataset.path as typed) is the same with or
without chdir, and a second command finds the cells of the first.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from harness import stops
from harness.cli import outcomes as ledger
from harness.config import compose
from harness.config.job import Config
from harness.config.validate import ConfigError, check_batch_size, expand, planned_images
from harness.train import data
from harness.train.models import MODELS

if TYPE_CHECKING:
    from harness.sweep.recorder import WandbMirror

SHOW_ONLY = ("help", "hydra_help", "cfg", "info", "shell_completion")


@contextlib.contextmanager
def _in_launch_dir() -> Iterator[None]:
    """Work in the directory `harness run` was started in (Hydra's original cwd) while inside,
    back in the job's own folder (hydra.job.chdir) after; outside a Hydra job, stay here."""
    from hydra.core.hydra_config import HydraConfig

    here = os.getcwd()
    launch = HydraConfig.get().runtime.cwd if HydraConfig.initialized() else here
    if launch == here:
        yield
        return
    try:
        os.chdir(launch)
    except OSError as err:  # e.g. a cluster node that does not mount the launch directory
        raise ConfigError(f"this job runs in {here} and cannot enter {launch}, the directory "
                          "harness run was started in, where its relative paths (results, "
                          f"data) are: {err.strerror}; start it from a shared directory") from None
    try:
        yield
    finally:
        os.chdir(here)


def _task(cfg: DictConfig, mirror: WandbMirror | None = None,
          unwritten: list[dict[str, str]] | None = None) -> dict[str, str]:
    from harness.sweep.cells import run_cells

    raw = OmegaConf.to_container(cfg, resolve=True)
    cells = expand(raw)
    with _in_launch_dir():
        outcomes = run_cells(cells, mirror)
    images = sum(planned_images(c) or 0 for c in cells if outcomes[c.run_id] == "planned")
    ledger.write(outcomes, images, [] if unwritten is None else unwritten)
    return outcomes


def _hydra(args: argparse.Namespace, parser: argparse.ArgumentParser,
           task: Callable[[DictConfig], dict[str, str]] = _task) -> None:
    """Hand the parsed command line to Hydra, as `@hydra.main` does with sys.argv."""
    from hydra._internal.utils import _run_hydra

    compose.register()
    _run_hydra(args=args, args_parser=parser, task_function=task,
               config_path=compose.primary_path(args.config_path),
               config_name=compose.CONFIG_NAME)


def _output_dirs(plan: str | None) -> list[str]:
    """A plan runs in this process, its Hydra folders in the temporary folder `plan` (removed
    after: a plan writes nothing), whatever the command says. A run's folders are
    configs/config.yaml's hydra.run.dir / hydra.sweep.dir (one per command, `${pid:}`), which a
    config file or the command line may set."""
    if plan is None:
        return []
    return [f"hydra.run.dir={plan}/run", f"hydra.sweep.dir={plan}/sweep",
            "hydra.output_subdir=null", "hydra/launcher=basic"]


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


def _launch(args: argparse.Namespace, parser: argparse.ArgumentParser,
            cells: list[Config], plan: bool) -> tuple[dict[str, str], int, bool]:
    """Run Hydra with a fresh ledger under the results dir (a plan's, which writes nothing
    there, in a temporary folder); the outcomes of its jobs (outcomes.collect). Whatever ends
    it (a signal too), the ledger goes, and the results dir if this made it and it is empty."""
    from harness.sweep.recorder import WandbMirror

    results = Path(cells[0].run.results_dir).absolute()
    existed = results.exists()
    if plan:
        ledger_dir = Path(tempfile.mkdtemp(prefix="harness-outcomes-"))
    else:
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        ledger_dir = results / ".outcomes" / stamp
        try:
            ledger_dir.mkdir(parents=True)
        except OSError as err:
            raise ConfigError(f"cannot create {ledger_dir}: {err.strerror or err}") from None
    os.environ[ledger.LEDGER] = str(ledger_dir)  # launchers pass the environment to their jobs
    # one W&B mirror and one list of unwritten outcomes for every job Hydra runs in this
    # process (a launcher's job elsewhere gets copies): the first failure to reach W&B holds
    # for the rest of the command, and outcomes a full disk kept out of the ledger still count
    unwritten: list[dict[str, str]] = []
    task = functools.wraps(_task)(functools.partial(_task, mirror=WandbMirror(),
                                                    unwritten=unwritten))
    try:
        _hydra(args, parser, task)
        return ledger.collect(ledger_dir, [c.run_id for c in cells], unwritten)
    finally:
        del os.environ[ledger.LEDGER]
        shutil.rmtree(ledger_dir, ignore_errors=True)
        empty = [] if plan else [ledger_dir.parent] + ([] if existed else [results])
        for folder in empty:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _bad_input(err: Exception) -> int:
    """One line and exit 2; but an error raised while a signal's exception unwound through
    Hydra or OmegaConf (whose cleanup can raise over it) is that signal's, not bad input."""
    stops.check()
    print(f"harness run: error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    """`harness run [Hydra flags] [overrides]`; returns the exit code: 0, 1 (a cell failed or
    went unrecorded), 2 (bad input, nothing run), 130 / 143 (SIGINT / SIGTERM: one line; the
    checkpoints stay, the same command resumes)."""
    return stops.guarded("harness run", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog = "harness run"
    args = parser.parse_intermixed_args(argv)  # flags may follow overrides
    try:  # Hydra reads a relative --config-path from its caller's file; here it is the cwd's
        args.config_path = args.config_path and compose.primary_path(args.config_path)
    except ConfigError as err:
        return _bad_input(err)
    if any(getattr(args, flag) for flag in SHOW_ONLY):
        _hydra(args, parser)
        return 0
    plan = any(o.lower() in ("run.plan=true", "+run.plan=true") for o in args.overrides)
    try:
        cells = compose.validate(args)
        _check_models(cells)
        _check_exclude(cells)
        plan = plan or any(c.run.plan for c in cells)
        missing = _check_data(cells, plan)
        if not plan:
            _check_writable(cells)
    except (ConfigError, data.DataError) as err:
        return _bad_input(err)
    scratch = tempfile.mkdtemp(prefix="harness-plan-") if plan else None
    args.overrides = [*args.overrides, *_output_dirs(scratch)]
    try:
        outcomes, images, lost = _launch(args, parser, cells, plan)
    except ConfigError as err:  # e.g. a batch larger than an npz training set
        return _bad_input(err)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"harness run: {ledger.summarize(outcomes)}")
    if plan:
        print(f"harness run: plan: {len(outcomes)} cells, "
              f"{sum(o == 'done' for o in outcomes.values())} done, {images:,} images to train")
        for line in missing:
            print(f"harness run: plan: data missing: {line}")
    return 1 if lost or ledger.failed(outcomes) else 0
