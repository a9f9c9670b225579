"""The packaged configs for Hydra, and composition errors as one line.

Configs ship inside the package: `configs/` is the package `harness.configs` and
`experiments/` is `harness.experiments` (pyproject.toml maps both folders), so an installed
wheel and an editable checkout read the same files through importlib.resources. Hydra reads
`configs/` as its primary config path (`pkg://harness.configs`); each study in
`experiments/` is stored in Hydra's ConfigStore as the group `experiment` (a global package,
like `# @package _global_`), so `+experiment=demo` works without a folder or symlink named
`experiment`. A user's own configs and studies come in the usual Hydra way:
`--config-dir DIR` (DIR/experiment/mine.yaml is `+experiment=mine`) or `hydra.searchpath`.

Only Hydra's public interface is used: `harness run` composes through `hydra.main` (and its
sweeper, hydra_plugins/harness_sweeper), and `cells(overrides)` through the Compose API. Any
composition error becomes one line (`explain`) that says what to type instead.
"""

from __future__ import annotations

import importlib.util
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from harness.config.job import Config
from harness.config.validate import ConfigError, expand

CONFIG_NAME = "config"
LIST_KEYS = ("optimizer.lr", "decay.weight_decay", "decay.exclude", "optimizer.betas",
             "schedule.milestones")


def _pow2(low: Any, high: Any) -> ListConfig:
    """${pow2:a,b} -> [2^a, 2^(a+1), ..., 2^b], as a ListConfig: a node OmegaConf can hold once
    resolved in place (`harness run --cfg job --resolve`), where a plain list is refused."""
    return OmegaConf.create([2.0 ** k for k in range(int(low), int(high) + 1)])


def _source_tree(folder: str) -> Path:
    """configs/ or experiments/ beside src/: a checkout on PYTHONPATH that was never installed."""
    import harness

    return Path(harness.__file__).resolve().parents[2] / folder


def config_path() -> str:
    """Hydra's primary config path: the installed package harness.configs."""
    if importlib.util.find_spec("harness.configs") is not None:
        return "pkg://harness.configs"
    return str(_source_tree("configs"))


def _experiments() -> Any:
    if importlib.util.find_spec("harness.experiments") is not None:
        return files("harness.experiments")
    return _source_tree("experiments")


def register() -> None:
    """The ${pow2:a,b} and ${pid:} resolvers, and the packaged studies as the ConfigStore
    group `experiment`."""
    if not OmegaConf.has_resolver("pow2"):
        OmegaConf.register_new_resolver("pow2", _pow2)
    if not OmegaConf.has_resolver("pid"):  # ${pid:}: the launching process, for output folders
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)
    store = ConfigStore.instance()
    for study in sorted(_experiments().iterdir(), key=lambda p: p.name):
        if study.name.endswith(".yaml"):
            store.store(group="experiment", name=study.name.removesuffix(".yaml"),
                        node=OmegaConf.create(study.read_text()), package="_global_",
                        provider="harness.experiments")


def studies() -> list[str]:
    """Names of the packaged studies (experiments/*.yaml)."""
    return sorted(p.name.removesuffix(".yaml") for p in _experiments().iterdir()
                  if p.name.endswith(".yaml"))


def primary_path(given: str) -> str:
    """Hydra's primary config path for `--config-path given` (absolute, or relative to the
    directory the command starts in); a ConfigError if `given` is not a directory."""
    path = os.path.abspath(os.path.expanduser(given))
    if not os.path.isdir(path):
        raise ConfigError(f"--config-path {given} is not a directory; give the folder holding "
                          "your primary config (config.yaml, or name it with --config-name), "
                          "or add a folder to the packaged configs with --config-dir")
    return path


def explain(err: Exception, overrides: list[str] | None = None, multirun: bool = True) -> str:
    """One line out of a Hydra or OmegaConf composition error, from the exception's fields:
    the valid options of a group, the valid keys beside a key that is not one, or how to run a
    sweep; else the first line of its message."""
    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for e in chain:
        if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
            group, _, option = e.missing_cfg_file.rpartition("/")
            return f"{group}={option} is not valid; choose one of: {', '.join(e.options)}"
    for e in chain:
        key, parent = getattr(e, "full_key", None), getattr(e, "parent_node", None)
        if isinstance(e, (ConfigAttributeError, ConfigKeyError)) and key and \
                isinstance(parent, DictConfig):
            where = str(key).rpartition(".")[0]
            valid = ", ".join(sorted(str(k) for k in parent if k not in ("hydra", "grid")))
            return f"{key} is not a valid key; valid keys{f' of {where}' if where else ''}: {valid}"
    sweeps = [] if multirun else _sweeps(overrides or [])
    return sweeps[0] if sweeps else str(err).strip().splitlines()[0]


def _sweeps(overrides: list[str]) -> list[str]:
    """What to type for each override that is a sweep, in a command without -m."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra's own message says which
        return []
    lines = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            as_list = (f", or type {key}=[{o.input_line.split('=', 1)[1]}] for one run with a "
                       "list" if key.lstrip("+") in LIST_KEYS else "")
            lines.append(f"{o.input_line} is a sweep: add -m to run one job per value{as_list}")
    return lines


def check_words(overrides: list[str]) -> None:
    """Mistakes visible in the words themselves, before Hydra parses them: what to type."""
    for word in overrides:
        key, eq, value = word.partition("=")
        if eq and key == "experiment":
            raise ConfigError(f"{word}: experiment is not in the default config; type "
                              f"+experiment={value} (with the +)")
        if eq and value.startswith("~"):
            raise ConfigError(f"{word}: the shell does not expand ~ after {key}=; type "
                              f"{key}={os.path.expanduser('~')}{value[1:]}")


def raw(overrides: list[str], config_dir: str | None = None) -> dict[str, Any]:
    """One job's composed config as a plain dict (no `hydra` node), before `validate.expand`
    checks it, through Hydra's Compose API; `config_dir` is a folder of the user's configs
    searched as `--config-dir` searches it (after the packaged ones)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module

    register()
    path = config_path()
    init = (initialize_config_module(config_module="harness.configs", version_base=None)
            if path.startswith("pkg://") else
            initialize_config_dir(config_dir=path, version_base=None))
    searched = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]"] if config_dir else []
    try:
        with init:
            cfg = hydra_compose(CONFIG_NAME, [*overrides, *searched])
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(explain(err, overrides, multirun=False)) from None


def cells(overrides: list[str], config_dir: str | None = None) -> list[Config]:
    """The cells of one job composed from the packaged configs, as `harness run overrides`
    would train them (for code that builds configs without a command line, e.g. benchmarks)."""
    return expand(raw(overrides, config_dir))
