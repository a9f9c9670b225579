"""The build's one hook: the wheel carries the commit it was built from.

pyproject.toml holds the whole project; this file only swaps setuptools' build_py for one that
writes `harness/_build.json` ({"git_sha": ...}) into the build folder, so the file is in the
wheel and never in the source tree. The commit is HEAD of the git checkout whose top level is
this folder (not an enclosing repository), with '-dirty' when tracked files differ from it;
null when there is no such checkout or no git. `harness.sweep.records.git_sha` reads the file
when no checkout holds the imported package. An editable install writes nothing: the
checkout itself is there to ask.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# The variables that would point git at another repository than the one asked for.
GIT_LOCATORS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR",
                "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES",
                "GIT_DISCOVERY_ACROSS_FILESYSTEM")


def _git(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATORS}
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          timeout=10, check=True, env=env).stdout.strip()


def commit() -> str | None:
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return None                               # an enclosing repository, not ours
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


class BuildPyWithCommit(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "harness" / "_build.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps({"git_sha": commit()}) + "\n")


setup(cmdclass={"build_py": BuildPyWithCommit})
