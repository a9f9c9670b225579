"""`harness <command>` (or `python -m harness <command>`): run | report | bench | data | migrate.

    run     train cells from Hydra overrides; Hydra's flags work (`harness run --help`)
    report  rebuild a study's figures and report.md from its parquet files
    bench   measure training throughput
    data    fetch or inspect a dataset
    migrate rewrite a study's parquet files into the current record schema

`harness --version` prints the installed version. Tab completion (bash):
eval "$(harness run -sc install=bash)".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

COMMANDS = ("run", "report", "bench", "data", "migrate")


def _command(name: str) -> Callable[[list[str]], int]:
    """The `main` of one command, imported only when it runs (`report` needs no torch)."""
    if name == "run":
        from harness.cli.run import main
    elif name == "report":
        from harness.cli.report import main
    elif name == "bench":
        from harness.cli.bench import main
    elif name == "migrate":
        from harness.cli.migrate import main
    else:
        from harness.cli.data import main
    return main


def _completion(argv: list[str]) -> list[str]:
    """Hydra's bash completion calls `harness -sc query=bash` with COMP_LINE set to the line
    typed (`harness run optim`); answer it as `harness run` with that line minus `run`."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split(" ", 2)
    if len(words) > 1 and words[1] == "run":
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]])
        point = int(os.environ.get("COMP_POINT", len(line)))
        os.environ["COMP_POINT"] = str(max(point - len(" run"), 0))
    return ["run", *argv]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--version":
        from harness import __version__

        print(f"harness {__version__}")
        return 0
    if argv and argv[0] in ("-sc", "--shell-completion"):
        argv = _completion(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"harness: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if command == "run":  # a signal while Hydra and torch import is one line too
        from harness import stops

        return stops.guarded("harness run", lambda: int(_command(command)(rest) or 0))
    return int(_command(command)(rest) or 0)
