"""`harness report` as processes see it (issue 22): two reports of one study at once both
succeed and leave the files one report writes; a study on a read-only file system is one line
and exit 2 unless --out names a folder that can be written."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import report as report_cli
from tests import planted
from tests.conftest import CLI_ENV, harness_cli

A4 = [2.0**k for k in range(-8, -4)]
L4 = [2.0**k for k in range(-9, -5)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/mini: a planted 4 x 4 SGDW panel, 2 seeds (figures, cells.csv, report.md)."""
    root = tmp_path_factory.mktemp("results")
    planted.write_surface(root / "mini" / "runs", A4, L4, 0.0, -7.0, -6, noise=0.003, seeds=2)
    return root


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def report(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "report", *args], cwd=cwd,
                            env=dict(os.environ, **CLI_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_reports_of_one_study_at_once_both_succeed(results: Path, tmp_path: Path) -> None:
    single = harness_cli(["report", "mini", "--results-dir", str(results),
                          "--out", str(tmp_path / "single")], tmp_path)
    assert single.returncode == 0, single.stderr
    expected = files(tmp_path / "single")
    assert {"report.md", "cells.csv", "heatmaps.png", "heatmaps.pdf"} <= set(expected)
    for _ in range(5):
        shutil.rmtree(results / "mini" / "report", ignore_errors=True)
        procs = [report("mini", "--results-dir", str(results), cwd=tmp_path) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
        assert files(results / "mini" / "report") == expected  # complete, no temporary left


def fake_read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Whatever creates a file or folder under `folder` fails as on a read-only file system
    (root ignores file modes, so chmod cannot show it); reading works."""
    real_open, real_mkdir = os.open, os.mkdir
    writes = os.O_CREAT | os.O_WRONLY | os.O_RDWR

    def under(path) -> bool:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())

    def ro_open(path, flags, *args, **kw):
        if flags & writes and under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kw)

    def ro_mkdir(path, *args, **kw):
        if under(path):
            if Path(os.fsdecode(path)).exists():
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_mkdir(path, *args, **kw)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)


@pytest.mark.parametrize("reported_before", [False, True])
def test_a_read_only_study_is_one_line_and_reported_with_out(
        results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], reported_before: bool) -> None:
    study = tmp_path / "ro"
    shutil.copytree(results / "mini" / "runs", study / "runs")
    if reported_before:
        (study / "report").mkdir()
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    fake_read_only(monkeypatch, study)
    assert report_cli.main([str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system" in err and "--out DIR" in err
    assert report_cli.main([str(study), "--out", str(tmp_path / "out")]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "out" / "report.md"
    assert (tmp_path / "out" / "heatmaps.png").is_file()
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before


@pytest.mark.slow
def test_a_read_only_mount_as_a_user_sees_it(results: Path, tmp_path: Path) -> None:
    """The same through a real read-only bind mount (needs root; skipped elsewhere)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "--bind", "-o", "ro", str(results), str(mount)],
            capture_output=True).returncode:
        pytest.skip("cannot bind-mount read-only here (needs root and CAP_SYS_ADMIN)")
    try:
        proc = harness_cli(["report", "mini", "--results-dir", str(mount)], tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Read-only file system" in proc.stderr and "--out DIR" in proc.stderr
        proc = harness_cli(["report", "mini", "--results-dir", str(mount), "--out",
                            str(tmp_path / "out")], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "out" / "report.md").is_file()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
