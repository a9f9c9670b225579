"""Hydra composition of the packaged configs, and the checks every command line passes first.

Configs ship inside the package: `configs/` is the package `harness.configs` and
`experiments/` is `harness.experiments` (pyproject.toml maps both folders), so an installed
wheel and an editable checkout read the same files through importlib.resources. Hydra reads
`configs/` as its primary config path (`pkg://harness.configs`); each study in
`experiments/` is stored in Hydra's ConfigStore as the group `experiment` (a global package,
like `# @package _global_`), so `+experiment=demo` works without a folder or symlink named
`experiment`. A user's own configs and studies come in the usual Hydra way:
`--config-dir DIR` (DIR/experiment/mine.yaml is `+experiment=mine`) or `hydra.searchpath`.

`validate(args)` composes every configuration a command line names (each combination of
sweep values, or each value once for large sweeps, the study's own `hydra.sweeper.params`
included) and expands it into cells; the first problem
becomes one `ConfigError` line that says what to type instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import ListConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

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


def primary_path(given: str | None) -> str:
    """Hydra's primary config path for `--config-path given` (absolute, or relative to the
    directory the command starts in), else the packaged configs; a ConfigError if `given` is
    not a directory."""
    if given is None:
        return config_path()
    path = os.path.abspath(os.path.expanduser(given))
    if not os.path.isdir(path):
        raise ConfigError(f"--config-path {given} is not a directory; give the folder holding "
                          "your primary config (config.yaml, or name it with --config-name), "
                          "or add a folder to the packaged configs with --config-dir")
    return path


def _loader(config_dir: str | None, primary: str | None = None) -> Any:
    """The config loader Hydra itself builds for `harness run` (same search path)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    register()
    search_path = create_automatic_config_search_path(None, None, primary or config_path())
    if config_dir is not None:
        path = os.path.abspath(os.path.expanduser(config_dir))
        if not os.path.isdir(path):
            raise ConfigError(f"--config-dir {config_dir} is not a directory; give a folder "
                              "holding your YAML files (e.g. DIR/experiment/mine.yaml)")
        search_path.prepend(provider="command-line", path=f"file://{path}",
                            anchor=SearchPathQuery(provider="schema"))
    return ConfigLoaderImpl(config_search_path=search_path)


def _group_options(loader: Any, group: str) -> list[str]:
    return sorted(loader.get_group_options(group))


def _explain(err: Exception, loader: Any, config_name: str, overrides: list[str]) -> str:
    """One line out of a Hydra/OmegaConf composition error, from the exception's fields."""
    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for e in chain:
        if isinstance(e, MissingConfigException) and e.missing_cfg_file:
            group, _, option = e.missing_cfg_file.rpartition("/")
            if group:
                valid = ", ".join(_group_options(loader, group)) or "none"
                return f"{group}={option} is not valid; choose one of: {valid}"
    for e in chain:
        key = getattr(e, "full_key", None)
        if isinstance(e, (ConfigAttributeError, ConfigKeyError)) and key:
            parent, _, _ = str(key).rpartition(".")
            rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
            try:
                base = loader.load_configuration(config_name, rest, RunMode.RUN)
                node = OmegaConf.select(base, parent) if parent else base
                valid = ", ".join(sorted(str(k) for k in node if k not in ("hydra", "grid")))
                where = f" of {parent}" if parent else ""
                return f"{key} is not a valid key; valid keys{where}: {valid}"
            except Exception:  # noqa: BLE001 - fall back to the message itself
                break
    return str(err).strip().splitlines()[0]


def _check_words(overrides: list[str]) -> None:
    """Mistakes visible in the words themselves, before Hydra parses them: what to type."""
    for word in overrides:
        key, eq, value = word.partition("=")
        if eq and key == "experiment":
            raise ConfigError(f"{word}: experiment is not in the default config; type "
                              f"+experiment={value} (with the +)")
        if eq and value.startswith("~"):
            raise ConfigError(f"{word}: the shell does not expand ~ after {key}=; type "
                              f"{key}={os.path.expanduser('~')}{value[1:]}")


def _sweeps(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Each override as its list of single-valued overrides (a sweep gives one per value)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001 - a syntax error in an override
        raise ConfigError(f"cannot parse overrides: {str(err).strip().splitlines()[0]}") from None
    choices = []
    for o in parsed:
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        key = o.get_key_element()
        if not multirun:
            as_list = (f", or type {key}=[{o.input_line.split('=', 1)[1]}] for one run with a "
                       "list" if key.lstrip("+") in LIST_KEYS else "")
            raise ConfigError(f"{o.input_line} is a sweep: add -m to run one job per value"
                              f"{as_list}")
        choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    return choices


def _override_sets(choices: list[list[str]], full: int = 64) -> list[list[str]]:
    """Every combination when there are at most `full`; else the first values together, then
    one value changed at a time (each value composed at least once)."""
    if math.prod(len(c) for c in choices) <= full:
        return [list(combo) for combo in itertools.product(*choices)]
    first = [c[0] for c in choices]
    sets = [first]
    for i, c in enumerate(choices):
        sets += [first[:i] + [v] + first[i + 1:] for v in c[1:]]
    return sets


def _compose(loader: Any, config_name: str, overrides: list[str]) -> tuple[dict, dict]:
    """The job's config as a resolved dict (no `hydra` node), and its hydra.sweeper.params."""
    try:
        cfg = loader.load_configuration(config_name, overrides, RunMode.RUN)
        params = OmegaConf.select(cfg, "hydra.sweeper.params")
        params = OmegaConf.to_container(params) if params is not None else {}
        with read_write(cfg), open_dict(cfg):
            cfg.pop("hydra", None)
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True), params
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf composition errors
        raise ConfigError(_explain(err, loader, config_name, overrides)) from None


def _study_sweeps(params: dict, given: list[str]) -> list[str]:
    """The study's `hydra.sweeper.params` that the command line does not override."""
    keys = {o.lstrip("+~").split("=", 1)[0] for o in given}
    return [f"{k}={v}" for k, v in params.items() if k not in keys]


def raw(overrides: list[str], config_dir: str | None = None) -> dict[str, Any]:
    """One job's composed config as a plain dict, before `validate.expand` checks it."""
    return _compose(_loader(config_dir), CONFIG_NAME, overrides)[0]


def cells(overrides: list[str], config_dir: str | None = None) -> list[Config]:
    """The cells of one job composed from the packaged configs, as `harness run overrides`
    would train them (for code that builds configs without a command line, e.g. benchmarks)."""
    return expand(raw(overrides, config_dir))


def validate(args: argparse.Namespace) -> list[Config]:
    """Every cell the command line names, validated; raise ConfigError (one line)."""
    _check_words(args.overrides)
    given = _sweeps(args.overrides, args.multirun)
    loader = _loader(args.config_dir, primary_path(args.config_path))
    config_name = args.config_name or CONFIG_NAME
    first, params = _compose(loader, config_name, [c[0] for c in given])
    study = _study_sweeps(params, args.overrides)
    if study and not args.multirun:
        name = f"study {first['study']}" if "study" in first else "this config"
        raise ConfigError(f"{name} sweeps {', '.join(study)}: add -m "
                          f"(harness run -m {' '.join(args.overrides)})")
    cells: dict[str, Config] = {}
    for override_set in _override_sets(given + _sweeps(study, True)):
        raw, _ = _compose(loader, config_name, override_set)
        cells |= {c.run_id: c for c in expand(raw)}
    return list(cells.values())
