"""`harness migrate <study>... [--results-dir DIR] [--check]`: rewrite a study's parquet files
into the current record schema (`harness.spec.records`: SCHEMA, SCHEMA_VERSION); no torch.

Every value is kept as it was written, and every run_id; the migration only changes how values
are typed and what a missing column holds:
  - strings typed `string` (older files mixed `large_string`), `decay_exclude` a list of
    strings (older files: a string, "" for no pattern, or a list literal such as "['*bn*']");
  - columns a file predates are added: `schema_version` (the current one), `val_split` 0.0 (a
    file written before the column existed held nothing out for validation), and null for the
    rest (`val_subset`, `val_loss`/`val_error` NaN, `timestamp`, `cpu_model`, `cpu_threads`,
    `gpu_model`, `data_fingerprint`, `data_source`: not recorded then);
  - "" in `error_message` becomes null (the schema's "no error"), and `precision` "auto" (what
    older files wrote) the precision auto meant on the recorded device: fp32 off CUDA, null
    (unknown) on CUDA.
A file with a column the schema does not know, or a value it cannot read, is left as it is and
named in one line (exit 1). A file already in the schema is not rewritten. Each file is
replaced atomically (harness.fsutil). `--check` only says which files would change (exit 1 if
any).
"""

from __future__ import annotations

import argparse
import ast
import io
import math
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from harness.fsutil import atomic_write
from harness.spec.records import (
    COLUMNS,
    FLOAT_COLUMNS,
    NULLABLE_INTS,
    SCHEMA_VERSION,
    arrow_schema,
    to_arrow,
)

PREDATES = {"val_split": 0.0}  # the value a column has in files written before it existed


class MigrationError(ValueError):
    """A file the migration cannot rewrite without losing or inventing something."""


def _exclude(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise MigrationError(f"decay_exclude {value!r} is not a list of patterns") from None
        value = parsed
    if isinstance(value, str):
        return [value]
    items = list(value)  # type: ignore[call-overload]
    if not all(isinstance(v, str) for v in items):
        raise MigrationError(f"decay_exclude {value!r} is not a list of strings")
    return items


def _precision(value: object, device: object) -> object:
    if value != "auto":
        return value
    return None if str(device).startswith("cuda") else "fp32"


def migrate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of one cell's file in the current schema (see the module docstring)."""
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise MigrationError(f"columns {unknown} are not in the record schema")
    out = pd.DataFrame(index=df.index)
    for col in COLUMNS:
        if col in df.columns:
            out[col] = df[col]
        elif col == "schema_version":
            out[col] = SCHEMA_VERSION
        else:
            out[col] = PREDATES.get(col)
    out["schema_version"] = SCHEMA_VERSION
    out["decay_exclude"] = [_exclude(v) for v in out["decay_exclude"]]
    out["error_message"] = out["error_message"].map(
        lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) or v == ""
        else v)
    out["precision"] = [_precision(p, d) for p, d in zip(out["precision"], out["device"],
                                                          strict=True)]
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out.astype({"schema_version": "int64", "epoch": "int64", "step": "int64"}
                      | dict.fromkeys(FLOAT_COLUMNS, "float64")
                      | dict.fromkeys(NULLABLE_INTS, "Int64")).reset_index(drop=True)


def current(path: Path) -> bool:
    """Whether `path` is already in the current schema (types and version)."""
    if not pq.read_schema(path).remove_metadata().equals(arrow_schema()):
        return False
    versions = pq.read_table(path, columns=["schema_version"]).column(0).to_pylist()
    return all(v == SCHEMA_VERSION for v in versions)


def migrate_file(path: Path, check: bool = False) -> bool:
    """Rewrite `path` into the current schema; False if it already was (nothing written)."""
    if current(path):
        return False
    table = to_arrow(migrate_frame(pd.read_parquet(path)))
    if not check:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return True


def main(argv: list[str] | None = None) -> int:
    """0: every file is (now) in the current schema; 1: a file could not be migrated (or,
    with --check, would change); 2: an unknown study."""
    parser = argparse.ArgumentParser(prog="harness migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", metavar="study",
                        help="a study name under --results-dir, or a study path")
    parser.add_argument("--results-dir", default="results", type=Path)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the files that would change")
    args = parser.parse_args(argv)
    folders = []
    for name in args.studies:
        study = next((p for p in (Path(name), args.results_dir / name)
                      if (p / "runs").is_dir()), None)
        if study is None:
            print(f"harness migrate: unknown study {name!r} (no {args.results_dir / name}/runs)",
                  file=sys.stderr)
            return 2
        folders.append(study)
    bad = 0
    for study in folders:
        changed = kept = 0
        for path in sorted((study / "runs").glob("*.parquet")):
            try:
                if migrate_file(path, args.check):
                    changed += 1
                else:
                    kept += 1
            except (MigrationError, OSError, ValueError, TypeError) as err:
                bad += 1
                print(f"harness migrate: {path}: {err}; left as it is", file=sys.stderr)
        verb = "would rewrite" if args.check else "rewrote"
        print(f"{study}: {verb} {changed} files into schema version {SCHEMA_VERSION}, "
              f"{kept} already in it")
        bad += changed if args.check else 0
    return 1 if bad else 0
