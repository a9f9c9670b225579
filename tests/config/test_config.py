"""harness.config: Hydra's dict -> checked cells (validate.py), identified by run_id (job.py)."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math

import pandas as pd
import pytest

from harness.cli import checks, run
from harness.config import compose
from harness.config import job as config
from harness.config.job import Config
from harness.config.validate import ConfigError, expand
from tests.conftest import ROOT


class _Checked(BaseException):
    """Ends `harness run` at its check, carrying the cells it composed (nothing launched)."""


def validate(argv):
    """The cells `harness run argv` composes and expands (through hydra.main, its sweeper and
    its callback) before any job starts; its one-line refusal as a ConfigError. The data and
    results checks are left out: a study's cells compose whatever data this machine has."""
    def composed_only(configs):
        raise _Checked(list({c.run_id: c for cfg in configs for c in checks.cells(cfg)}.values()))

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        patch.setattr(checks, "check", composed_only)
        try:
            code = run.main(argv)
        except _Checked as checked:
            return checked.args[0]
    assert code == 2, err.getvalue()
    raise ConfigError(err.getvalue().strip().removeprefix("harness run: error: "))


BASE = ["study=s", "dataset=synthetic", "model=small", "optimizer=adam", "optimizer.lr=1e-3",
        "decay=l2", "decay.weight_decay=0.1", "schedule=cosine", "train.epochs=2",
        "train.batch_size=64", "logger=none"]


@functools.cache
def _base() -> dict:
    return compose.raw(BASE)


def raw(**sections):
    """configs/ composed with BASE, then each section updated by a dict, recursively."""
    def merge(old, new):
        if not (isinstance(old, dict) and isinstance(new, dict)):
            return new
        return old | {k: merge(old.get(k), v) for k, v in new.items()}

    return merge(copy.deepcopy(_base()), sections)


def test_lists_expand_to_the_cross_product_with_distinct_ids():
    cells = expand(raw(optimizer={"lr": [0.1, 0.01]}, decay={"weight_decay": [0, 1e-4, 1e-3]}))
    assert [(c.optimizer.lr, c.decay.weight_decay) for c in cells] == [
        (0.1, 0.0), (0.1, 1e-4), (0.1, 1e-3), (0.01, 0.0), (0.01, 1e-4), (0.01, 1e-3)]
    assert len({c.run_id for c in cells}) == 6


def test_run_id_ignores_logging_and_output_but_not_seed():
    a = expand(raw())[0]
    b = expand(raw(logger={"wandb": {"mode": "offline"}}, run={"results_dir": "elsewhere"},
                   train={"device": "cpu", "pack": "4"}, dataset={"root": "/data"}))[0]
    c = expand(raw(seed=1))[0]
    assert a.run_id == b.run_id != c.run_id
    assert len(a.run_id) == 12 and isinstance(a, Config)
    # val_split joined the identity later: at its default 0 the earlier run_ids still hold
    assert a.run_id == "aca12b18c6db"  # this config's run_id before val_split existed
    assert expand(raw(dataset={"val_split": 0.1}))[0].run_id != a.run_id


