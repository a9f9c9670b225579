"""harness.spec: each kind's one check, at the edges of every range, with its exact one line."""

from __future__ import annotations

import math

import pytest

from harness.spec import configs, dataset, decay, optimizer, schedule
from harness.spec.values import Number, SpecError

SGD = {"momentum": 0.9, "dampening": 0.0, "nesterov": False}
ADAM = {"betas": [0.9, 0.999], "eps": 1e-8}
RMSPROP = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0}
STEP = {"milestones": [30, 60, 80], "factor": 0.1}
RESTARTS = {"t_0": 10, "t_mult": 2}


def fails(check, *args, **kwargs) -> str:
    """The one line `check(*args, **kwargs)` raises."""
    with pytest.raises(SpecError) as err:
        check(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_optimizers_normalize_to_the_types_a_config_holds():
    assert optimizer.check("adam", ADAM) == {"betas": (0.9, 0.999), "eps": 1e-8}
    betas = optimizer.check("adam", {"betas": (0, 1 - 1e-12), "eps": 1})["betas"]
    assert betas == (0.0, 1 - 1e-12) and all(type(b) is float for b in betas)
    sgd = optimizer.check("sgd", {"momentum": 0, "dampening": "0.5", "nesterov": False})
    assert sgd == {"momentum": 0.0, "dampening": 0.5, "nesterov": False}
    assert type(sgd["momentum"]) is float
    assert list(optimizer.check("rmsprop", RMSPROP)) == ["alpha", "eps", "momentum"]
    assert optimizer.check("sgd", SGD | {"nesterov": True})["nesterov"] is True


def test_every_hyperparameter_of_the_packaged_yaml_has_a_type_and_range():
    for spec in configs.group("optimizer"):
        given = {k: v for k, v in spec.items() if k not in ("name", "lr")}
        assert optimizer.check(spec["name"], given).keys() == given.keys()


@pytest.mark.parametrize("name,changes,message", [
    ("sgd", {"momentum": 1}, "optimizer.momentum=1 is not valid; it must be in [0, 1)"),
    ("sgd", {"momentum": 1.0}, "optimizer.momentum=1.0 is not valid; it must be in [0, 1)"),
    ("sgd", {"momentum": -1e-12},
     "optimizer.momentum=-1e-12 is not valid; it must be a number >= 0"),
    ("sgd", {"momentum": math.nan},
     "optimizer.momentum=nan is not valid; it must be a number >= 0"),
    ("sgd", {"momentum": True}, "optimizer.momentum=True is not valid; it must be a number >= 0"),
    ("sgd", {"momentum": [0.9]},
     "optimizer.momentum=[0.9] is not valid; it must be a number >= 0"),
    ("sgd", {"dampening": 1}, "optimizer.dampening=1 is not valid; it must be in [0, 1)"),
    ("sgd", {"nesterov": 1},
     "optimizer.nesterov=1 is not valid; type optimizer.nesterov=true or optimizer.nesterov=false"),
    ("sgd", {"nesterov": "true"}, "optimizer.nesterov='true' is not valid; type "
                                  "optimizer.nesterov=true or optimizer.nesterov=false"),
    ("sgd", {"nesterov": True, "momentum": 0}, "optimizer.nesterov=true needs optimizer.momentum "
     "> 0 and optimizer.dampening=0; or type optimizer.nesterov=false"),
    ("sgd", {"nesterov": True, "dampening": 0.1}, "optimizer.nesterov=true needs "
     "optimizer.momentum > 0 and optimizer.dampening=0; or type optimizer.nesterov=false"),
    ("adam", {"eps": 0}, "optimizer.eps=0 is not valid; it must be a number > 0"),
    ("adam", {"eps": math.inf}, "optimizer.eps=inf is not valid; it must be a number > 0"),
    ("adam", {"eps": False}, "optimizer.eps=False is not valid; it must be a number > 0"),
    ("adam", {"betas": [0.9, 1.0]},
     "optimizer.betas=[0.9, 1.0] is not valid; give two numbers in [0, 1)"),
    ("adam", {"betas": (0.9, 1)},
     "optimizer.betas=[0.9, 1.0] is not valid; give two numbers in [0, 1)"),
    ("adam", {"betas": [0.9]}, "optimizer.betas=[0.9] is not valid; give two numbers in [0, 1)"),
    ("adam", {"betas": 0.9}, "optimizer.betas=[0.9] is not valid; give two numbers in [0, 1)"),
    ("adam", {"betas": [0.9, 0.99, 0.999]},
     "optimizer.betas=[0.9, 0.99, 0.999] is not valid; give two numbers in [0, 1)"),
    ("adam", {"betas": [True, 0.9]},
     "optimizer.betas=True is not valid; it must be a number >= 0"),
    ("adam", {"betas": ["a", 0.9]},
     "optimizer.betas='a' is not valid; it must be a number >= 0"),
    ("adam", {"betas": [math.nan, 0.9]},
     "optimizer.betas=nan is not valid; it must be a number >= 0"),
    ("rmsprop", {"alpha": 1}, "optimizer.alpha=1 is not valid; it must be in [0, 1)"),
    ("adam", {"momentum": 0.9},
     "optimizer.momentum is not an option of optimizer=adam; it takes: betas, eps"),
    ("sgd", {"betas": None}, "optimizer.betas is not an option of optimizer=sgd; it takes: "
                             "momentum, dampening, nesterov"),
])
def test_a_bad_hyperparameter_is_one_line(name, changes, message):
    given = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP}[name] | changes
    assert fails(optimizer.check, name, given) == message


