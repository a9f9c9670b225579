"""harness run: a decay.exclude entry that matches no parameter of the model ends the command
before any cell (exit 2, one line naming what it could match); kinds train and are recorded."""

from __future__ import annotations

import pandas as pd

from tests.conftest import TINY, harness_cli

SMALL_NAMES = "0.weight, 1.weight, 1.bias, 4.weight, 5.weight, 5.bias, 8.weight, 9.weight, ..."


def test_a_pattern_that_matches_nothing_is_one_line_exit_2_before_any_cell(tmp_path):
    proc = harness_cli(["run", *TINY, "study=t", "run.results_dir=results",
                        "decay.exclude=[*bn*]"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"harness run: error: decay.exclude: '*bn*' matches no parameter of "
                     f"model=small; kinds: norm, bias; parameter names: {SMALL_NAMES} "
                     "(11 in all)"], proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs").exists()
    assert not list(tmp_path.rglob("*.parquet"))


def test_in_a_sweep_the_model_it_misses_ends_the_command_before_any_cell(tmp_path):
    proc = harness_cli(["run", "-m", *TINY, "study=t", "run.results_dir=results",
                        "model=resnet20,small", "decay.exclude=[stem.*]"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'stem.*' matches no parameter of model=small" in lines[0]
    assert not (tmp_path / "results").exists() and not list(tmp_path.rglob("*.parquet"))


def test_a_typo_of_a_kind_is_one_line_exit_2(tmp_path):
    proc = harness_cli(["run", *TINY, "study=t", "run.results_dir=results",
                        "decay.exclude=[norm,bais]"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "decay.exclude: 'bais' is not a kind; kinds: norm, bias" \
        in lines[0], proc.stderr


def test_kinds_train_a_cell_and_are_recorded(tmp_path):
    proc = harness_cli(["run", *TINY, "train.epochs=1", "study=t", "run.results_dir=results",
                        "decay.exclude=[norm,bias]"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = (tmp_path / "results" / "t" / "runs").glob("*.parquet")
    df = pd.read_parquet(path)
    assert df["status"].tolist() == ["completed"]
    assert [list(v) for v in df["decay_exclude"]] == [["norm", "bias"]]