@pytest.mark.parametrize("section,value,message", [
    ("optimizer", {"name": "adamw"},
     "optimizer='adamw' is not valid; choose one of: adam, rmsprop, sgd"),
    ("decay", {"mode": "wd"}, "decay='wd' is not valid; choose one of: none, l2, decoupled"),
    ("optimizer", {"lr": -0.1}, "optimizer.lr=-0.1 is not valid; it must be a number > 0"),
    ("decay", {"weight_decay": math.inf}, "decay.weight_decay=inf is not valid"),
    ("decay", {"weight_decay": math.nan}, "decay.weight_decay=nan is not valid"),
    ("train", {"epochs": 0}, "train.epochs=0 is not valid; it must be an integer >= 1"),
    ("train", {"batch_size": 6000}, "train.batch_size=6000 is larger than the training set"),
    ("optimizer", {"betas": [0.9, 1.0]}, "optimizer.betas=[0.9, 1.0] is not valid"),
    ("train", {"epohcs": 3}, "train.epohcs is not a valid key; valid keys: batch_size"),
    ("decay", {"normalized": "maybe"}, "type decay.normalized=true or decay.normalized=false"),
    ("dataset", {"augment": 1}, "dataset.augment=1 is not valid; type dataset.augment=true"),
    ("seed", 2**32, "seed=4294967296 is not valid; it must be an integer in 0..4294967295"),
    ("seed", -1, "seed=-1 is not valid"),
    ("schedule", {"name": "step", "milestones": [1, 3], "factor": 0.1},
     "schedule.milestones=[1, 3] has epochs outside the run (train.epochs=2); give milestones "
     "in 1..1, e.g. schedule.milestones=[1]"),
    ("schedule", {"name": "step", "milestones": [30, 60, 80], "factor": 0.1},
     "schedule.milestones=[30, 60, 80] has epochs outside the run (train.epochs=2)"),
    ("schedule", {"name": "step", "milestones": [2, 1], "factor": 0.1}, "give increasing epochs"),
    ("schedule", {"name": "step", "milestones": [1]},
     "schedule.factor is missing; schedule=step takes milestones, factor "
     "(each file in configs/schedule/ gives them)"),
    ("schedule", {"t_0": 10}, "schedule.t_0 is not an option of schedule=cosine; it takes: no "
                              "options"),
    ("optimizer", {"momentum": 0.5}, "optimizer.momentum is not an option of optimizer=adam; "
                                     "it takes: betas, eps"),
    ("optimizer", {"name": "sgd"}, "optimizer.betas is not an option of optimizer=sgd; it "
                                   "takes: momentum, dampening, nesterov"),
    ("optimizer", {"name": "rmsprop", "betas": None, "eps": 1e-8, "alpha": 1.0, "momentum": 0},
     "optimizer.betas is not an option of optimizer=rmsprop"),
    ("dataset", {"val_split": None, "path": None, "augment": True} | {"x": 1},
     "dataset.x is not a valid key"),
    ("optimizer", {"betas": ["a", 0.9]}, "optimizer.betas='a' is not valid; it must be a number"),
    ("schedule", {"name": "step", "milestones": [1], "factor": 2}, "schedule.factor=2 is not "
                                                                   "valid; it must be in (0, 1]"),
    ("logger", {"wandb": {"colour": 1}}, "logger.wandb.colour is not a valid key; valid keys: "
                                         "progress, wandb.dir"),
    ("dataset", {"train_subset": 0}, "dataset.train_subset=0 is not valid"),
    ("optimizer", {"betas": 0.9}, "optimizer.betas=[0.9] is not valid; give two numbers"),
    ("dataset", {"val_split": 1.0}, "dataset.val_split=1.0 is not valid; give a fraction in"),
])
def test_bad_values_give_one_line_naming_key_and_valid_values(section, value, message):
    with pytest.raises(ConfigError) as err:
        expand(raw(**{section: value}))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,message", [
    (["optimizer=adamw"], "optimizer=adamw is not valid; choose one of: adam, rmsprop, sgd"),
    (["optimizer.lrr=0.1"], "optimizer.lrr is not a valid key; valid keys of optimizer:"),
    (["decay.weight_decay=-1"], "decay.weight_decay=-1 is not valid"),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"],
     "optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0"),
    (["-m", "optimizer.lr=0.1,-0.2"], "optimizer.lr=-0.2 is not valid"),
    (["experiment=demo"], "experiment=demo: experiment is not in the default config; type "
                          "+experiment=demo (with the +)"),
    (["+experiment=fig2_lite"], "study fig2_lite sweeps panel=sgd_l2,"),
    (["optimizer.lr=0.1,0.01"], "optimizer.lr=0.1,0.01 is a sweep: add -m to run one job per "
                                "value, or type optimizer.lr=[0.1,0.01] for one run with a list"),
    (["dataset.root=~/cifar"], "the shell does not expand ~ after dataset.root=; type "
                               "dataset.root=/"),
    (["-m", "+experiment=budgets", "train.epochs=25,0"], "train.epochs=0 is not valid"),
    (["-m", "+experiment=fig1_schedules", "train.epochs=20"],
     "schedule.milestones=[30, 60, 80] has epochs outside the run (train.epochs=20); give "
     "milestones in 1..19, e.g. schedule.milestones=[8,15,19]"),
    (["--config-dir", "/no/such/dir"], "--config-dir /no/such/dir is not a directory"),
])
def test_hydra_overrides_are_validated_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_study_composes_with_its_own_sweep():
    counts = {study: len(run.cells_of([f"+experiment={study}"])) for study in compose.studies()}
    expected = {"budgets": 4 * (10 + 10), "demo": 5 * 25, "fig1_schedules": 3 * 2 * 64,
                "fig2_decay": 5 * 64 + 2 * 8, "fig2_lite": 5 * 64 + 2 * 8,
                "fig2_lite_cpu": 5 * 25 + 5, "restarts": 2 * 2 * 2}
    assert counts.items() >= expected.items()  # every study composes; these with these sizes
    assert len(validate(["panel=adam_decoupled_lr", "dataset=synthetic"])) == 64


