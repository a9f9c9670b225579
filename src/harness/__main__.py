"""`python -m harness <command>`: run | report | bench | data.

    run     train cells from Hydra overrides (harness.run)
    report  rebuild a study's figures and report.md from its parquet files (harness.report)
    bench   measure training throughput (harness.bench)
    data    fetch or inspect a dataset (harness.data)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"run": "harness.run", "report": "harness.report", "bench": "harness.bench",
            "data": "harness.data"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"harness: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[command]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
