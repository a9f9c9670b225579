"""harness.train.schedules: eta_t values at chosen steps, SGDR restart points, the device table
that drives the optimizer."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from harness.train.schedules import (
    current_period_epochs,
    eta_table,
    lr_multiplier,
    restart_epochs,
)
from tests.conftest import make_optimizer


def test_constant():
    eta = lr_multiplier("constant", 10, 5)
    assert [eta(t) for t in (0, 7, 49, 500)] == [1.0, 1.0, 1.0, 1.0]


def test_step_drops_at_milestone_epochs():
    eta = lr_multiplier("step", 10, 100, milestones=(30, 60, 80), factor=0.1)
    values = [eta(t) for t in (0, 299, 300, 599, 600, 799, 800, 999)]
    assert values == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_schedule_options_have_no_defaults_here():
    """configs/schedule/<name>.yaml holds the values; a missing one is named, with the rest
    (the one check of harness.spec.schedule, as config validation words it)."""
    with pytest.raises(ValueError, match=r"^schedule.factor is missing; schedule=step takes "
                                         r"milestones, factor \(each file in configs/schedule/"):
        lr_multiplier("step", 2, 10, milestones=(3, 6, 8))
    with pytest.raises(ValueError, match="^schedule.t_0 is missing; schedule=warm_restarts "
                                         "takes t_0, t_mult"):
        lr_multiplier("warm_restarts", 2, 10)


def test_cosine_per_batch():
    eta = lr_multiplier("cosine", 10, 4)  # 40 steps
    assert eta(0) == 1.0
    assert eta(10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert eta(20) == pytest.approx(0.5)
    assert eta(39) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert eta(40) == pytest.approx(0.0) and eta(55) == pytest.approx(0.0)
    assert eta(1) < eta(0)  # changes within an epoch


def test_warm_restarts_restart_at_t0_and_t0_times_1_plus_tmult():
    eta = lr_multiplier("warm_restarts", 5, 70, t_0=10, t_mult=2)  # periods 10, 20, 40 epochs
    assert eta(0) == 1.0
    assert eta(25) == pytest.approx(0.5)  # middle of the first period (50 steps)
    assert eta(49) == pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 50)))
    assert eta(50) == 1.0  # restart at epoch 10
    assert eta(100) == pytest.approx(0.5)  # middle of the second period (100 steps)
    assert eta(149) < 0.001
    assert eta(150) == 1.0  # restart at epoch 10 * (1 + 2) = 30
    assert eta(250) == pytest.approx(0.5)
    assert eta(349) < 0.0001


def test_warm_restarts_with_tmult_1_is_periodic():
    eta = lr_multiplier("warm_restarts", 3, 12, t_0=4, t_mult=1)
    assert [eta(t) for t in (0, 12, 24, 36)] == [1.0, 1.0, 1.0, 1.0]
    assert eta(6) == pytest.approx(eta(18))


def test_restart_helpers_use_the_papers_values():
    assert restart_epochs(100, 2, 1500) == (100, 300, 700)
    assert restart_epochs(100, 2, 1501) == (100, 300, 700, 1500)
    assert restart_epochs(10, 1, 35) == (10, 20, 30)
    assert [current_period_epochs(e, 100, 2) for e in (0, 99, 100, 299, 300, 700)] == [
        100, 100, 200, 200, 400, 800]


def test_the_eta_table_drives_lr_per_batch_and_schedules_are_picklable():
    """Plain SGD on a gradient of ones moves p by lr_t = alpha * eta_t at step t, eta_t read
    from the table as the train step reads it; alpha, the group lr, stays as bound."""
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([p], "sgd", "none", 0.2, 0.0, momentum=0.0)
    etas = eta_table(lr_multiplier("cosine", steps_per_epoch=4, epochs=2), 8)
    lrs = []
    for t in range(8):
        before = p.detach().clone()
        p.grad = torch.ones_like(p)
        opt.step(eta=etas[t])
        lrs.append((before - p.detach())[0].item())
        assert opt.param_groups[0]["lr"] == 0.2
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    eta = lr_multiplier("warm_restarts", 4, 2, t_0=1, t_mult=2)
    assert pickle.loads(pickle.dumps(eta))(4) == 1.0


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("linear", {}, "^schedule='linear' is not valid; choose one of: constant, step, cosine, "
                   "warm_restarts$"),
    ("cosine", {"t_0": 3}, "^schedule.t_0 is not an option of schedule=cosine; it takes: no "
                           "options$"),
    ("step", {"gamma": 0.1}, "^schedule.gamma is not an option of schedule=step; it takes: "
                             "milestones, factor$"),
    ("step", {"milestones": (60, 30), "factor": 0.1},
     r"^schedule.milestones=\[60, 30\] is not valid; give increasing epochs"),
    ("step", {"milestones": (30, 100), "factor": 0.1},
     r"^schedule.milestones=\[30, 100\] has epochs outside the run \(train.epochs=100\); "
     r"give milestones in 1..99, e.g. schedule.milestones=\[30,99\]$"),
    ("step", {"milestones": (30,), "factor": 0.0},
     "^schedule.factor=0.0 is not valid; it must be a number > 0$"),
    ("step", {"milestones": (30,), "factor": 1.5},
     r"^schedule.factor=1.5 is not valid; it must be in \(0, 1\]$"),
    ("warm_restarts", {"t_0": 0, "t_mult": 2},
     "^schedule.t_0=0 is not valid; it must be an integer >= 1$"),
    ("warm_restarts", {"t_0": 10, "t_mult": 0.5},
     "^schedule.t_mult=0.5 is not valid; it must be an integer >= 1$"),
])
def test_bad_schedules_raise(name, kw, match):
    with pytest.raises(ValueError, match=match):
        lr_multiplier(name, 10, 100, **kw)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1, got 0"):
        lr_multiplier("cosine", 0, 10)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 2.5"):
        lr_multiplier("cosine", 10, 2.5)
    with pytest.raises(ValueError, match="epoch must be a finite number >= 0"):
        current_period_epochs(-1, 100, 2)


def test_eta_table_holds_the_schedules_exact_values():
    eta = lr_multiplier("warm_restarts", 4, 6, t_0=2, t_mult=2)
    table = eta_table(eta, 24)
    assert table.dtype == torch.float64 and table.shape == (25,)
    assert table.tolist() == [eta(t) for t in range(25)]
    assert table[8].item() == 1.0  # the restart at epoch 2