def test_an_unknown_optimizer_or_a_missing_hyperparameter_is_one_line():
    assert fails(optimizer.check, "adamw", ADAM) == (
        "optimizer='adamw' is not valid; choose one of: adam, rmsprop, sgd")
    assert fails(optimizer.check, "adam", {"betas": (0.9, 0.999)}) == (
        "optimizer.eps is missing; optimizer=adam takes betas, eps (each file in "
        "configs/optimizer/ gives them)")
    assert optimizer.LR.check("optimizer.lr", "1e-3") == 1e-3
    assert fails(optimizer.LR.check, "optimizer.lr", 0) == (
        "optimizer.lr=0 is not valid; it must be a number > 0")


def test_schedules_normalize_to_the_types_a_config_holds():
    step = schedule.check("step", {"milestones": (3.0, "6"), "factor": 1})
    assert step == {"milestones": (3, 6), "factor": 1.0}
    assert [type(m) for m in step["milestones"]] == [int, int] and type(step["factor"]) is float
    assert schedule.check("step", STEP, epochs=81) == {"milestones": (30, 60, 80), "factor": 0.1}
    assert schedule.check("step", {"milestones": [], "factor": 0.5}, epochs=1)["milestones"] == ()
    restarts = schedule.check("warm_restarts", {"t_0": 1, "t_mult": 1.0})
    assert restarts == {"t_0": 1, "t_mult": 1} and type(restarts["t_mult"]) is int
    assert schedule.check("cosine", {}, epochs=1) == {} == schedule.check("constant", {})


@pytest.mark.parametrize("name,changes,message", [
    ("step", {"factor": 0}, "schedule.factor=0 is not valid; it must be a number > 0"),
    ("step", {"factor": 1 + 1e-9},
     "schedule.factor=1.000000001 is not valid; it must be in (0, 1]"),
    ("step", {"factor": True}, "schedule.factor=True is not valid; it must be a number > 0"),
    ("step", {"factor": math.nan}, "schedule.factor=nan is not valid; it must be a number > 0"),
    ("step", {"milestones": [60, 30]}, "schedule.milestones=[60, 30] is not valid; give "
                                       "increasing epochs, e.g. schedule.milestones=[30,60,80]"),
    ("step", {"milestones": [30, 30]}, "schedule.milestones=[30, 30] is not valid; give "
                                       "increasing epochs, e.g. schedule.milestones=[30,60,80]"),
    ("step", {"milestones": [0, 30]},
     "schedule.milestones=0 is not valid; it must be an integer >= 1"),
    ("step", {"milestones": [1.5]},
     "schedule.milestones=1.5 is not valid; it must be an integer >= 1"),
    ("step", {"milestones": [math.inf]},
     "schedule.milestones=inf is not valid; it must be an integer >= 1"),
    ("warm_restarts", {"t_0": 0}, "schedule.t_0=0 is not valid; it must be an integer >= 1"),
    ("warm_restarts", {"t_0": 0.5}, "schedule.t_0=0.5 is not valid; it must be an integer >= 1"),
    ("warm_restarts", {"t_mult": 0.99},
     "schedule.t_mult=0.99 is not valid; it must be an integer >= 1"),
    ("warm_restarts", {"t_mult": True},
     "schedule.t_mult=True is not valid; it must be an integer >= 1"),
    ("warm_restarts", {"milestones": [1]}, "schedule.milestones is not an option of "
                                           "schedule=warm_restarts; it takes: t_0, t_mult"),
    ("cosine", {"t_0": 3}, "schedule.t_0 is not an option of schedule=cosine; it takes: no "
                           "options"),
])
def test_a_bad_schedule_option_is_one_line(name, changes, message):
    given = {"step": STEP, "warm_restarts": RESTARTS, "cosine": {}}[name] | changes
    assert fails(schedule.check, name, given) == message


