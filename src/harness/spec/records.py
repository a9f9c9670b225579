"""The record schema shared by every sink: a cell's parquet file (the source of truth) and W&B.

A cell's parquet file `<results>/<study>/runs/<run_id>.parquet` has one row per trained
epoch and the columns `COLUMNS`: the cell's identity and hyperparameters (repeated on each
row), its final `status` (completed | diverged | failed) and `error_message`, the epoch's
`EpochMetrics` and the UTC `timestamp` it was recorded at, and provenance. Unknown values are
null, never 0 or "" (`n_train` and `num_classes` of a cell whose data never loaded,
`error_message` when there is no error, `git_sha` when neither the harness's checkout nor its
wheel knows its commit). `decay_exclude` is a list of strings and `precision` the one actually
used (bf16 | fp16 | fp32, never auto).
`harness.sweep.records.frame` builds the rows; `harness.analysis` reads them without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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


STATUSES = ("completed", "diverged", "failed")
METRIC_COLUMNS = [f.name for f in dataclasses.fields(EpochMetrics)]
CELL_COLUMNS = [
    "run_id", "study", "status", "error_message", "dataset", "model", "optimizer", "decay",
    "lr", "weight_decay_norm", "normalized", "decay_exclude", "schedule", "epochs",
    "batch_size", "n_train", "val_split", "val_subset", "num_classes", "seed", "precision",
]
PROVENANCE_COLUMNS = ["git_sha", "harness_version", "torch_version", "device", "cpu_model",
                      "cpu_threads"]
COLUMNS = CELL_COLUMNS + METRIC_COLUMNS + ["timestamp"] + PROVENANCE_COLUMNS
STRING_COLUMNS = ["error_message", "precision", "git_sha", "harness_version", "device",
                  "cpu_model"]
NULLABLE_INTS = ["n_train", "val_subset", "num_classes", "cpu_threads"]
