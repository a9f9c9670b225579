"""`harness report <study>`: rebuild a study's figures, cells.csv and report.md from its parquet
files (`harness.analysis.report.write_report`); no torch is imported. Only report/ (or --out)
is written: a study on a read-only file system is reported into --out DIR."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from harness.analysis.report import write_report

READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # the folder is not ours to write


def _studies(results_dir: Path) -> list[str]:
    return sorted(p.name for p in results_dir.glob("*") if (p / "runs").is_dir())


def main(argv: list[str] | None = None) -> int:
    """``report <study>``: 0 on success, 2 for an unknown study or an output folder that cannot
    be written, 1 if nothing is usable (or a write fails otherwise, e.g. a full disk)."""
    parser = argparse.ArgumentParser(prog="harness report", description=__doc__)
    parser.add_argument("study", help="a study name under --results-dir, or a study path")
    parser.add_argument("--results-dir", default="results", type=Path)
    parser.add_argument("--out", default=None, type=Path,
                        help="output folder (default <study>/report)")
    args = parser.parse_args(argv)
    candidates = [Path(args.study), args.results_dir / args.study]
    study = next((p for p in candidates if (p / "runs").is_dir()), None)
    if study is None:
        found = ", ".join(_studies(args.results_dir)) or "none"
        print(f"unknown study {args.study!r}; studies under {args.results_dir}: {found}",
              file=sys.stderr)
        return 2
    out = args.out if args.out is not None else study / "report"
    try:
        path = write_report(study, out)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in READ_ONLY:
            hint = "another --out DIR" if args.out is not None else "--out DIR"
            print(f"report: cannot write to {out} ({exc.strerror}); give {hint}, a folder you "
                  "can write, to report on this study", file=sys.stderr)
            return 2
        print(f"report: cannot write to {out} ({exc.strerror or exc})", file=sys.stderr)
        return 1
    print(path)
    return 0
