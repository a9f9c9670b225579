"""harness.sweep W&B mirror (sweep/mirror.py): each cell's own config with typed values, one
run per cell, shown while it trains (one point per epoch), its history equal to the parquet rows
through kills, resumes and run.force; a failure to reach W&B warns once and holds for the rest
of its command only (a `WandbMirror` per command, no process state), and a later run mirrors
what it missed. Online, an id counts only once `wandb.init` accepted it."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.spec.records import METRIC_COLUMNS
from tests.conftest import CLI_ENV, TINY
from tests.sweep.test_cells import run
from tests.wandb_reader import config, history


def test_wandb_logs_the_cells_own_config_and_force_leaves_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    grid = ["logger=wandb", "optimizer.lr=[0.01,0.003]", "decay.weight_decay=[0,0.001]",
            "train.epochs=2"]
    assert run(tmp_path, *grid) == 0
    assert run(tmp_path, *grid[:2], "decay.weight_decay=0", "train.epochs=2",
               "run.force=true") == 0
    files = sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 4 and not (tmp_path / "c" / "wandb" / "wandb").exists()
    seen = set()
    for f in files:
        logged = config(f)
        lr, wd = logged["optimizer"]["lr"], logged["decay"]["weight_decay"]
        seen.add((lr, wd))
        df = pd.read_parquet(tmp_path / "c" / "runs" / f"{logged['run_id']}.parquet")
        rows = history(f)
        assert [r["epoch"] for r in rows] == df.epoch.tolist() == [1, 2]
        assert [r["train_loss"] for r in rows] == df.train_loss.tolist()
        assert df.lr.iloc[0] == lr and logged["train"]["epochs"] == 2
    assert seen == {(0.01, 0.0), (0.01, 0.001), (0.003, 0.0), (0.003, 0.001)}


@pytest.mark.slow
def test_wandb_online_without_network_stalls_once_and_warns_once(tmp_path):
    env = dict(os.environ, **CLI_ENV, WANDB_BASE_URL="http://127.0.0.1:9",
               WANDB_API_KEY="0" * 40)
    args = [sys.executable, "-m", "harness", "run", *TINY, "train.epochs=1", "study=c",
            "run.results_dir=results", "logger=wandb", "logger.wandb.mode=online",
            "optimizer.lr=[0.01,0.003,0.001]"]
    tic = time.perf_counter()
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    seconds = time.perf_counter() - tic
    assert proc.returncode == 0 and "3 cells: 3 completed" in proc.stdout, proc.stderr
    assert proc.stderr.count("W&B disabled for the rest of this process") == 1, proc.stderr
    assert seconds < 75, f"{seconds:.0f} s: W&B stalled more than once"


def test_cells_done_without_wandb_are_mirrored_by_the_next_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    grid = ["optimizer.lr=[0.01,0.003]", "train.epochs=1"]
    assert run(tmp_path, *grid) == 0                       # logger=none: no W&B
    assert not (tmp_path / "c" / "wandb").exists()
    capsys.readouterr()
    assert run(tmp_path, *grid, "logger=wandb") == 0
    out = capsys.readouterr().out
    assert "2 cells: 2 skipped" in out and "] epoch" not in out
    files = sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all([r["epoch"] for r in history(f)] == [1] for f in files)
    assert run(tmp_path, *grid, "logger=wandb") == 0       # mirrored once, not again
    assert sorted((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb")) == files


def test_a_wandb_failure_holds_for_the_rest_of_its_command_not_the_next(
        tmp_path, monkeypatch, capsys):
    """A command whose W&B fails (an invalid project: wandb.init raises at once) warns once and
    skips W&B for its later cells, also those of its other Hydra jobs (-m, one process); the
    next command in this very process mirrors every cell: no state outlives a command."""
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = tmp_path / "c"
    inits = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw["id"]) or real_init(**kw))
    capsys.readouterr()
    assert run(tmp_path, "-m", "optimizer.lr=0.01,0.003", "train.epochs=1", "logger=wandb",
               "logger.wandb.project=no/such") == 0
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (UsageError: Invalid project "
                     "name 'no/such'") == 1, err
    assert len(list((study / "runs").glob("*.parquet"))) == 2
    assert len(inits) == 1                        # the second job tried no W&B
    assert not (study / "mirrored").exists()      # an init that raised leaves no id
    assert not (study / "wandb").exists()
    assert run(tmp_path, "optimizer.lr=[0.01,0.003]", "train.epochs=1", "logger=wandb") == 0
    out, err = capsys.readouterr()
    assert "2 cells: 2 skipped" in out and "W&B disabled" not in err, err
    files = sorted((study / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    for f in files:
        df = pd.read_parquet(study / "runs" / f"{f.stem.removeprefix('run-')}.parquet")
        assert [r["train_loss"] for r in history(f)] == df.train_loss.tolist()


class _Run:
    """What a fake `wandb.init` returns: the steps it logged, or a connection lost mid-log.
    `server` holds the steps W&B has of each id: a resumed id starts after its last one."""

    def __init__(self, wandb_id: str, lost: bool, server: dict[str, list]) -> None:
        self.id, self.lost, self.steps, self.summary, self.finished = wandb_id, lost, [], {}, False
        self.tags, self.server = (), server
        had = [step for step, _ in server.setdefault(wandb_id, [])]
        self.starting_step = had[-1] + 1 if had else 0

    def log(self, row: dict, step: int, commit: bool | None = None) -> None:
        if self.lost:
            raise ConnectionError("connection reset mid-log")
        assert commit and step >= self.starting_step and step not in self.steps, step
        self.steps.append(step)
        self.server[self.id].append((step, dict(row)))

    def finish(self) -> None:
        self.finished = True


def fake_init(monkeypatch, *calls: str | None, server: dict | None = None) -> list[_Run]:
    """Replace wandb.init: its n-th call raises ("init": no network, init timeout) or returns a
    run whose logging is cut off ("log") or that logs (None); any further call logs. Returns
    the runs it created; `server` (given or new) collects what each id holds."""
    import wandb

    runs: list[_Run] = []
    plan = iter(calls)
    server = {} if server is None else server

    def init(**kw):
        what = next(plan, None)
        if what == "init":
            raise TimeoutError("Run initialization has timed out after 30.0 sec.")
        runs.append(_Run(kw["id"], lost=what == "log", server=server))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return runs


ONLINE = ["train.epochs=1", "logger=wandb", "logger.wandb.mode=online"]


def the_cell(tmp_path) -> tuple[str, str, object]:
    """The one cell's run_id, its parquet's sha256 and its marker path."""
    (parquet,) = (tmp_path / "c" / "runs").glob("*.parquet")
    return (parquet.stem, hashlib.sha256(parquet.read_bytes()).hexdigest(),
            tmp_path / "c" / "mirrored" / f"{parquet.stem}.json")


def test_an_online_init_that_raised_leaves_no_id_so_the_next_upload_is_the_run_id(
        tmp_path, monkeypatch, capsys):
    """Issue 22: an attempt whose wandb.init raised (no network) created no run on the server;
    the next run's upload of the cell is `<run_id>`, not `<run_id>-1`."""
    monkeypatch.chdir(tmp_path)
    runs = fake_init(monkeypatch, "init", None)
    capsys.readouterr()
    assert run(tmp_path, *ONLINE) == 0
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (TimeoutError") == 1, err
    run_id, digest, marker = the_cell(tmp_path)
    assert not marker.exists() and runs == []
    assert run(tmp_path, *ONLINE) == 0                    # done: skipped, then mirrored
    assert "W&B disabled" not in capsys.readouterr().err
    assert [(r.id, r.steps, r.finished) for r in runs] == [(run_id, [1], True)]
    assert json.loads(marker.read_text())["ids"] == [run_id]
    assert json.loads(marker.read_text())["sha256"] == digest


def test_an_online_run_cut_off_after_init_is_resumed_under_its_id(tmp_path, monkeypatch,
                                                                   capsys):
    """A run whose wandb.init returned exists on the server even if its logging then failed:
    the next upload resumes that id and logs the steps W&B does not have (issue 24: one run per
    cell); an init that raised before it counts nothing (the id is `<run_id>`, not `-1`)."""
    monkeypatch.chdir(tmp_path)
    runs = fake_init(monkeypatch, "init", "log", None)
    capsys.readouterr()
    assert run(tmp_path, *ONLINE) == 0                    # wandb.init raises: no id
    run_id, digest, marker = the_cell(tmp_path)
    assert capsys.readouterr().err.count("W&B disabled") == 1 and not marker.exists()
    assert run(tmp_path, *ONLINE) == 0                    # init returns, logging cut off
    err = capsys.readouterr().err
    assert err.count("W&B disabled for the rest of this process (ConnectionError") == 1, err
    held = json.loads(marker.read_text())
    assert held["ids"] == [run_id] and held["sha256"] is None and held["rows"] == 1
    assert run(tmp_path, *ONLINE) == 0                    # the whole run uploaded
    assert "W&B disabled" not in capsys.readouterr().err
    assert [(r.id, r.steps, r.finished) for r in runs] == [
        (run_id, [], True), (run_id, [1], True)]
    held = json.loads(marker.read_text())
    assert held["ids"] == [run_id] and held["sha256"] == digest


# Issue 24: W&B shows a cell while it trains, one point per epoch, and its history equals the
# parquet rows after any number of kills, resumes and a run.force; config values keep types.

FLUSH = {"WANDB_X_TRANSACTION_LOG_FLUSH_INTERVAL": "0.2"}  # offline: .wandb written at once


def offline_files(study) -> list:
    return sorted(study.glob("wandb/**/offline-run-*/run-*.wandb"))


def rows_of(history_rows: list[dict]) -> list[list]:
    """The METRIC_COLUMNS of W&B history rows (or parquet rows), NaN as None: comparable."""
    return [[None if isinstance(r[k], float) and math.isnan(r[k]) else r[k]
             for k in METRIC_COLUMNS] for r in history_rows]


def parquet_rows(path) -> list[list]:
    return rows_of(pd.read_parquet(path)[METRIC_COLUMNS].to_dict("records"))


def watch_history(monkeypatch, study, epochs: int) -> list:
    """After the recorder has taken each epoch but the last, the epochs the cell's offline W&B
    run holds (its .wandb file, waited for up to 10 s): what someone watching W&B sees."""
    from harness.sweep import cells

    seen, real = [], cells.train

    def spy(*args, **kwargs):
        for n, epoch in enumerate(real(*args, **kwargs), 1):
            yield epoch
            if n < epochs:
                deadline, got = time.monotonic() + 10, []
                while time.monotonic() < deadline:
                    files = offline_files(study)
                    got = [r["epoch"] for r in history(files[0])] if files else []
                    if len(got) >= n:
                        break
                    time.sleep(0.1)
                seen.append(got)

    monkeypatch.setattr(cells, "train", spy)
    return seen


def test_offline_wandb_shows_each_epoch_while_the_cell_trains_with_typed_config(
        tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # FLUSH for runs of this process, whose W&B settings were read when it first used W&B
    monkeypatch.setattr(wandb, "Settings", functools.partial(
        wandb.Settings, x_transaction_log_flush_interval=0.2))
    study = tmp_path / "c"
    seen = watch_history(monkeypatch, study, epochs=3)
    assert run(tmp_path, "logger=wandb", "train.epochs=3") == 0
    assert seen == [[1], [1, 2]]                  # live: one point per epoch, while it trains
    (f,) = offline_files(study)
    logged = config(f)
    assert logged["train"]["compile"] is False and logged["train"]["pack"] == 1
    assert logged["train"]["epochs"] == 3 and logged["run"]["force"] is False
    assert rows_of(history(f)) == parquet_rows(study / "runs" / f"{logged['run_id']}.parquet")


def test_online_wandb_resumes_one_run_through_kills_and_force_opens_one_new_run(
        tmp_path, monkeypatch, capsys):
    """Online (a fake W&B server): each epoch is logged as it is checkpointed; a command
    killed after epoch 2, then after epoch 3, then run to the end leaves one run whose steps
    are 1..4, each logged once, equal to the parquet rows; run.force retrains into one new run
    `<run_id>-1` equal to the new parquet."""
    from harness.sweep import cells

    monkeypatch.chdir(tmp_path)
    server: dict[str, list] = {}
    runs = fake_init(monkeypatch, server=server)
    real = cells.train
    grid = ["train.epochs=4", "logger=wandb", "logger.wandb.mode=online"]

    def killed_after(last: int):
        def spy(*args, **kwargs):
            for epoch in real(*args, **kwargs):
                yield epoch
                if epoch[0].metrics.epoch == last:
                    raise KeyboardInterrupt
        return spy

    for last in (2, 3):
        monkeypatch.setattr(cells, "train", killed_after(last))
        assert run(tmp_path, *grid) == 130
        (run_id,) = server
        assert [step for step, _ in server[run_id]] == list(range(1, last + 1))
    monkeypatch.setattr(cells, "train", real)
    assert run(tmp_path, *grid) == 0
    assert "W&B disabled" not in capsys.readouterr().err
    parquet = tmp_path / "c" / "runs" / f"{run_id}.parquet"
    assert [r.id for r in runs] == [run_id] * 3
    assert [step for step, _ in server[run_id]] == [1, 2, 3, 4]
    assert rows_of([row for _, row in server[run_id]]) == parquet_rows(parquet)
    assert run(tmp_path, *grid) == 0 and len(runs) == 3        # done and mirrored: no run
    assert run(tmp_path, *grid, "run.force=true") == 0
    assert sorted(server) == [run_id, f"{run_id}-1"] and runs[-1].id == f"{run_id}-1"
    assert [step for step, _ in server[f"{run_id}-1"]] == [1, 2, 3, 4]
    assert rows_of([row for _, row in server[f"{run_id}-1"]]) == parquet_rows(parquet)
    assert [r.finished for r in runs] == [False, False, True, True]  # killed: not finished


SLOW_EPOCHS = """
import sys, time
from harness.sweep import cells
real, delay = cells.train, float(sys.argv[1])  # read now: hydra.main sets sys.argv for its run
def slow(*args, **kwargs):
    for epoch in real(*args, **kwargs):
        yield epoch
        time.sleep(delay)
cells.train = slow
from harness.cli.run import main
sys.exit(main(sys.argv[2:]))
"""


def test_offline_wandb_run_after_sigkills_and_resumes_equals_the_parquet(tmp_path):
    """`harness run` killed (SIGKILL, its whole process group) once W&B shows 2 epochs, again
    once it shows one more, then run to the end: one offline run, its history the parquet's
    rows, each epoch once; what W&B showed before each kill is what the parquet holds."""
    import signal

    study = tmp_path / "c"
    env = dict(os.environ, **CLI_ENV, **FLUSH)
    args = [*TINY, "train.epochs=5", "study=c", "run.results_dir=.", "logger=wandb"]
    shown = []
    for want in (2, 3):
        proc = subprocess.Popen([sys.executable, "-c", SLOW_EPOCHS, "2", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline, got = time.monotonic() + 180, []
        while time.monotonic() < deadline and proc.poll() is None:
            files = offline_files(study)
            try:
                got = history(files[0]) if len(files) == 1 else []
            except FileNotFoundError:  # the resumed run removed its stale folder meanwhile
                got = []              # (sweep/mirror.py: offline, all rows are logged again)
            if len(got) >= want:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert len(got) >= want, proc.stderr.read().decode()[-2000:]
        assert not list((study / "runs").glob("*.parquet"))   # shown while the cell trains
        shown.append(got)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "W&B disabled" not in proc.stderr, proc.stderr[-2000:]
    (f,) = offline_files(study)
    (parquet,) = (study / "runs").glob("*.parquet")
    assert [r["epoch"] for r in history(f)] == [1, 2, 3, 4, 5]
    assert rows_of(history(f)) == parquet_rows(parquet)
    for before in shown:
        assert rows_of(before) == parquet_rows(parquet)[:len(before)]
