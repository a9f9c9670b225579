"""The only Hydra entry: `harness run [Hydra flags] <overrides>` trains every cell it is given.

    argv --> hydra.main (Hydra's parser; its flags first, then the overrides)
      single run:  CheckRun.on_run_start(cfg) --> Task(cfg)
      -m sweep:    hydra_plugins.harness_sweeper: compose every job --> Task.check(configs)
                   --> any launcher --> Task(cfg) in each job --> Task.collect(returns)
    Task(cfg): config.expand(cfg), one Config per (lr, weight_decay) --> cells.run_cells(...)

Hydra's command line works as Hydra documents it (`--help`, `--cfg job|hydra`, `--info`, `-m`,
`--config-name`, `--config-dir`, `-sc install=bash`); `--config-path` is relative to the
directory the command starts in. Before a job starts, every job's configuration is composed
and checked (harness.cli.checks: values, models, decay.exclude, data, batch sizes, writable
results), so bad input, missing data or a results dir that cannot be written ends the command
with one line (exit 2) and nothing is written: Hydra's errors come back as exceptions (its
documented HYDRA_FULL_ERROR=1, set for the call) and become one line (compose.explain). A
plan (`run.plan=true`) needs no data, downloads nothing and writes nothing (its Hydra folders
live in a temporary folder): it prints the plan, and a line per dataset missing saying how to
get it, and exits 0. The outcomes of the cells come back as the jobs' return values (from
whichever launcher) to the one `Task` of this command, which prints the summary of exactly the
cells checked, each the strongest outcome any job saw (cli/outcomes.py), and exits 1 if one
failed or went unreported. SIGINT or SIGTERM in this process (its jobs on the basic launcher
included) ends it with one line, exit 130 / 143: the cells' checkpoints stay for the rerun.

Relative paths (run.results_dir, dataset.root, dataset.path, logger.wandb.dir, the ./data
searched for datasets) mean the directory the command was started in, whatever
`hydra.job.chdir`, `hydra.run.dir` or `hydra.sweep.dir` say: each job trains its cells in
Hydra's original working directory (`hydra.runtime.cwd`, which every launcher's job carries:
submitit composes a job's config from the launching one's), not in its job folder. Nothing is
rewritten, so a cell's run_id (which hashes dataset.path as typed) is the same with or
without chdir, and a second command finds the cells of the first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import stops
from harness.cli import checks
from harness.cli import outcomes as merged
from harness.config import compose
from harness.config.job import Config
from harness.config.validate import ConfigError, expand, planned_images
from harness.sweep.mirror import WandbMirror
from harness.train import data

# Hydra 1.3's flags that take a value (`harness run --help`; tests/cli/test_cli.py holds this
# against Hydra's parser); --info takes one of INFO, or none.
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--experimental-rerun")
INFO = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
HYDRA_FLAGS_WITH_PATH = ("--config-path", "-cp", "--config-dir", "-cd")
PLAN = ("run.plan=true", "+run.plan=true", "++run.plan=true")


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


class Task:
    """The function Hydra runs for each job (the object given to `hydra.main`), and what one
    `harness run` learns from its jobs: every cell checked (`expected`), the strongest outcome
    any job reported for each, the images a plan would train, and a line per job whose
    outcomes never came back (`lost`). It is pickled to jobs that a launcher runs elsewhere;
    their returns come back through the sweeper's `collect`."""

    def __init__(self) -> None:
        self.mirror = WandbMirror()  # one per command: W&B's first failure holds for the rest
        self.expected: list[str] = []
        self.outcomes: dict[str, str] = {}
        self.images = 0
        self.lost: list[str] = []

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        """Train one job's cells; its report: {"outcomes": {run_id: outcome}, "images": n}."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from harness.sweep.cells import run_cells

        cells = expand(OmegaConf.to_container(cfg, resolve=True))
        with _in_launch_dir():
            outcomes = run_cells(cells, self.mirror)
        images = sum(planned_images(c) or 0 for c in cells if outcomes[c.run_id] == "planned")
        report = {"outcomes": outcomes, "images": images}
        if HydraConfig.get().mode == RunMode.RUN:  # no sweeper: this job is the command
            self.expected = list(outcomes)
            self._add(report)
        return report

    def check(self, configs: list[DictConfig]) -> None:
        """The sweeper's check of every job before any is launched (checks.check)."""
        cells, missing = checks.check(configs)
        self.expected = [c.run_id for c in cells]
        for line in missing:
            print(f"harness run: plan: data missing: {line}")

    def collect(self, configs: Sequence[DictConfig], returns: Sequence[Any] = (),
                error: BaseException | None = None) -> None:
        """One batch of jobs came back (`returns`, JobReturns) or its launcher failed."""
        if error is not None:
            self.lost.append(f"the launcher lost {len(configs)} jobs: {_line(error)}")
        for job in returns:
            try:
                self._add(job.return_value)  # a failed job raises its exception here
            except Exception as err:  # noqa: BLE001 - one line for the summary
                self.lost.append(f"a job failed: {_line(err)}")

    def _add(self, report: dict[str, Any]) -> None:
        merged.merge(self.outcomes, report["outcomes"])
        self.images += report["images"]

    def summary(self) -> dict[str, str]:
        """Each checked cell's outcome; a cell no job reported is `unrecorded`."""
        return {run_id: self.outcomes.get(run_id, "unrecorded") for run_id in self.expected} \
            | self.outcomes


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _output_dirs(plan: str | None) -> list[str]:
    """A plan runs in this process, its Hydra folders in the temporary folder `plan` (removed
    after: a plan writes nothing), whatever the command says. A run's folders are
    configs/config.yaml's hydra.run.dir / hydra.sweep.dir (one per command, `${pid:}`), which a
    config file or the command line may set."""
    if plan is None:
        return []
    return [f"hydra.run.dir={plan}/run", f"hydra.sweep.dir={plan}/sweep",
            "hydra.output_subdir=null", "hydra/launcher=basic"]


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (each with its value) and the overrides, each in the order typed. Hydra's
    parser takes its flags before or after the overrides but not between them, and the harness
    adds overrides of its own: the flags go first."""
    flags: list[str] = []
    overrides: list[str] = []
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):  # an override: key=value, +key=, ++key=, ~key
            overrides.append(word)
            continue
        flags.append(word)
        if word in HYDRA_VALUE_FLAGS:
            flags.extend(itertools.islice(words, 1))
        elif word in ("--info", "-i"):
            value = next(words, None)
            if value in INFO:
                flags.append(value)
            elif value is not None:
                overrides.append(value)
    return flags, overrides


def _paths(argv: list[str]) -> list[str]:
    """argv with the folder after --config-path / --config-dir absolute (Hydra reads a relative
    --config-path from its caller's file; here it means the cwd's); one line if not a folder."""
    argv = list(argv)
    for i, word in enumerate(argv):
        flag, eq, value = word.partition("=")
        if flag not in HYDRA_FLAGS_WITH_PATH or not (eq or i + 1 < len(argv)):
            continue
        given = value if eq else argv[i + 1]
        if flag in ("--config-path", "-cp"):
            path = compose.primary_path(given)
        elif not os.path.isdir(path := os.path.abspath(os.path.expanduser(given))):
            raise ConfigError(f"--config-dir {given} is not a directory; give a folder "
                              "holding your YAML files (e.g. DIR/experiment/mine.yaml)")
        if eq:
            argv[i] = f"{flag}={path}"
        else:
            argv[i + 1] = path
    return argv


@contextlib.contextmanager
def _as_hydra_command(argv: list[str]) -> Iterator[None]:
    """sys.argv as hydra.main reads it, and Hydra's errors raised, not printed (its documented
    HYDRA_FULL_ERROR), while inside; the sweeper and the packaged studies registered."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.harness_sweeper import HarnessSweeper

    compose.register()
    Plugins.instance().register(HarnessSweeper)  # found without scanning hydra_plugins
    saved = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [sys.argv[0], *argv]  # argv[0]: the command, as Hydra's completion names it
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved[1]


