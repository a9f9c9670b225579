"""harness.cli.outcomes + harness run's checks (issue 22): a cell's outcome is the strongest any
job saw, a job that fails or never comes back is one line and exit 1, a results dir that cannot
be written is one line and exit 2 before anything runs."""

from __future__ import annotations

import errno
import tempfile

import pytest

from harness.cli import outcomes
from harness.cli.run import Task, main
from tests.conftest import TINY


def run(tmp_path, *overrides):
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return main([*base, f"run.results_dir={tmp_path / 'results'}", "study=t", "train.epochs=1",
                 *overrides])


JOBS = [{"a": "completed", "b": "claimed", "c": "claimed", "d": "planned"},
        {"a": "claimed", "b": "failed", "c": "skipped", "d": "done"},
        {"a": "skipped", "b": "completed", "c": "diverged", "d": "planned"}]


def job_return(outcomes=None, error=None):
    from hydra.core.utils import JobReturn, JobStatus

    job = JobReturn()
    job.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    job.return_value = error or {"outcomes": outcomes, "images": 1}
    return job


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_collect_takes_the_strongest_outcome_whatever_the_order(order):
    task = Task()
    task.expected = ["a", "b", "c", "d", "e"]
    task.collect([None] * 2, returns=[job_return(JOBS[i]) for i in order[:2]])
    task.collect([None], returns=[job_return(JOBS[order[2]])])
    got = task.summary()
    assert got == {"a": "completed", "b": "failed", "c": "diverged", "d": "done",
                   "e": "unrecorded"}
    assert task.images == 3 and not task.lost
    assert outcomes.failed(got)
    assert not outcomes.failed({"a": "completed", "b": "claimed"})


def test_a_failed_job_and_a_lost_batch_are_one_line_each():
    task = Task()
    task.expected = ["a", "b"]
    task.collect([None, None], returns=[job_return({"a": "completed"}),
                                        job_return(error=RuntimeError("out of memory\nmore"))])
    task.collect([None] * 3, error=OSError("submitit: job 17 died"))
    assert task.lost == ["a job failed: RuntimeError: out of memory",
                         "the launcher lost 3 jobs: OSError: submitit: job 17 died"]
    assert task.summary() == {"a": "completed", "b": "unrecorded"}


@pytest.mark.parametrize("workers", ["0,1", "1,0"])
def test_two_workers_of_one_cell_report_it_completed(tmp_path, monkeypatch, capsys, workers):
    """run.worker=0,1: the first job trains the cell, the second finds it done (skipped);
    the summary says completed, whichever job comes back last."""
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, "-m", f"run.worker={workers}") == 0
    out = capsys.readouterr().out
    assert "skipped: already completed" in out
    assert "harness run: 1 cells: 1 completed\n" in out


def test_a_job_that_raises_is_one_line_its_cells_unrecorded_and_exit_1(tmp_path, monkeypatch,
                                                                        capsys):
    """The sweeper hands a failed job's return to the task: the other job's cell completes,
    the command says which job failed, counts its cell unrecorded and exits 1."""
    from harness.sweep import cells

    train = cells.run_cells

    def second_job_breaks(cfgs, mirror=None):
        if cfgs[0].optimizer.lr == 0.01:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return train(cfgs, mirror)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cells, "run_cells", second_job_breaks)
    assert run(tmp_path, "-m", "optimizer.lr=0.1,0.01") == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = [x for x in captured.err.splitlines() if x.startswith("harness run: error")]
    assert line == ("harness run: error: a job failed: RuntimeError: CUDA error: an illegal "
                    "memory access was encountered")
    assert "harness run: 2 cells: 1 completed, 1 unrecorded" in captured.out
    assert len(list((tmp_path / "results" / "t" / "runs").glob("*.parquet"))) == 1


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    return line


def test_a_results_dir_that_is_a_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").write_text("not a folder")
    assert run(tmp_path) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'results'} is a file" in line and "run.results_dir" in line
    assert (tmp_path / "results").read_text() == "not a folder"


def test_a_study_name_too_long_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, "study=" + "s" * 300) == 2
    line = one_error_line(capsys)
    assert "File name too long" in line and "shorter study name" in line
    assert "s" * 300 in line
    assert not (tmp_path / "results").exists()


def test_a_read_only_results_dir_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """Root writes through file modes, so the read-only file system is simulated: every
    temporary file fails with EROFS."""
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert run(tmp_path) == 2
    line = one_error_line(capsys)
    assert "Read-only file system" in line and "writable run.results_dir" in line
    assert str(tmp_path / "results" / "t" / "runs") in line
    assert not (tmp_path / "results").exists()


def test_a_plan_writes_nothing_even_where_results_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").write_text("not a folder")
    assert run(tmp_path, "run.plan=true") == 0
    assert "1 cells: 1 planned" in capsys.readouterr().out
    assert (tmp_path / "results").read_text() == "not a folder"
