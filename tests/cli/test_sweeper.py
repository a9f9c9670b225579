"""hydra_plugins.harness_sweeper (issue 22): the sweep Hydra's basic sweeper would run, every job
checked before the first is launched, batches of `hydra.sweeper.max_batch_size`."""

from __future__ import annotations

import pytest
from hydra.errors import HydraException

from harness.cli.run import main
from hydra_plugins.harness_sweeper import jobs
from tests.conftest import TINY


def test_jobs_are_the_product_the_config_sweep_first_the_command_line_winning():
    assert jobs(["a=1,2", "b=3"], {"c": "x,y", "a": "9"}) == [
        ["c=x", "a=1", "b=3"], ["c=x", "a=2", "b=3"], ["c=y", "a=1", "b=3"],
        ["c=y", "a=2", "b=3"]]
    assert jobs(["seed=range(0,3)"]) == [["seed=0"], ["seed=1"], ["seed=2"]]
    assert jobs([]) == [[]]
    with pytest.raises(HydraException, match="an interval has no values"):
        jobs(["optimizer.lr=interval(0.1,1)"])


def test_batches_of_one_job_each_come_back_to_one_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = [o for o in TINY if not o.startswith(("train.epochs", "optimizer.lr"))]
    code = main(["-m", *base, "train.epochs=1", "study=b", "optimizer.lr=0.1,0.01",
                 "seed=0,1", "hydra.sweeper.max_batch_size=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "harness run: 4 cells: 4 completed\n" in out
    assert len(list((tmp_path / "results" / "b" / "runs").glob("*.parquet"))) == 4


def test_a_bad_value_in_the_last_job_stops_the_sweep_before_the_first(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-m", *TINY, "study=b", "optimizer.lr=0.1,0.01,-1"]) == 2
    assert capsys.readouterr().err == \
        "harness run: error: optimizer.lr=-1 is not valid; it must be a number > 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, no results/
