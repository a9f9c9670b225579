"""harness.sweep cells + recorder + checkpoint: what a cluster does to a cell.

Checkpoints with other contents, flipped bytes or a state the model rejects retrain from
scratch with one line; a full disk keeps the last good checkpoint; claim files are never
followed through symlinks; a preempted job keeps its checkpoint. W&B: test_wandb.py."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.cli.run import main
from harness.config import compose
from harness.config.job import Config
from harness.sweep import checkpoint
from harness.sweep.cells import load_data, run_cells
from harness.sweep.recorder import CellPaths, Recorder, WandbMirror
from harness.train.loop import train
from tests.conftest import CLI_ENV, TINY

METRICS = ["epoch", "step", "train_loss", "train_error", "test_loss", "test_error", "param_norm"]
T3 = [*TINY, "train.epochs=3"]


def cells_of(tmp_path: Path, *overrides: str) -> list[Config]:
    """The cells `python -m harness run` builds from these overrides."""
    return compose.cells([*T3, "study=c", f"run.results_dir={tmp_path}", *overrides])


def run(tmp_path: Path, *overrides: str) -> int:
    return main([*T3, "study=c", f"run.results_dir={tmp_path}", *overrides])


def after_epoch_1(cfg: Config) -> dict:
    """The checkpoint a real run of `cfg` writes after its first epoch."""
    ep = next(train([cfg], load_data(cfg, torch.device("cpu")), torch.device("cpu")))[0]
    return ep.state() | {"records": [dataclasses.asdict(ep.metrics)]}


def parquet(cfg: Config) -> pd.DataFrame:
    return pd.read_parquet(CellPaths.of(cfg).parquet)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> pd.DataFrame:
    """The records of an uninterrupted run."""
    where = tmp_path_factory.mktemp("fresh")
    old = os.getcwd()
    os.chdir(where)
    try:
        assert run(where) == 0
    finally:
        os.chdir(old)
    [path] = (where / "c" / "runs").glob("*.parquet")
    return pd.read_parquet(path)


def test_checkpoint_validation_names_what_is_wrong_in_one_line(tmp_path):
    [cfg] = cells_of(tmp_path)
    state, path, rid = after_epoch_1(cfg), tmp_path / "x.pt", cfg.run_id
    old = os.umask(0o022)
    try:
        checkpoint.save(state, path, rid)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644     # teammates can read it
    assert checkpoint.load(path, rid, 3)["epoch"] == 1
    cases = {
        "checksum mismatch": lambda raw: raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1])
        + raw[len(raw) // 2 + 1:],
        "no header": lambda raw: raw[raw.index(b"\n", len(checkpoint.MAGIC)) + 1:],
        "schema 0": lambda raw: raw.replace(f'"schema": {checkpoint.SCHEMA}'.encode(),
                                            b'"schema": 0', 1),
        "belongs to run 'other'": lambda raw: raw.replace(rid.encode(), b"other", 1),
    }
    for message, damage in cases.items():
        path.write_bytes(damage(checkpoint.encode(state, rid)))
        with pytest.raises(checkpoint.Invalid, match=message):
            checkpoint.load(path, rid, 3)
    for change, message in [({"epoch": "1"}, "key 'epoch' is str"), ({"rng": None}, "'rng'"),
                            ({"epoch": 3}, "epoch 3 is outside 1..2"),
                            ({"records": []}, r"records hold epochs \[\], expected 1..1")]:
        checkpoint.save(state | change, path, rid)
        with pytest.raises(checkpoint.Invalid, match=message) as err:
            checkpoint.load(path, rid, 3)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage, message", [
    ("flip", "checksum mismatch"),
    ("beyond", "epoch 7 is outside 1..2"),
    ("model", "retraining from scratch"),
])
def test_a_bad_checkpoint_retrains_from_scratch_and_equals_a_fresh_run(
        tmp_path, monkeypatch, capsys, fresh, damage, message):
    monkeypatch.chdir(tmp_path)
    [cfg] = cells_of(tmp_path)
    state, path = after_epoch_1(cfg), CellPaths.of(cfg).checkpoint
    if damage == "beyond":
        state |= {"epoch": 7}
    if damage == "model":   # passes validation, but the model refuses it
        state |= {"model": {"conv.weight": torch.zeros(3)}}
    checkpoint.save(state, path, cfg.run_id)
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10                 # torch.load alone would not notice
        path.write_bytes(bytes(raw))
    capsys.readouterr()
    assert run(tmp_path) == 0
    out = capsys.readouterr()
    [line] = [x for x in out.err.splitlines() if "unusable" in x]
    assert message in line and str(path) in line
    assert "epoch 1/3" in out.out
    assert ("resuming" in out.out) == (damage == "model")  # found unloadable only on loading
    df = parquet(cfg)
    assert (df.status == "completed").all()
    pd.testing.assert_frame_equal(df[METRICS], fresh[METRICS])
    assert not path.exists()
    assert run(tmp_path) == 0                      # and the next run skips it, no crash
    assert "skipped: already completed" in capsys.readouterr().out


def test_a_pack_with_one_unloadable_checkpoint_resumes_the_other(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = ["optimizer.lr=[0.01,0.003]", "train.pack=2"]
    good, bad = cells_of(tmp_path, *grid)
    checkpoint.save(after_epoch_1(good), CellPaths.of(good).checkpoint, good.run_id)
    checkpoint.save(after_epoch_1(bad) | {"model": {"x": torch.zeros(1)}},
                    CellPaths.of(bad).checkpoint, bad.run_id)
    capsys.readouterr()
    assert run(tmp_path, *grid) == 0
    out = capsys.readouterr()
    assert f"[{good.run_id} " in out.out and "resuming after epoch 1" in out.out
    assert [x.split()[0] for x in out.err.splitlines() if "unusable" in x] == [f"[{bad.run_id}"]
    trained_first = {x.split()[0] for x in out.out.splitlines() if "] epoch 1/3" in x}
    assert trained_first == {f"[{bad.run_id}"}
    assert parquet(good).epoch.tolist() == parquet(bad).epoch.tolist() == [1, 2, 3]


def test_a_cell_is_completed_only_if_its_records_hold_every_epoch(tmp_path):
    [cfg] = cells_of(tmp_path)
    rec = Recorder(cfg, "cpu", WandbMirror(), n_train=512, num_classes=10)
    rec.records = [dict(after_epoch_1(cfg)["records"][0], epoch=e) for e in (1, 3)]
    assert rec.finish() == "failed"
    df = parquet(cfg)
    assert (df.status == "failed").all()
    assert df.error_message.iloc[0] == "records hold epochs [1, 3], expected 1..3"


def _no_big_files(limit: int):
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


def test_a_full_disk_says_so_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    """RLIMIT_FSIZE makes every write past 12 kB fail (EFBIG) as a full disk does (ENOSPC):
    the 1 MB checkpoints and the 21 kB parquet file cannot be written."""
    [cfg] = cells_of(tmp_path / "results")
    path = CellPaths.of(cfg).checkpoint
    checkpoint.save(after_epoch_1(cfg), path, cfg.run_id)
    good = path.read_bytes()
    args = [sys.executable, "-m", "harness", "run", *T3, "study=c",
            f"run.results_dir={tmp_path / 'results'}"]
    env = dict(os.environ, **CLI_ENV)
    full = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=_no_big_files(12_000))
    assert full.returncode == 1, full.stderr
    [warn] = [x for x in full.stderr.splitlines() if "cannot write checkpoint" in x]
    assert str(path) in warn and "File too large" in warn and "previous checkpoint is kept" in warn
    [error] = [x for x in full.stderr.splitlines() if "cannot write" in x and ".parquet" in x]
    assert "File too large" in error and "Traceback" not in full.stderr
    assert path.read_bytes() == good, "the last good checkpoint must survive"
    assert not CellPaths.of(cfg).parquet.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "resuming after epoch 1" in again.stdout
    assert parquet(cfg).epoch.tolist() == [1, 2, 3] and not path.exists()


def test_a_claim_file_symlink_is_not_followed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    [cfg] = cells_of(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = CellPaths.of(cfg).claim
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    assert run(tmp_path) == 1
    assert victim.read_text() == "precious\n"
    [line] = [x for x in capsys.readouterr().err.splitlines() if str(lock) in x]
    assert "is a symlink; remove it" in line
    assert not CellPaths.of(cfg).parquet.exists()


def test_a_foreign_parquet_at_a_cells_path_does_not_count_as_done(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = ["optimizer.lr=[0.01,0.003]", "train.epochs=1"]
    first, second = cells_of(tmp_path, *grid)
    assert run(tmp_path, *grid[1:], "optimizer.lr=0.01") == 0
    CellPaths.of(second).parquet.parent.mkdir(parents=True, exist_ok=True)
    CellPaths.of(second).parquet.write_bytes(CellPaths.of(first).parquet.read_bytes())
    capsys.readouterr()
    assert run(tmp_path, *grid) == 0
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if "not a final record" in x]
    assert f"run {second.run_id} (run_id {first.run_id}," in line
    assert "1 skipped" in out and "1 completed" in out
    assert (parquet(second).run_id == second.run_id).all()


@pytest.mark.parametrize("preempted", [True, False])
def test_a_preempted_job_keeps_its_checkpoint_and_any_other_error_fails_the_cell(
        tmp_path, monkeypatch, preempted):
    """submitit's UncompletedJobError (its handler of a preemption signal raises it mid-training)
    leaves the checkpoint for the requeued job and records nothing; another error is a failed
    cell, recorded, and the call returns."""
    utils = pytest.importorskip("submitit.core.utils")
    from harness.sweep import cells as cells_mod

    monkeypatch.chdir(tmp_path)
    [cfg] = cells_of(tmp_path)
    real = cells_mod.train
    error = utils.UncompletedJobError("Job not requeued because: timed-out too many times.") \
        if preempted else RuntimeError("boom")

    def stopped_after_epoch_2(*args, **kwargs):
        for n, epochs in enumerate(real(*args, **kwargs), 1):
            yield epochs
            if n == 2:
                raise error

    monkeypatch.setattr(cells_mod, "train", stopped_after_epoch_2)
    paths = CellPaths.of(cfg)
    if preempted:
        with pytest.raises(utils.UncompletedJobError):
            run_cells([cfg])
        assert not paths.parquet.exists()
        assert checkpoint.load(paths.checkpoint, cfg.run_id, 3)["epoch"] == 2
        monkeypatch.setattr(cells_mod, "train", real)
        assert run_cells([cfg]) == {cfg.run_id: "completed"}     # the requeued job resumes
        assert parquet(cfg).epoch.tolist() == [1, 2, 3] and not paths.checkpoint.exists()
    else:
        assert run_cells([cfg]) == {cfg.run_id: "failed"}
        df = parquet(cfg)
        assert df.epoch.tolist() == [1, 2] and (df.error_message == "RuntimeError: boom").all()