def test_milestones_must_lie_inside_the_run_when_the_epochs_are_known():
    assert fails(schedule.check, "step", STEP, epochs=80) == (
        "schedule.milestones=[30, 60, 80] has epochs outside the run (train.epochs=80); give "
        "milestones in 1..79, e.g. schedule.milestones=[30,60,79]")
    assert fails(schedule.check, "step", STEP, epochs=20) == (
        "schedule.milestones=[30, 60, 80] has epochs outside the run (train.epochs=20); give "
        "milestones in 1..19, e.g. schedule.milestones=[8,15,19]")
    assert fails(schedule.check, "step", {"milestones": [1], "factor": 0.1}, epochs=1) == (
        "schedule.milestones=[1] has epochs outside the run (train.epochs=1); give "
        "milestones in 1..0, or schedule=constant")
    assert fails(schedule.check, "step", {"milestones": [1]}) == (
        "schedule.factor is missing; schedule=step takes milestones, factor (each file in "
        "configs/schedule/ gives them)")
    assert fails(schedule.check, "linear", {}) == (
        "schedule='linear' is not valid; choose one of: constant, step, cosine, warm_restarts")


def test_decay_is_a_mode_and_a_finite_lambda_at_least_zero():
    assert decay.check("l2", 0) == ("l2", 0.0) and type(decay.check("l2", 0)[1]) is float
    assert decay.check("decoupled", "5e-4") == ("decoupled", 5e-4)
    assert fails(decay.check, "wd", 0.1) == (
        "decay='wd' is not valid; choose one of: none, l2, decoupled, decoupled_lr")
    assert fails(decay.check, "l2", -1e-12) == (
        "decay.weight_decay=-1e-12 is not valid; it must be a number >= 0")
    assert fails(decay.check, "l2", math.inf) == (
        "decay.weight_decay=inf is not valid; it must be a number >= 0")
    assert fails(decay.check, "l2", math.nan) == (
        "decay.weight_decay=nan is not valid; it must be a number >= 0")
    assert fails(decay.check, "l2", True) == (
        "decay.weight_decay=True is not valid; it must be a number >= 0")
    assert fails(decay.check, "decoupled", -1, key="lambda_norm") == (
        "lambda_norm=-1 is not valid; it must be a number >= 0")


def test_subsets_and_val_split_are_checked_once_for_config_and_data():
    assert dataset.split("cifar10", None, None, 0) == (None, None, 0.0, None)
    split = dataset.split("cifar10", 1.0, "2", 1 - 1e-9)
    assert split == (1, 2, 1 - 1e-9, None) and [type(v) for v in split[:3]] == [int, int, float]
    assert dataset.split("cifar10", 5000, None, 0, 10_000.0) == (5000, None, 0.0, 10_000)
    assert fails(dataset.split, "cifar10", 5000, None, 0.1, 10_000) == (
        "dataset.val_split=0.1 and dataset.val_subset=10000 both hold out validation images; "
        "valid: one of them (the other 0 / null)")
    assert fails(dataset.split, "cifar10", 5000, None, 0, 0) == (
        "dataset.val_subset=0 is not valid; it must be an integer >= 1")
    assert fails(dataset.split, "synthetic", 500, None, 0, 100) == (
        "dataset.val_subset=100: dataset 'synthetic' is generated at its subsets' sizes and has "
        "no other training images; valid: val_subset=null (hold out a fraction with val_split)")
    assert fails(dataset.split, "cifar10", 0, None, 0) == (
        "dataset.train_subset=0 is not valid; it must be an integer >= 1")
    assert fails(dataset.split, "cifar10", None, True, 0) == (
        "dataset.test_subset=True is not valid; it must be an integer >= 1")
    assert fails(dataset.split, "cifar10", 2.5, None, 0) == (
        "dataset.train_subset=2.5 is not valid; it must be an integer >= 1")
    assert fails(dataset.split, "cifar10", None, None, 1) == (
        "dataset.val_split=1 is not valid; give a fraction in [0, 1), e.g. dataset.val_split=0.1")
    assert fails(dataset.split, "cifar10", None, None, -0.1) == (
        "dataset.val_split=-0.1 is not valid; it must be a number >= 0")
    assert fails(dataset.split, "cifar10", None, None, math.nan) == (
        "dataset.val_split=nan is not valid; it must be a number >= 0")