def _bad_input(err: Exception) -> int:
    """One line and exit 2; but an error raised while a signal's exception unwound through
    Hydra or OmegaConf (whose cleanup can raise over it) is that signal's, not bad input."""
    stops.check()
    print(f"harness run: error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    """`harness run [Hydra flags] [overrides]`; returns the exit code: 0, 1 (a cell failed or
    went unreported), 2 (bad input, nothing run), 130 / 143 (SIGINT / SIGTERM: one line; the
    checkpoints stay, the same command resumes)."""
    return stops.guarded("harness run", lambda: _main(argv))


def _hydra(flags: list[str], words: list[str], task: Task, scratch: str | None = None) -> None:
    """hydra.main with `task` as its job, on Hydra's flags, the overrides and the harness's
    own (its sweeper and run check; a plan's folders in `scratch`). Bad input raises one
    ConfigError or DataError line, before any job starts; Hydra's --help and argparse's
    errors leave through SystemExit."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    multirun = "-m" in flags or "--multirun" in flags
    flags = _paths(flags)
    compose.check_words(words)
    harness_hydra = ["hydra/sweeper=harness",
                     "++hydra.callbacks.harness_checks._target_=harness.cli.checks.CheckRun"]
    try:
        with _as_hydra_command([*flags, *words, *harness_hydra, *_output_dirs(scratch)]):
            hydra.main(config_path=compose.config_path(), config_name=compose.CONFIG_NAME,
                       version_base=None)(task)()
    except checks.Refused as refused:  # a single run's check (checks.CheckRun)
        raise refused.args[0] from None
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(compose.explain(err, words, multirun)) from None


class _Composed(BaseException):  # noqa: N818 - ends a sweep at its check, as SystemExit ends
    """The cells every job of `cells_of`'s sweep composes."""


class _Composing(Task):
    """A task whose sweep stops at its check with the cells composed: none launched, no data
    or results dir looked at."""

    def check(self, configs: list[DictConfig]) -> None:
        raise _Composed(list({c.run_id: c for config in configs
                              for c in checks.cells(config)}.values()))


def cells_of(argv: list[str]) -> list[Config]:
    """The cells `harness run -m argv` names, composed and expanded as a run composes them
    (hydra.main and its sweeper), none trained and no data looked at: a study's size
    (benchmarks/bench_summary.py), its run_ids (the pinned-ids test). Bad input raises the
    one line the run would print (ConfigError)."""
    flags, words = _split(argv)
    if "-m" not in flags and "--multirun" not in flags:
        flags = ["-m", *flags]
    try:
        _hydra(flags, words, _Composing())
    except _Composed as composed:
        return composed.args[0]
    raise ConfigError(f"harness run {' '.join(argv)} composes no cells (it only shows "
                      "something: --cfg, --info, --help)")


def _main(argv: list[str]) -> int:
    flags, words = _split(argv)
    plan = any(w.lower() in PLAN for w in words)
    scratch = tempfile.mkdtemp(prefix="harness-plan-") if plan else None
    task = Task()
    try:
        _hydra(flags, words, task, scratch)
    except SystemExit as done:  # Hydra's --help, an argparse error
        return done.code if isinstance(done.code, int) else 1
    except (ConfigError, data.DataError) as err:
        return _bad_input(err)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if not task.expected and not task.outcomes:  # only showed something (--cfg, --info, -sc)
        return 0
    outcomes = task.summary()
    for line in task.lost:
        print(f"harness run: error: {line}", file=sys.stderr)
    print(f"harness run: {merged.summarize(outcomes)}")
    if plan or any(o in ("planned", "done") for o in outcomes.values()):
        print(f"harness run: plan: {len(outcomes)} cells, "
              f"{sum(o == 'done' for o in outcomes.values())} done, "
              f"{task.images:,} images to train")
    return 1 if task.lost or merged.failed(outcomes) else 0
