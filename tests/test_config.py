"""harness.config: the typed layer between Hydra's dict and the rest of the harness."""

from __future__ import annotations

import math

import pytest

from harness.config import Config, ConfigError, expand
from harness.run import validate


def raw(**sections):
    base = {"study": "s", "seed": 0, "dataset": {"name": "synthetic"}, "model": {"name": "small"},
            "optimizer": {"name": "adam", "lr": 1e-3}, "decay": {"mode": "l2", "weight_decay": 0.1},
            "schedule": {"name": "cosine"}, "train": {"epochs": 2, "batch_size": 64},
            "logger": {"wandb": {"mode": "disabled"}}, "run": {}}
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


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


@pytest.mark.parametrize("section,value,message", [
    ("optimizer", {"name": "adamw"}, "optimizer='adamw' is not valid; choose one of: sgd, adam"),
    ("decay", {"mode": "wd"}, "decay='wd' is not valid; choose one of: none, l2, decoupled"),
    ("optimizer", {"lr": -0.1}, "optimizer.lr=-0.1 is not valid; it must be a number > 0"),
    ("decay", {"weight_decay": math.inf}, "decay.weight_decay=inf is not valid"),
    ("decay", {"weight_decay": math.nan}, "decay.weight_decay=nan is not valid"),
    ("train", {"epochs": 0}, "train.epochs=0 is not valid; it must be an integer >= 1"),
    ("train", {"batch_size": 6000}, "train.batch_size=6000 is larger than the training set"),
    ("optimizer", {"betas": [0.9, 1.0]}, "optimizer.betas=[0.9, 1.0] is not valid"),
    ("train", {"epohcs": 3}, "train.epohcs is not a valid key; valid keys: batch_size"),
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
    (["-m", "optimizer.lr=0.1,-0.2"], "optimizer.lr=-0.2 is not valid"),
])
def test_hydra_overrides_are_validated_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate([o for o in overrides if not o.startswith("-")])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_experiment_and_panel_composes():
    for experiment in ("fig2_decay", "fig2_lite", "fig1_schedules", "budgets", "restarts"):
        validate([f"+experiment={experiment}"])
    validate(["panel=adam_decoupled_lr", "dataset=synthetic"])


def test_config_choices_are_the_registries_of_the_modules_they_name():
    """config.py validates before torch is imported, so it keeps its own lists of keys;
    they must stay equal to the registries that build the objects."""
    from harness import config, data, models, optim, schedules

    assert set(config.MODELS) == set(models.MODELS)
    assert set(config.DATASETS) == set(data.DATASETS)
    assert config.OPTIMIZERS == optim.OPTIMIZERS and config.DECAY_MODES == optim.DECAY_MODES
    assert set(config.SCHEDULES) == set(schedules.SCHEDULES)
