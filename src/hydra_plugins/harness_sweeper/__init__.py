"""`hydra/sweeper=harness`: Hydra's sweeper for `harness run -m`, through Hydra's public plugin API.

    overrides (the command line's, then the config's hydra.sweeper.params it does not set)
      --expand--> one override list per job (the cartesian product, as Hydra's basic sweeper)
      --compose--> each job's config (hydra_context.config_loader.load_sweep_config)
      --task.check(configs)--> every job checked before any is launched or any folder made
      --launcher.launch(batch)--> JobReturns --task.collect(returns)--> the task's summary

The task is the object `hydra.main` was given (`harness.cli.run.Task`); Hydra hands it to
`setup` as `task_function`. Its `check` raises on bad input (nothing launched, nothing
written) and `collect` receives each batch's returns, from whichever launcher (submitit's come
back from other processes); a launcher that fails is one line from the task
(`collect(batch, error=...)`), and the sweep goes on with the next batch. A task without these
methods is swept as Hydra's basic sweeper sweeps it.

Hydra finds plugins only in the `hydra_plugins` namespace (Plugins refuses others), so this
module lives there; it imports nothing of the harness. No `from __future__ import annotations`:
Hydra's plugin scan runs this module outside sys.modules, where a dataclass cannot resolve
string annotations.
"""

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.HarnessSweeper"
    # OmegaConf reads these annotations: typing's Optional, not `X | None`
    max_batch_size: Optional[int] = None     # jobs per launch (None: all at once)  # noqa: UP045
    params: Optional[dict[str, str]] = None  # a study's own sweep: key -> "v1,v2"   # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf,
                             provider="harness")


def jobs(arguments: list[str], params: dict[str, str] | None = None) -> list[list[str]]:
    """One override list per job: `params` (the config's sweep) first, each key given again in
    `arguments` taken from there, then the cartesian product of every key's values."""
    words = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(words):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            raise HydraException(f"{override.input_line}: the harness sweeper sweeps lists of "
                                 "values and range(); an interval has no values to list")
    return [list(job) for job in itertools.product(*choices.values())]


class HarnessSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None) -> None:
        super().__init__()
        if max_batch_size is not None and max_batch_size < 1:
            raise HydraException(f"hydra.sweeper.max_batch_size={max_batch_size} is not "
                                 "valid; give a positive number of jobs, or null for all")
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.task: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        assert self.config is not None and self.hydra_context is not None
        assert self.launcher is not None
        overrides = jobs(arguments, self.params)
        configs = [self.hydra_context.config_loader.load_sweep_config(self.config, job)
                   for job in overrides]
        check = getattr(self.task, "check", None)
        if check is not None:
            check(configs)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or len(overrides) or 1
        collect = getattr(self.task, "collect", None)
        returns = []
        for start in range(0, len(overrides), size):
            batch = overrides[start:start + size]
            if collect is None:
                returns.append(self.launcher.launch(batch, initial_job_idx=start))
                continue
            try:
                done = self.launcher.launch(batch, initial_job_idx=start)
            except Exception as err:  # noqa: BLE001 - e.g. a submitit job that died
                collect(configs[start:start + size], error=err)
                continue
            collect(configs[start:start + size], returns=done)
            returns.append(done)
        return returns
