"""The only Hydra entry: `harness run <overrides>` trains every cell it is given.

    argv --Hydra's own parser--> compose.validate (every cell) --> data.check (each dataset)
         --> Hydra (single run or -m sweep, any launcher) --> _task(cfg)
         --> config.expand(cfg): one Config per (lr, weight_decay) --> cells.run_cells(...)

Hydra's command line works as Hydra documents it (`--help`, `--cfg job|hydra`, `--info`, `-m`,
`--config-name`, `--config-dir`, `-sc install=bash`); those that only show something go straight
to Hydra. Before a run, every configuration is composed and validated and every dataset is
checked once, so bad input or missing data ends the command with one line (exit 2) and
nothing is written. Each Hydra job, on whichever launcher, writes its cells' outcomes into
this command's ledger directory (`$HARNESS_OUTCOMES`, under the results dir, removed at the
end); `main` prints the summary of exactly those cells and exits 1 only if one failed.

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
import functools
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from harness.config import compose
from harness.config.job import Config
from harness.config.validate import ConfigError, check_batch_size, expand, planned_images
from harness.train import data
from harness.train.models import MODELS

if TYPE_CHECKING:
    from harness.sweep.recorder import WandbMirror

LEDGER = "HARNESS_OUTCOMES"  # environment variable: where jobs write their outcomes
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


def _task(cfg: DictConfig, mirror: WandbMirror | None = None) -> dict[str, str]:
    from harness.sweep.cells import run_cells

    raw = OmegaConf.to_container(cfg, resolve=True)
    cells = expand(raw)
    with _in_launch_dir():
        outcomes = run_cells(cells, mirror)
    images = sum(planned_images(c) or 0 for c in cells if outcomes[c.run_id] == "planned")
    ledger = os.environ.get(LEDGER)
    if ledger:
        job = Path(ledger) / uuid.uuid4().hex
        job.with_suffix(".tmp").write_text(json.dumps({"outcomes": outcomes, "images": images}))
        os.replace(job.with_suffix(".tmp"), job.with_suffix(".json"))
    return outcomes


def _hydra(args: argparse.Namespace, parser: argparse.ArgumentParser,
           task: Callable[[DictConfig], dict[str, str]] = _task) -> None:
    """Hand the parsed command line to Hydra, as `@hydra.main` does with sys.argv."""
    from hydra._internal.utils import _run_hydra

    compose.register()
    _run_hydra(args=args, args_parser=parser, task_function=task,
               config_path=compose.config_path(), config_name=compose.CONFIG_NAME)


def summarize(outcomes: dict[str, str]) -> str:
    counts = Counter(outcomes.values())
    order = ("completed", "diverged", "failed", "skipped", "claimed", "planned", "done")
    parts = [f"{counts[k]} {k}" for k in order if counts[k]]
    return f"{len(outcomes)} cells: " + (", ".join(parts) or "none")


def _output_dirs(overrides: list[str], plan: bool) -> list[str]:
    """Per-command Hydra output folders (two commands started in one second never share one),
    unless the command line sets them; a plan runs in this process."""
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}"
    extra = [f"hydra.run.dir=outputs/${{study}}/run-{stamp}",
             f"hydra.sweep.dir=outputs/${{study}}/sweep-{stamp}"]
    extra += ["hydra/launcher=basic"] if plan else []
    given = {o.lstrip("+").split("=", 1)[0] for o in overrides}
    return [e for e in extra if e.split("=", 1)[0] not in given]


def _check_data(cells: list[Config]) -> None:
    """Each dataset the cells use, once: found, readable, or downloaded now (data.check);
    and no batch larger than its training set."""
    sizes = {d: data.check(d.name, root=d.root, path=d.path, download=d.download,
                           train_subset=d.train_subset, test_subset=d.test_subset,
                           val_split=d.val_split)
             for d in {c.dataset for c in cells}}
    for c in cells:
        check_batch_size(c.train.batch_size, sizes[c.dataset])


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


def _collect(ledger: Path) -> tuple[dict[str, str], int]:
    outcomes: dict[str, str] = {}
    images = 0
    for path in sorted(ledger.glob("*.json")):
        job = json.loads(path.read_text())
        outcomes |= job["outcomes"]
        images += job["images"]
    return outcomes, images


def _launch(args: argparse.Namespace, parser: argparse.ArgumentParser,
            cells: list[Config]) -> tuple[dict[str, str], int]:
    """Run Hydra with a fresh ledger under the results dir; the outcomes of its jobs."""
    from harness.sweep.recorder import WandbMirror

    results = Path(cells[0].run.results_dir).absolute()
    existed = results.exists()
    ledger = results / ".outcomes" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    ledger.mkdir(parents=True)
    os.environ[LEDGER] = str(ledger)  # launchers pass the environment on to their jobs
    # one W&B mirror for every job Hydra runs in this process (a launcher's job elsewhere gets
    # a copy): the first failure to reach W&B holds for the rest of the command
    task = functools.wraps(_task)(functools.partial(_task, mirror=WandbMirror()))
    try:
        _hydra(args, parser, task)
        return _collect(ledger)
    finally:
        del os.environ[LEDGER]
        shutil.rmtree(ledger, ignore_errors=True)
        for empty in (ledger.parent, results) if not existed else (ledger.parent,):
            try:
                empty.rmdir()
            except OSError:
                pass


def main(argv: list[str]) -> int:
    """`harness run [Hydra flags] [overrides]`; returns the exit code."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog = "harness run"
    args = parser.parse_intermixed_args(argv)  # flags may follow overrides
    if any(getattr(args, flag) for flag in SHOW_ONLY):
        _hydra(args, parser)
        return 0
    plan = any(o.lower() in ("run.plan=true", "+run.plan=true") for o in args.overrides)
    try:
        cells = compose.validate(args)
        _check_models(cells)
        _check_exclude(cells)
        _check_data(cells)
    except (ConfigError, data.DataError) as err:
        print(f"harness run: error: {err}", file=sys.stderr)
        return 2
    args.overrides = [*args.overrides, *_output_dirs(args.overrides, plan)]
    try:
        outcomes, images = _launch(args, parser, cells)
    except ConfigError as err:  # e.g. a batch larger than an npz training set
        print(f"harness run: error: {err}", file=sys.stderr)
        return 2
    print(f"harness run: {summarize(outcomes)}")
    if plan:
        print(f"harness run: plan: {len(outcomes)} cells, "
              f"{sum(o == 'done' for o in outcomes.values())} done, {images:,} images to train")
    return 1 if "failed" in outcomes.values() else 0
