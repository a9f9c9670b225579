"""harness.cli.outcomes + harness run's checks (issue 22): a cell's outcome is the strongest any
job saw, a ledger that cannot be written is one line and exit 1, a results dir that cannot be
written is one line and exit 2 before anything runs."""

from __future__ import annotations

import errno
import json
import tempfile
import uuid
from pathlib import Path

import pytest

from harness.cli.run import main
from tests.conftest import TINY


def run(tmp_path, *overrides):
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return main([*base, f"run.results_dir={tmp_path / 'results'}", "study=t", "train.epochs=1",
                 *overrides])


JOBS = [{"a": "completed", "b": "claimed", "c": "claimed", "d": "planned"},
        {"a": "claimed", "b": "failed", "c": "skipped", "d": "done"},
        {"a": "skipped", "b": "completed", "c": "diverged", "d": "planned"}]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_collect_takes_the_strongest_outcome_whatever_the_order(tmp_path, order):
    from harness.cli import outcomes

    for name, i in zip(("x", "y", "z"), order, strict=True):
        (tmp_path / f"{name}.json").write_text(json.dumps({"outcomes": JOBS[i], "images": 1}))
    got, images, lost = outcomes.collect(tmp_path, ["a", "b", "c", "d", "e"])
    assert got == {"a": "completed", "b": "failed", "c": "diverged", "d": "done",
                   "e": "unrecorded"}
    assert images == 3 and not lost
    assert outcomes.failed(got)
    assert not outcomes.failed({"a": "completed", "b": "claimed"})


@pytest.fixture
def ordered_uuids(monkeypatch):
    """uuid4 in increasing order: the second job's ledger file sorts after the first's."""
    count = iter(range(1, 1_000_000))
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(count)))


def test_two_workers_of_one_cell_report_it_completed(tmp_path, monkeypatch, capsys,
                                                      ordered_uuids):
    """run.worker=0,1: the first job trains the cell, the second finds it done (skipped);
    the summary says completed, not whichever ledger file sorts last."""
    monkeypatch.chdir(tmp_path)
    assert run(tmp_path, "-m", "run.worker=0,1") == 0
    out = capsys.readouterr().out
    assert "skipped: already completed" in out
    assert "harness run: 1 cells: 1 completed\n" in out


def test_a_ledger_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, monkeypatch,
                                                                 capsys):
    write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if ".outcomes" in self.parts:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "write_text", full_disk)
    assert run(tmp_path) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = [x for x in captured.err.splitlines() if "error" in x]
    assert "cannot write the outcomes ledger" in line and "No space left on device" in line
    assert str(tmp_path / "results" / ".outcomes") in line
    assert "harness run: 1 cells: 1 completed" in captured.out  # what is known
    assert len(list((tmp_path / "results" / "t" / "runs").glob("*.parquet"))) == 1
    assert not (tmp_path / "results" / ".outcomes").exists()


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
