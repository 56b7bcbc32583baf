"""The learning-rate schedules and :func:`build_scheduler`, value by value.

The engine tests show that every configured schedule moves the lr; these pin the
numbers (the warm-up length, the end of the decay, the defaults) and which run facts
``build_scheduler`` hands a factory, found through mutation testing (docs/testing.md).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR, StepLR

from dlrun.engine.schedules import (
    Schedule,
    build_scheduler,
    inverse_time,
    plateau,
    warmup_cosine,
)
from dlrun.errors import UserError


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=lr)


def _factor(scheduler: torch.optim.lr_scheduler.LambdaLR):
    """The multiplier of the base lr at each step (LambdaLR's own function)."""
    return scheduler.lr_lambdas[0]


def test_warmup_cosine_defaults_warm_up_for_five_percent_then_decay_to_zero() -> None:
    factor = _factor(warmup_cosine(_optimizer(), total_steps=105))
    assert factor(0) == pytest.approx(1 / 5)  # 5 warm-up steps: 1/5, 2/5, ... 5/5
    assert factor(4) == pytest.approx(1.0)
    assert factor(5) == pytest.approx(1.0)  # the peak, where the cosine starts
    assert factor(55) == pytest.approx(0.5)  # half way through the 100 steps of decay
    assert factor(105) == pytest.approx(0.0)


def test_warmup_cosine_reaches_min_lr_ratio_and_stays_there() -> None:
    factor = _factor(warmup_cosine(_optimizer(), total_steps=21, warmup=1, min_lr_ratio=0.1))
    assert factor(0) == pytest.approx(1.0)  # warmup=1 is one step, not the whole schedule
    assert factor(1) == pytest.approx(1.0)
    assert factor(11) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert factor(21) == pytest.approx(0.1)
    assert factor(40) == pytest.approx(0.1)  # past the end: clamped, not back up


def test_warmup_cosine_warmup_count_and_fraction() -> None:
    assert _factor(warmup_cosine(_optimizer(), 10, warmup=2.0))(0) == pytest.approx(1 / 2)
    # a fraction is rounded: 0.05 of 30 steps is 1.5 -> 2 warm-up steps
    assert _factor(warmup_cosine(_optimizer(), 30, warmup=0.05))(0) == pytest.approx(1 / 2)
    # one step of decay after the warm-up: the end of the schedule, not half way
    assert _factor(warmup_cosine(_optimizer(), 11, warmup=10))(11) == pytest.approx(0.0)


def test_inverse_time_is_keras_decay() -> None:
    assert _factor(inverse_time(_optimizer()))(1000) == pytest.approx(0.5)  # decay 1e-3
    factor = _factor(inverse_time(_optimizer(), decay=0.1))
    assert (factor(0), factor(10), factor(30)) == pytest.approx((1.0, 0.5, 0.25))


def test_plateau_defaults_and_arguments() -> None:
    default = plateau(_optimizer())
    assert (default.mode, default.factor, default.patience, default.min_lrs) == (
        "min", 0.1, 5, [0.0],
    )  # fmt: skip
    given = plateau(_optimizer(), mode="max", factor=0.5, patience=2, min_lr=0.01)
    assert (given.mode, given.factor, given.patience, given.min_lrs) == ("max", 0.5, 2, [0.01])


def test_a_schedule_defaults_to_per_epoch_and_the_trainers_monitor() -> None:
    assert (Schedule(None).interval, Schedule(None).monitor) == ("epoch", None)


def test_no_factory_is_a_constant_lr_that_keeps_interval_and_monitor() -> None:
    schedule = build_scheduler(None, _optimizer(), epochs=3, steps_per_epoch=4, monitor="val_loss")
    assert (schedule.scheduler, schedule.interval, schedule.monitor) == (None, "epoch", "val_loss")
    stepped = build_scheduler(
        None, _optimizer(), interval="step", epochs=3, steps_per_epoch=4, monitor="val_accuracy"
    )
    assert (stepped.interval, stepped.monitor) == ("step", "val_accuracy")


def test_an_unknown_interval_is_one_clear_error() -> None:
    message = r"^scheduler\.interval=hourly is invalid: use epoch or step$"
    with pytest.raises(UserError, match=message):
        build_scheduler(
            None, _optimizer(), interval="hourly", epochs=1, steps_per_epoch=1, monitor="val_loss"
        )


@pytest.mark.parametrize(("interval", "total"), [("epoch", 3), ("step", 12)])
def test_total_steps_counts_what_the_schedule_is_stepped_by(interval: str, total: int) -> None:
    schedule = build_scheduler(
        partial(warmup_cosine, warmup=1),
        _optimizer(),
        interval=interval,
        epochs=3,
        steps_per_epoch=4,
        monitor="val_loss",
    )
    factor = _factor(schedule.scheduler)
    assert factor(total) == pytest.approx(0.0) and factor(total - 1) > 0.0
    assert (schedule.interval, schedule.monitor) == (interval, "val_loss")


def test_a_plain_function_is_a_factory_too_and_gets_the_run_facts() -> None:
    schedule = build_scheduler(
        warmup_cosine, _optimizer(), epochs=40, steps_per_epoch=1, monitor="x"
    )
    assert _factor(schedule.scheduler)(0) == pytest.approx(1 / 2)  # 5 % of 40 epochs


def test_what_the_config_gives_wins_over_the_run_facts() -> None:
    given = partial(warmup_cosine, total_steps=10, warmup=1)
    schedule = build_scheduler(given, _optimizer(), epochs=100, steps_per_epoch=1, monitor="x")
    assert _factor(schedule.scheduler)(10) == pytest.approx(0.0)
    watched = build_scheduler(
        partial(plateau, mode="min"), _optimizer(), epochs=1, steps_per_epoch=1,
        monitor="val_accuracy",
    )  # fmt: skip
    assert watched.scheduler.mode == "min"


@pytest.mark.parametrize(("monitor", "mode"), [("val_accuracy", "max"), ("val_loss", "min")])
def test_plateau_follows_the_monitored_metrics_direction(monitor: str, mode: str) -> None:
    schedule = build_scheduler(plateau, _optimizer(), epochs=1, steps_per_epoch=1, monitor=monitor)
    assert schedule.scheduler.mode == mode


def test_a_factory_without_run_facts_gets_none() -> None:
    schedule = build_scheduler(
        partial(StepLR, step_size=2), _optimizer(), epochs=5, steps_per_epoch=3, monitor="val_loss"
    )
    assert isinstance(schedule.scheduler, StepLR) and schedule.interval == "epoch"


def test_onecycle_must_step_every_batch() -> None:
    onecycle = partial(OneCycleLR, max_lr=0.1, total_steps=6)
    with pytest.raises(UserError, match=r"^scheduler=onecycle must step every batch: keep "):
        build_scheduler(onecycle, _optimizer(), epochs=2, steps_per_epoch=3, monitor="val_loss")
    schedule = build_scheduler(
        onecycle, _optimizer(), interval="step", epochs=2, steps_per_epoch=3, monitor="val_loss"
    )
    assert isinstance(schedule.scheduler, OneCycleLR)


@pytest.mark.parametrize(
    ("factory", "why"),
    [(partial(plateau, factor=2.0), "Factor should be < 1.0"), (partial(inverse_time, x=1), "x")],
)
def test_a_bad_scheduler_config_is_one_clear_error(factory, why: str) -> None:
    with pytest.raises(UserError, match=rf"^scheduler config is invalid: .*{why}"):
        build_scheduler(factory, _optimizer(), epochs=1, steps_per_epoch=1, monitor="val_loss")