def test_cells_compose_the_packaged_defaults_and_a_missing_value_is_an_error():
    [cell] = compose.cells(["optimizer=sgd", "decay=l2"])
    assert (cell.optimizer.lr, cell.optimizer.hyper, cell.decay.weight_decay) == (
        0.05, (("dampening", 0.0), ("momentum", 0.9), ("nesterov", False)), 5e-4)
    assert (cell.dataset.name, cell.model.name, cell.train.epochs) == ("cifar10", "resnet20", 100)
    with pytest.raises(ConfigError, match="^optimizer.lr is missing; set optimizer.lr=...$"):
        expand(raw(optimizer={"lr": None}))
    with pytest.raises(ConfigError, match="^seed is missing"):
        expand({k: v for k, v in raw().items() if k != "seed"})


def test_each_spec_names_what_the_torch_side_builds():
    """The torch-free names config validation reads (harness.spec) are the names the training
    code can build: a model YAML without its module, or an optimizer without its direction,
    fails here rather than in the middle of a sweep (a model's name is checked against the
    torch registry itself before a run: `harness.cli.run`)."""
    from harness.spec import configs, dataset, optimizer
    from harness.train import models
    from harness.train.datasets import synthetic
    from harness.train.optim_steps import DIRECTIONS

    assert [spec["name"] for spec in configs.group("model")] == sorted(models.MODELS)
    assert set(optimizer.OPTIMIZERS) == set(DIRECTIONS) == {"adam", "rmsprop", "sgd"}
    from harness.train.data import READERS

    assert list(READERS) == list(dataset.DATASETS)
    assert {n for n, r in READERS.items() if r.fetch} == {
        n for n, d in dataset.DATASETS.items() if d.fetchable}
    assert dataset.DATASETS["synthetic"].sizes == (synthetic.DEFAULT_TRAIN, synthetic.DEFAULT_TEST)
    assert len(synthetic.generate().x_train) == dataset.DATASETS["synthetic"].sizes[0]


COMMITTED = sorted(p.name for p in (ROOT / "results").iterdir()
                   if (p / "runs").is_dir() and p.name in compose.studies())


# Studies that commit their finished cells over several sessions (REPRODUCTION.md, issue 26):
# some of their cells have no file yet. Move a study out once every cell is committed.
IN_PROGRESS = {"pilot_cpu", "claims_cpu", "budgets_cpu"}


@pytest.mark.parametrize("study", COMMITTED)
def test_committed_studies_keep_their_run_ids(study):
    """Every cell the study composes today has the run_id of its committed parquet file: the
    identity (config.canonical_json) did not move under it. A study in progress: the cells it
    has finished are among those it composes."""
    ids = {c.run_id for c in run.cells_of([f"+experiment={study}"])}
    committed = {p.stem for p in (ROOT / "results" / study / "runs").glob("*.parquet")}
    if study in IN_PROGRESS:
        assert ids & committed, sorted(committed)[:5]
        return
    assert ids and ids <= committed, sorted(ids - committed)[:5]


@pytest.mark.parametrize("study", sorted(IN_PROGRESS & set(COMMITTED)))
def test_every_committed_run_of_a_study_in_progress_recomposes_to_its_run_id(study):
    """A study in progress trains part of its sweep at a time, and some cells (claim 1's edge
    extensions) lie outside its default grid: each committed run is recomposed from the grid
    its record names, as scripts/claims_study.sh passes it, and keeps its run_id."""
    cols = ["run_id", "optimizer", "decay", "lr", "weight_decay_norm", "epochs", "seed"]
    records = pd.concat([pd.read_parquet(p, columns=cols).tail(1) for p in
                         (ROOT / "results" / study / "runs").glob("*.parquet")])
    composed = set()
    for (opt, decay, lr, epochs), g in records.groupby(["optimizer", "decay", "lr", "epochs"]):
        panel = f"{opt}_{decay}"
        lams = ",".join(repr(float(w)) for w in sorted(set(g["weight_decay_norm"])))
        composed |= {c.run_id for c in run.cells_of(
            [f"+experiment={study}", f"panel={panel}", f"grid.{panel}.lr=[{lr!r}]",
             f"train.epochs={epochs}", f"seed={','.join(str(s) for s in sorted(set(g.seed)))}",
             *([f"grid.{panel}.weight_decay=[{lams}]"] if decay != "none" else [])])}
    assert set(records["run_id"]) <= composed, sorted(set(records["run_id"]) - composed)[:5]


def test_an_option_added_later_keeps_ids_at_its_old_value_and_moves_them_otherwise():
    [sgd] = compose.cells(["optimizer=sgd"])
    [nesterov] = compose.cells(["optimizer=sgd", "optimizer.nesterov=true"])
    assert "dampening" not in config.canonical_json(sgd)  # at 0.0, as before it existed
    assert "nesterov" not in config.canonical_json(sgd)
    assert sgd.run_id != nesterov.run_id
