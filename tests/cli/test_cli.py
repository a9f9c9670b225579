"""Hydra's own command line through `harness run`, as Hydra documents it, plus `--version`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

import harness
from harness.cli import main as harness_main
from harness.config import compose
from tests.conftest import TINY, harness_cli


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`harness ...` in this process: (exit code, stdout, stderr); Hydra may sys.exit."""
    try:
        code = harness_main(list(argv))
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_readme_install_names_a_free_distribution_and_no_placeholder():
    """Issue 24: PyPI's `harness` is an unrelated package; the distribution is harness-wd
    (pyproject.toml, harness.DISTRIBUTION) and the README's install commands are the ones that
    work from a clone and from a wheel, with no `<...>` to fill in."""
    import re

    root = Path(__file__).resolve().parents[2]
    project = (root / "pyproject.toml").read_text().split("[project]", 1)[1]
    name = re.search(r'^name = "([^"]+)"', project, re.M).group(1)
    version = re.search(r'^version = "([^"]+)"', project, re.M).group(1)
    assert name == harness.DISTRIBUTION == "harness-wd"
    readme = (root / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    commands = install.split("```bash", 1)[1].split("```", 1)[0]
    assert not re.search(r"<[^>]*>", commands), commands
    assert re.search(r"^pip install \.\s", commands, re.M)
    wheel = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    assert re.search(r"^pip wheel --no-deps -w dist \.", commands, re.M)
    assert f"pip install dist/{wheel}" in commands
    assert "pip install harness\n" not in install and "harness --version" in commands


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"harness {harness.__version__}"
    assert harness.__version__[0].isdigit()


def test_help_lists_groups_and_the_packaged_studies(capsys):
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0
    for line in ("optimizer: adam, rmsprop, sgd", "decay: decoupled, decoupled_lr, l2, none"):
        assert line in out, out
    [studies] = [line for line in out.splitlines() if line.startswith("experiment: ")]
    assert set(studies.removeprefix("experiment: ").split(", ")) >= {
        "budgets", "demo", "fig1_schedules", "fig2_decay", "fig2_lite", "fig2_lite_cpu"}


def test_cfg_job_shows_the_composed_config_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "run", "--cfg", "job", "optimizer=sgd", "+experiment=demo")
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.0,
                                "nesterov": False}
    assert cfg["study"] == "demo" and cfg["dataset"]["name"] == "fashion_mnist"
    code, out, _ = cli(capsys, "run", "--cfg", "hydra", "+experiment=demo")
    assert yaml.safe_load(out)["hydra"]["sweeper"]["params"]["panel"].startswith("sgd_l2,")
    code, out, _ = cli(capsys, "run", "--info", "defaults")
    assert code == 0 and "optimizer/adam" in out
    assert list(tmp_path.iterdir()) == []


def test_shell_completion_installs_and_answers_for_the_harness_command(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/harness", "run", "-sc", "install=bash"])
    code, out, _ = cli(capsys, "run", "-sc", "install=bash")
    assert code == 0 and out.rstrip().endswith("-F hydra_bash_completion harness")
    # bash then calls `harness -sc query=bash` with the line typed so far
    monkeypatch.setenv("COMP_LINE", "harness run optimizer=")
    monkeypatch.setenv("COMP_POINT", str(len("harness run optimizer=")))
    code, out, _ = cli(capsys, "-sc", "query=bash")
    assert code == 0 and out.split() == ["optimizer=adam", "optimizer=rmsprop", "optimizer=sgd"]


def user_configs(tmp_path: Path) -> Path:
    """A user's own folder: a study of their own and a primary config of their own."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /dataset: synthetic
          - override /model: small
          - override /logger: none
        study: mine
        dataset: {train_subset: 256, test_subset: 128}
        train: {epochs: 1, batch_size: 64, device: cpu}
        hydra:
          sweeper:
            params:
              optimizer.lr: 0.01,0.003
        """))
    (conf / "quick.yaml").write_text(textwrap.dedent("""\
        defaults:
          - config
          - override dataset: synthetic
          - _self_
        study: quick
        """))
    return conf


