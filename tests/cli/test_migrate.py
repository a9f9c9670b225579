"""One record schema for every study (issue 24, Records): `harness migrate` rewrites files of an
older schema, keeping run_ids and numbers; every committed parquet file reads in one go through
pyarrow.dataset (and polars and DuckDB where installed); the analysis reads old and new files
alike; README.md documents each column."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from harness.analysis import frames
from harness.cli import main as harness_main
from harness.spec.records import COLUMNS, SCHEMA, SCHEMA_VERSION, arrow_schema
from tests import planted
from tests.conftest import ROOT


def _committed() -> list[Path]:
    """The parquet files git tracks under results/ (a study being trained has more files in
    the working tree, in whatever schema its code wrote; they are not committed results)."""
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "results/*/runs/*.parquet"],
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is there
        return sorted(ROOT.glob("results/*/runs/*.parquet"))
    return sorted(ROOT / p for p in listed)


COMMITTED = _committed()
# The columns of the committed fig2_lite_cpu files (schema version 0, before versioning).
OLD = ["run_id", "study", "status", "error_message", "dataset", "model", "optimizer", "decay",
       "lr", "weight_decay_norm", "normalized", "decay_exclude", "schedule", "epochs",
       "batch_size", "n_train", "num_classes", "seed", "precision", "epoch", "step",
       "lr_multiplier", "weight_decay", "train_loss", "train_error", "test_loss", "test_error",
       "test_error_top5", "param_norm", "elapsed_s", "images_per_s", "git_sha",
       "harness_version", "torch_version", "device"]


def old_file(path, df: pd.DataFrame) -> pd.DataFrame:
    """`df` written as the committed fig2_lite_cpu files are: no schema_version, fewer columns,
    decay_exclude a string, "" for no error, precision auto, strings as large_string."""
    old = df[OLD].copy()
    old["decay_exclude"] = ""
    old["error_message"] = old["error_message"].fillna("")
    old["precision"] = "auto"
    old["n_train"] = old["n_train"].astype("int64")
    old["num_classes"] = old["num_classes"].astype("int64")
    table = pa.Table.from_pandas(old, preserve_index=False)
    table = table.cast(pa.schema([pa.field(f.name, pa.large_string()) if f.type == pa.string()
                                  else f for f in table.schema]))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return old


def test_migrate_rewrites_old_files_keeping_run_ids_and_numbers(tmp_path, capsys):
    runs = tmp_path / "results" / "old" / "runs"
    olds = {}
    for lr in (0.25, 0.5):
        df = planted.cell_frame(0.2, lr=lr, lam=0.01, study="old")
        olds[df["run_id"].iloc[0]] = old_file(runs / f"{df['run_id'].iloc[0]}.parquet", df)
    new = planted.cell_frame(0.3, lr=1.0, lam=0.01, study="old")
    planted.write(runs, new)                      # a file already in the schema
    with pytest.raises(Exception):                # noqa: B017 - arrow's error type varies
        pads.dataset(sorted(runs.glob("*.parquet"))).to_table()
    before_cells = frames.cells(frames.load_runs(runs.parent)[0])
    newest = (runs / f"{new['run_id'].iloc[0]}.parquet").stat().st_mtime_ns

    args = ["migrate", "old", "--results-dir", str(tmp_path / "results")]
    assert harness_main([*args, "--check"]) == 1
    assert harness_main(args) == 0
    assert "rewrote 2 files into schema version" in capsys.readouterr().out
    assert harness_main([*args, "--check"]) == 0  # now current: nothing to do
    assert (runs / f"{new['run_id'].iloc[0]}.parquet").stat().st_mtime_ns == newest

    table = pads.dataset(sorted(runs.glob("*.parquet"))).to_table()
    assert table.schema.remove_metadata().equals(arrow_schema()) and table.num_rows == 9
    for run_id, old in olds.items():
        path = runs / f"{run_id}.parquet"
        assert pq.read_schema(path).remove_metadata().equals(arrow_schema())
        got = pd.read_parquet(path)
        assert list(got.columns) == COLUMNS and (got["run_id"] == run_id).all()
        assert (got["schema_version"] == SCHEMA_VERSION).all()
        for col in OLD:
            if old[col].dtype.kind in "fi":
                np.testing.assert_array_equal(got[col].astype(float), old[col].astype(float))
        assert [list(v) for v in got["decay_exclude"]] == [[]] * len(got)
        assert got["error_message"].isna().all() and (got["precision"] == "fp32").all()
        assert (got["val_split"] == 0.0).all() and got["val_error"].isna().all()
        assert got[["val_subset", "cpu_model", "gpu_model", "data_fingerprint"]].isna().all().all()
    after_cells = frames.cells(frames.load_runs(runs.parent)[0])
    pd.testing.assert_frame_equal(after_cells, before_cells)


def test_migrate_names_what_it_cannot_rewrite(tmp_path, capsys):
    runs = tmp_path / "s" / "runs"
    df = planted.cell_frame(0.2, lr=0.5, lam=0.01, study="s")
    old = old_file(runs / "a.parquet", df)
    pq.write_table(pa.Table.from_pandas(old.assign(mystery=1), preserve_index=False),
                   runs / "b.parquet")
    before = (runs / "b.parquet").read_bytes()
    assert harness_main(["migrate", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"b\.parquet: columns \['mystery'\] are not in the record schema; left",
                     err) and err.count("\n") == 1
    assert (runs / "b.parquet").read_bytes() == before
    assert harness_main(["migrate", "nope", "--results-dir", str(tmp_path)]) == 2


def test_every_committed_parquet_reads_in_one_go_through_pyarrow_dataset():
    assert COMMITTED, "no committed results found"
    table = pads.dataset(COMMITTED, format="parquet").to_table()
    assert table.schema.remove_metadata().equals(arrow_schema())
    assert set(table.column("schema_version").to_pylist()) == {SCHEMA_VERSION}
    errors = pd.Series(table.column("test_error").to_pylist(), dtype=float).dropna()
    assert len(errors) and errors.between(0, 1).all()  # a fraction, not percent
    assert table.num_rows == sum(pq.read_metadata(p).num_rows for p in COMMITTED)


def test_every_committed_parquet_reads_in_one_go_through_polars():
    pl = pytest.importorskip("polars")
    df = pl.concat([pl.read_parquet(p) for p in COMMITTED], how="vertical")
    assert df.columns == COLUMNS
    assert pl.scan_parquet([str(p) for p in COMMITTED]).collect().height == df.height


def test_every_committed_parquet_reads_in_one_go_through_duckdb():
    duckdb = pytest.importorskip("duckdb")
    files = ", ".join(f"'{p}'" for p in COMMITTED)
    con = duckdb.connect()
    rows = con.execute(f"select * from read_parquet([{files}])").fetchall()  # every column
    assert len(rows) == sum(pq.read_metadata(p).num_rows for p in COMMITTED)
    (runs, version, excluded), = con.execute(
        "select count(distinct run_id), min(schema_version), max(len(decay_exclude)) "
        f"from read_parquet([{files}])").fetchall()
    assert (runs, version, excluded) == (len(COMMITTED), SCHEMA_VERSION, 0)


def test_the_readme_documents_each_column_its_type_and_unit():
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \| ([^|]*?) \| [^|]+ \|$", text, re.M)
    assert [(c.name, c.type, c.unit) for c in SCHEMA] == \
        [(name, kind.strip("` "), unit.strip()) for name, kind, unit in rows]
