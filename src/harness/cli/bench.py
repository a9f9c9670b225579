"""`harness bench`: training throughput, naive loop vs strong loop vs harness packs.

The bench is a measurement of the harness, not part of it: it lives in the repository's
`benchmarks/throughput.py` (its docstring says what each row measures), which this command runs
with the given arguments. An installed wheel has no `benchmarks/`; run it from a checkout.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import harness


def main(argv: list[str]) -> int:
    path = Path(harness.__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
    if not path.is_file():
        print("harness bench: error: benchmarks/throughput.py ships with the repository, not "
              "the wheel; run `harness bench` (or python benchmarks/throughput.py) in a checkout",
              file=sys.stderr)
        return 2
    sys.argv = [str(path), *argv]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:  # throughput.py ends with SystemExit(main())
        return int(done.code or 0) if not isinstance(done.code, str) else 2
    return 0