def test_with_the_sizes_read_subsets_and_val_split_must_fit_them():
    assert dataset.split("npz", 5, 3, 0.0, sizes=(5, 3)) == (5, 3, 0.0, None)
    assert dataset.split("npz", 40, 3, 0.0, 10, sizes=(50, 3)).val_subset == 10
    assert fails(dataset.split, "npz", 40, None, 0.0, 11, sizes=(50, 5)) == (
        "dataset.val_subset=11 is out of range; valid: 1..10 (the training images outside "
        "train_subset=40)")
    assert fails(dataset.split, "npz", None, None, 0.0, 50, sizes=(50, 5)) == (
        "dataset.val_subset=50 is out of range; valid: 1..49 (one training image must remain)")
    assert fails(dataset.split, "npz", 6, None, 0.0, sizes=(5, 3)) == (
        "dataset.train_subset=6 is out of range; valid: 1..5")
    assert fails(dataset.split, "npz", None, 4, 0.0, sizes=(5, 3)) == (
        "dataset.test_subset=4 is out of range; valid: 1..3")
    assert dataset.split("synthetic", 9000, 2000, 0.0, sizes=(5000, 1000))[0] == 9000
    assert dataset.split("npz", 40, None, 0.025, sizes=(50, 5))[2] == 0.025  # holds out 1
    assert fails(dataset.split, "npz", 40, None, 0.001, sizes=(50, 5)) == (
        "dataset.val_split=0.001 holds out 0 of 40 training images; valid: a fraction that "
        "leaves at least one image on each side")
    assert fails(dataset.split, "npz", None, None, 0.99, sizes=(50, 5)) == (
        "dataset.val_split=0.99 holds out 50 of 50 training images; valid: a fraction that "
        "leaves at least one image on each side")
    def images(train_subset, val_split, val_subset=None, sizes=None, name="npz"):
        return dataset.train_images(name, dataset.Split(train_subset, None, val_split,
                                                        val_subset), sizes)
    assert images(None, 0.98, sizes=(50, 5)) == 1
    assert images(None, 0.1, name="cifar10") == 45_000
    assert images(None, 0.0, 10_000, name="cifar10") == 40_000
    assert images(5000, 0.0, 10_000, name="cifar10") == 5000
    assert images(None, 0.0) is None
    assert images(100, 0.1) == 90


def test_datasets_are_one_table_of_specs():
    assert list(dataset.DATASETS) == ["cifar10", "fashion_mnist", "imagenet32", "synthetic", "npz"]
    assert [n for n, d in dataset.DATASETS.items() if d.fetchable] == ["cifar10", "fashion_mnist"]
    assert fails(dataset.get, "mnist") == (
        "dataset='mnist' is not valid; choose one of: cifar10, fashion_mnist, imagenet32, "
        "synthetic, npz")
    cifar = dataset.get("cifar10")
    assert dataset.register(cifar) is cifar  # the same spec again: nothing changes
    import dataclasses
    assert fails(dataset.register, dataclasses.replace(cifar, sizes=(1, 1))) == (
        "dataset 'cifar10' is registered twice; choose another name")
    assert fails(dataclasses.replace, cifar, source="web") == (
        "dataset 'cifar10': source='web' is not valid; choose one of: dirs, path, generated")


@pytest.mark.parametrize("kind,value,message", [
    (Number(integer=True), math.inf, "k=inf is not valid; it must be an integer >= 0"),
    (Number(integer=True), "3.0", "k='3.0' is not valid; it must be an integer >= 0"),
    (Number(low=1, integer=True), 0, "k=0 is not valid; it must be an integer >= 1"),
    (Number(strict=True), None, "k=None is not valid; it must be a number > 0"),
    (Number(high=2, closed=True), 2.5, "k=2.5 is not valid; it must be in [0, 2]"),
])
def test_number_kinds(kind, value, message):
    assert fails(kind.check, "k", value) == message
    assert Number(integer=True).check("k", "3") == 3 and Number(high=2, closed=True).check("k", 2)


def test_decay_exclude_is_kinds_or_patterns_and_a_bare_word_must_be_a_kind():
    assert decay.check_exclude(["norm", "bias", "*.bias", "fc.*", "[ab]"]) == (
        "norm", "bias", "*.bias", "fc.*", "[ab]")
    assert decay.check_exclude([]) == () and decay.check_exclude(None) == ()
    assert decay.check_exclude("norm") == ("norm",)
    assert set(decay.EXCLUDE_KINDS) == {"norm", "bias"}
    assert fails(decay.check_exclude, ["norm", "nrom"]) == (
        "decay.exclude: 'nrom' is not a kind; kinds: norm, bias (a pattern of parameter names "
        "has '.', '*', '?' or '[', e.g. '*.bias')")
    assert fails(decay.check_exclude, ["BN"]).startswith("decay.exclude: 'BN' is not a kind")
    assert fails(decay.check_exclude, [""]).startswith("decay.exclude: '' is not valid")
    assert fails(decay.check_exclude, [1]).startswith("decay.exclude: 1 is not valid")