def test_config_dir_runs_a_user_study_without_touching_the_package(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = user_configs(tmp_path)
    code, out, err = cli(capsys, "run", "--config-dir", str(conf), "-m", "+experiment=mine",
                         f"run.results_dir={tmp_path / 'results'}", "logger.progress=none")
    assert code == 0, err
    assert "harness run: 2 cells: 2 completed" in out
    runs = [pd.read_parquet(p) for p in (tmp_path / "results/mine/runs").glob("*.parquet")]
    assert sorted(df["lr"].iloc[0] for df in runs) == [0.003, 0.01]
    code, _, err = cli(capsys, "run", "--config-dir", str(conf), "+experiment=mine")
    assert code == 2 and "study mine sweeps optimizer.lr=0.01,0.003: add -m" in err


def test_config_name_picks_another_primary_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = user_configs(tmp_path)
    code, out, _ = cli(capsys, "run", "--config-dir", str(conf), "--config-name", "quick",
                       "--cfg", "job")
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["study"] == "quick" and cfg["dataset"]["name"] == "synthetic"
    code, _, err = cli(capsys, "run", "--config-dir", str(conf), "--config-name", "quick",
                       *TINY, "train.epochs=0")
    assert code == 2 and err.strip() == "harness run: error: train.epochs=0 is not valid; " \
                                        "it must be an integer >= 1"


@pytest.mark.slow
def test_the_console_script_is_the_same_command(tmp_path):
    script = Path(sys.executable).with_name("harness")
    if not script.exists():
        pytest.skip(f"no console script at {script}")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("harness ")
    via_module = harness_cli(["run", "--cfg", "job", "optimizer=sgd"], tmp_path)
    assert via_module.returncode == 0 and "name: sgd" in via_module.stdout


def test_cfg_job_resolve_prints_the_resolved_grid(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "run", "--cfg", "job", "--resolve", "+experiment=claim1_cpu")
    assert code == 0, err
    grid = yaml.safe_load(out)["grid"]
    assert grid["sgd_l2"]["lr"] == [2.0 ** k for k in range(-7, 1)]  # ${pow2:-7,0}, resolved
    assert list(tmp_path.iterdir()) == []


def test_hydra_run_dir_set_in_a_config_file_is_where_the_job_folder_goes(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = user_configs(tmp_path)
    (conf / "experiment" / "placed.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /dataset: synthetic
          - override /model: small
          - override /logger: none
        study: placed
        dataset: {train_subset: 128, test_subset: 64}
        train: {epochs: 1, batch_size: 64, device: cpu}
        hydra:
          run:
            dir: my_runs/${study}
        """))
    code, out, err = cli(capsys, "run", "--config-dir", str(conf), "+experiment=placed",
                         "logger.progress=none")
    assert code == 0, err
    assert (tmp_path / "my_runs" / "placed" / ".hydra" / "overrides.yaml").is_file()
    assert not (tmp_path / "outputs").exists()


def test_config_path_is_the_primary_config_folder_relative_to_the_cwd(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "run", "--config-path", "nowhere", *TINY)
    assert code == 2 and err.strip() == (
        "harness run: error: --config-path nowhere is not a directory; give the folder holding "
        "your primary config (config.yaml, or name it with --config-name), or add a folder to "
        "the packaged configs with --config-dir")
    primary = tmp_path / "primary"
    shutil.copytree(compose._source_tree("configs"), primary)  # a user's copy of configs/
    (primary / "config.yaml").write_text((primary / "config.yaml").read_text().replace(
        "study: default", "study: copied"))
    code, out, err = cli(capsys, "run", "--config-path", "primary", "--cfg", "job")
    assert code == 0, err
    assert yaml.safe_load(out)["study"] == "copied"


def test_the_flags_moved_first_are_hydra_own():
    """harness run puts Hydra's flags (and their values) before the overrides; its table of the
    flags that take a value is Hydra's parser's, and a flag between overrides works."""
    from hydra._internal.utils import get_args_parser  # the test may look; the harness may not

    from harness.cli import run

    takes = {o for a in get_args_parser()._actions if a.nargs is None for o in a.option_strings}
    optional = {o for a in get_args_parser()._actions if a.nargs == "?"
                for o in a.option_strings}
    assert takes == set(run.HYDRA_VALUE_FLAGS) and optional == {"--info", "-i"}
    [info] = [a for a in get_args_parser()._actions if "--info" in a.option_strings]
    assert tuple(info.choices) == run.INFO
    assert run._split(["a=1", "--cfg", "job", "b=2", "-m", "--info", "c=3", "-i", "plugins"]) == (
        ["--cfg", "job", "-m", "--info", "-i", "plugins"], ["a=1", "b=2", "c=3"])


def test_hydra_own_plugin_scan_loads_the_sweeper(tmp_path):
    """Where hydra_plugins is a plain folder on the path (a wheel, PYTHONPATH=src on the
    device), Hydra's scan executes the plugin module outside sys.modules first: it must load
    there (a dataclass with string annotations does not) and be the sweeper Hydra finds."""
    code = ("from hydra.core.plugins import Plugins\n"
            "from hydra.plugins.sweeper import Sweeper\n"
            "print(sorted(c.__module__ + '.' + c.__name__ "
            "for c in Plugins.instance().discover(Sweeper)))\n"
            "from harness.config import compose\n"
            "print(compose.cells(['optimizer=sgd'])[0].optimizer.name)\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "['hydra._internal.core_plugins.basic_sweeper.BasicSweeper', "
        "'hydra_plugins.harness_sweeper.HarnessSweeper']", "sgd"]
