"""The record schema shared by every sink: a cell's parquet file (the source of truth) and W&B.

A cell's parquet file `<results>/<study>/runs/<run_id>.parquet` has one row per trained
epoch and the columns `COLUMNS`, in this order, typed as `SCHEMA` says (one schema for every
study, so `pyarrow.dataset`, polars and DuckDB read all of `results/` at once): the schema's
`schema_version`, the cell's identity and hyperparameters (repeated on each row), the data it
saw (`data_fingerprint`, `data_source`), its final `status` (completed | diverged | failed) and
`error_message`, the epoch's `EpochMetrics` and the UTC `timestamp` it was recorded at, and
provenance. Unknown values are null, never 0 or "" (`n_train` and `num_classes` of a cell whose
data never loaded, `error_message` when there is no error, `git_sha` when neither the
harness's checkout nor its wheel knows its commit, `gpu_model` off CUDA). `decay_exclude` is a
list of strings and `precision` the one actually used (bf16 | fp16 | fp32, never auto).
Errors are fractions in [0, 1] (reports print percent).
`harness.sweep.records.frame` builds the rows; `harness.analysis` reads them without torch;
`harness migrate` rewrites files of an older schema into this one (`harness.cli.migrate`).
README.md ("Record schema") shows `SCHEMA` as a table; a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCHEMA_VERSION = 1  # files without the column are version 0: the schema before versioning


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int               # 1-based
    step: int                # optimizer steps so far
    lr_multiplier: float     # eta_t after the epoch's last step
    weight_decay: float      # lambda used in this epoch (after normalization)
    train_loss: float        # mean over the epoch's training batches (augmented, train mode)
    train_error: float       # top-1, fraction
    test_loss: float         # NaN when not evaluated this epoch
    test_error: float
    test_error_top5: float
    val_loss: float          # on the images held out by val_split or val_subset (NaN: none)
    val_error: float         # top-1 there: choose hyperparameters on it, score on test
    param_norm: float        # ||theta||_2 over all parameters
    elapsed_s: float         # wall time since the cell started (resumed runs include before)
    images_per_s: float      # training throughput of this epoch (compile time excluded)


@dataclass(frozen=True)
class Column:
    name: str
    type: str        # the Arrow type: string | int64 | float64 | bool | list<string> |
                     # timestamp[us, UTC]
    unit: str        # "" when the value has none
    meaning: str


_C = Column
SCHEMA: tuple[Column, ...] = (
    _C("schema_version", "int64", "", f"version of this schema ({SCHEMA_VERSION}; files "
       "without the column are 0, `harness migrate` rewrites them)"),
    _C("run_id", "string", "", "hash of the cell's canonical config (seed included)"),
    _C("study", "string", "", "the study (folder under results/)"),
    _C("status", "string", "", "completed, diverged or failed: the cell's final state"),
    _C("error_message", "string", "", "why the cell failed or diverged; null otherwise"),
    _C("dataset", "string", "", "dataset name (`dataset=`)"),
    _C("model", "string", "", "model name (`model=`)"),
    _C("optimizer", "string", "", "optimizer name (`optimizer=`)"),
    _C("decay", "string", "", "decay mode: none, l2, decoupled, decoupled_lr"),
    _C("lr", "float64", "alpha", "base learning rate alpha (`optimizer.lr`)"),
    _C("weight_decay_norm", "float64", "lambda_norm",
       "normalized decay lambda_norm when `normalized`, else null"),
    _C("normalized", "bool", "", "whether lambda = lambda_norm * sqrt(b / (B*T))"),
    _C("decay_exclude", "list<string>", "", "`decay.exclude`: parameters not decayed"),
    _C("schedule", "string", "", "schedule name (`schedule=`)"),
    _C("epochs", "int64", "epochs", "epochs the cell trains (T)"),
    _C("batch_size", "int64", "images", "batch size b"),
    _C("n_train", "int64", "images", "training images B (null: data never loaded)"),
    _C("val_split", "float64", "fraction", "fraction of the training images held out "
       "for validation (0: none)"),
    _C("val_subset", "int64", "images", "validation images drawn outside the training "
       "subset (null: none)"),
    _C("num_classes", "int64", "classes", "number of classes (null: data never loaded)"),
    _C("seed", "int64", "", "seed of the init and batch order"),
    _C("precision", "string", "", "bf16, fp16 or fp32 as trained (null: unknown)"),
    _C("data_fingerprint", "string", "", "sha256:<hex> of the arrays trained, validated and "
       "tested on (train subset, validation, test: dtype, shape and bytes); null: unknown"),
    _C("data_source", "string", "", "absolute path the data was read from (a folder or a "
       "file); null: generated or unknown"),
    _C("epoch", "int64", "epochs", "1-based epoch of this row (0: a failed cell's only row)"),
    _C("step", "int64", "steps", "optimizer steps so far"),
    _C("lr_multiplier", "float64", "", "eta_t after the epoch's last step"),
    _C("weight_decay", "float64", "lambda", "lambda used in this epoch (after normalization)"),
    _C("train_loss", "float64", "nats", "mean cross-entropy over the epoch's training batches"),
    _C("train_error", "float64", "fraction", "top-1 error on the training batches"),
    _C("test_loss", "float64", "nats", "cross-entropy on the test set (NaN: not evaluated)"),
    _C("test_error", "float64", "fraction", "top-1 error on the test set (NaN: not evaluated)"),
    _C("test_error_top5", "float64", "fraction", "top-5 error on the test set"),
    _C("val_loss", "float64", "nats", "cross-entropy on the validation images (NaN: none)"),
    _C("val_error", "float64", "fraction", "top-1 error on the validation images (NaN: none)"),
    _C("param_norm", "float64", "", "L2 norm of all parameters"),
    _C("elapsed_s", "float64", "s", "wall time since the cell started (resumes included)"),
    _C("images_per_s", "float64", "images/s", "training throughput of this epoch"),
    _C("timestamp", "timestamp[us, UTC]", "", "when the row was recorded"),
    _C("git_sha", "string", "", "commit of the harness code (-dirty: with local changes)"),
    _C("harness_version", "string", "", "installed harness version"),
    _C("torch_version", "string", "", "PyTorch version"),
    _C("device", "string", "", "device trained on (cpu, cuda:0, ...)"),
    _C("cpu_model", "string", "", "CPU model name"),
    _C("cpu_threads", "int64", "threads", "torch CPU threads"),
    _C("gpu_model", "string", "", "GPU model name (null: not trained on CUDA)"),
)
del _C

STATUSES = ("completed", "diverged", "failed")
METRIC_COLUMNS = [f.name for f in dataclasses.fields(EpochMetrics)]
CELL_COLUMNS = [
    "run_id", "study", "status", "error_message", "dataset", "model", "optimizer", "decay",
    "lr", "weight_decay_norm", "normalized", "decay_exclude", "schedule", "epochs",
    "batch_size", "n_train", "val_split", "val_subset", "num_classes", "seed", "precision",
]
DATA_COLUMNS = ["data_fingerprint", "data_source"]
PROVENANCE_COLUMNS = ["git_sha", "harness_version", "torch_version", "device", "cpu_model",
                      "cpu_threads", "gpu_model"]
COLUMNS = ["schema_version", *CELL_COLUMNS, *DATA_COLUMNS, *METRIC_COLUMNS, "timestamp",
           *PROVENANCE_COLUMNS]
TYPES = {c.name: c.type for c in SCHEMA}
STRING_COLUMNS = [c for c in COLUMNS if TYPES[c] == "string"]
NULLABLE_INTS = ["n_train", "val_subset", "num_classes", "cpu_threads"]
FLOAT_COLUMNS = [c for c in COLUMNS if TYPES[c] == "float64"]

assert COLUMNS == [c.name for c in SCHEMA], "SCHEMA lists the columns in COLUMNS' order"


def arrow_schema():  # -> pyarrow.Schema (pyarrow imported only when asked)
    """`SCHEMA` as the pyarrow schema every parquet file of a cell is written in."""
    import pyarrow as pa

    kinds = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
             "bool": pa.bool_(), "list<string>": pa.list_(pa.string()),
             "timestamp[us, UTC]": pa.timestamp("us", tz="UTC")}
    return pa.schema([pa.field(c.name, kinds[c.type]) for c in SCHEMA])


def to_arrow(df):  # pandas.DataFrame -> pyarrow.Table
    """`df` (exactly `COLUMNS`, pandas dtypes as `harness.sweep.records.frame` makes them) as
    an Arrow table in `arrow_schema`: every column typed as the spec says, even when all null
    or empty, whatever string types pandas chose."""
    import pyarrow as pa

    return pa.Table.from_pandas(df[COLUMNS], schema=arrow_schema(), preserve_index=False)
