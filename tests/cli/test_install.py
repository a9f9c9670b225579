"""The wheel as a user installs it: every YAML inside, and it runs without the source tree.

The fresh virtual environment reuses the torch (and every other dependency) already installed
for the tests through a .pth line naming their site-packages; a path line in a .pth file does
not process the .pth files it points at, so an editable install of harness there stays out of
sight, and the test checks that `harness` is imported from the fresh environment.

The wheel is built from a clone of this checkout at its HEAD with the working tree's sources
copied over, so the build sees what a build from the checkout sees (HEAD, '-dirty' when the
sources differ) and the checkout itself stays clean; the installed harness records that
commit (harness/_build.json), though it runs far from any checkout and its venv sits inside
an unrelated git repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CLI_ENV, ROOT

pytestmark = pytest.mark.slow
SOURCES = ("pyproject.toml", "setup.py", "README.md", "src", "configs", "experiments")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


@pytest.fixture(scope="module")
def head() -> str | None:
    """HEAD of this checkout; None when the sources are not one (the wheel then says null)."""
    try:
        return git("rev-parse", "HEAD", cwd=ROOT)
    except subprocess.CalledProcessError:
        return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, head) -> Path:
    """`pip wheel` offline, from a clone at HEAD holding the working tree's sources."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src-copy"
    if head:
        git("clone", "-q", "--shared", "--no-checkout", str(ROOT), str(src), cwd=tmp_path)
        git("checkout", "-q", "--detach", head, cwd=src)
    src.mkdir(exist_ok=True)
    for name in SOURCES:
        if (src / name).is_dir():
            shutil.rmtree(src / name)           # a file deleted here is deleted there
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("harness_wd-*.whl")  # the distribution harness-wd
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python*/site-packages")
    (site / "reuse-installed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return venv


def test_the_wheel_carries_every_yaml(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (("configs", "harness/configs"), ("experiments", "harness/experiments")):
        for path in (ROOT / folder).rglob("*.yaml"):
            assert f"{package}/{path.relative_to(ROOT / folder).as_posix()}" in names, path
    assert not any("experiment/" in n and n.startswith("harness/configs/") for n in names)


def test_installed_wheel_runs_trains_plans_and_reports_from_an_empty_dir(tmp_path, wheel,
                                                                        head):
    venv = fresh_venv(tmp_path, wheel)
    git("init", "-q", cwd=venv)                 # site-packages inside an unrelated repository
    git("commit", "-q", "--allow-empty", "-m", "venv", cwd=venv)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | CLI_ENV
    harness = str(venv / "bin" / "harness")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([harness, *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([str(venv / "bin/python"), "-c", "import harness; print(harness."
                            "__file__, harness.__version__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1][0].isdigit(), where
    trained = run("run", "dataset=synthetic", "model=small", "dataset.train_subset=256",
                  "dataset.test_subset=128", "train.epochs=1", "train.batch_size=64",
                  "train.device=cpu", "logger=none", "study=wheel")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "harness run: 1 cells: 1 completed" in trained.stdout
    [path] = (work / "results/wheel/runs").glob("*.parquet")
    df = pd.read_parquet(path)
    assert df["status"].tolist() == ["completed"] and df["harness_version"].iloc[0] == where[1]
    built = df["git_sha"].iloc[0]               # the commit the wheel was built from
    assert (built in (head, f"{head}-dirty")) if head else pd.isna(built), (built, head)
    plan = run("run", "-m", "+experiment=demo", "run.plan=true")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "harness run: plan: 125 cells, 0 done, 1,000,000 images to train" in plan.stdout
    report = run("report", "wheel")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (work / "results/wheel/report/report.md").is_file()
