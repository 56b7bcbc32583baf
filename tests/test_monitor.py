"""One monitor: metric direction, "has it improved", and who follows trainer.monitor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dlrun import config, monitor
from dlrun.data.spec import Task
from dlrun.engine.callbacks import EarlyStopping
from dlrun.engine.checkpoint import load_checkpoint
from dlrun.evaluation import report
from dlrun.monitor import Monitor, metric_mode
from dlrun.runner import make_callbacks, make_monitor, make_schedule
from tests.conftest import compose_cfg, read_history, run_in_process

MINIMISED = ["loss", "val_loss", "hamming_loss", "rmse", "val_rmse", "mse", "mae", "mape",
             "perplexity", "bits_per_token", "val_error"]  # fmt: skip
MAXIMISED = ["accuracy", "val_accuracy", "f1_macro", "roc_auc", "pr_auc", "r2",
             "subset_accuracy"]  # fmt: skip


@pytest.mark.parametrize("name", MINIMISED + MAXIMISED)
def test_every_direction_question_has_one_answer(name: str) -> None:
    lower = name in MINIMISED
    assert metric_mode(name) == ("min" if lower else "max")
    assert config.metric_mode(name) == metric_mode(name)  # the old import still works
    assert report.lower_is_better(name) is lower
    assert monitor.optuna_direction(name) == ("minimize" if lower else "maximize")
    assert metric_mode(name, "max") == "max"  # an explicit mode wins


def test_auto_monitor_is_val_loss() -> None:
    assert monitor.resolve("auto") == monitor.resolve(None) == "val_loss"
    assert monitor.optuna_direction("auto") == "minimize"
    assert monitor.resolve(None, "val_accuracy") == "val_accuracy"  # follow the trainer


def test_improvement_respects_min_delta_and_nan() -> None:
    acc = Monitor("val_accuracy", min_delta=0.01)
    assert acc.improved({"val_accuracy": 0.5}, None)
    assert not acc.improved({"val_accuracy": 0.505}, {"val_accuracy": 0.5})
    assert acc.improved({"val_accuracy": 0.52}, {"val_accuracy": 0.5})
    loss = Monitor("val_loss")
    assert loss.improved({"val_loss": 0.4}, {"val_loss": 0.5})
    assert not loss.improved({"val_loss": math.nan}, {"val_loss": 0.5})
    assert loss.improved({"val_loss": 0.4}, {"val_loss": math.nan})


def test_a_tie_on_the_monitor_is_broken_by_val_loss() -> None:
    acc = Monitor("val_accuracy")
    best = {"val_accuracy": 1.0, "val_loss": 0.3}
    assert acc.improved({"val_accuracy": 1.0, "val_loss": 0.2}, best)  # saturated, better
    assert not acc.improved({"val_accuracy": 1.0, "val_loss": 0.3}, best)
    assert not acc.improved({"val_accuracy": 0.9, "val_loss": 0.1}, best)
    assert Monitor("val_loss").tie_break is None


def test_plateau_follows_trainer_monitor_unless_told_otherwise() -> None:
    cfg = compose_cfg("scheduler=plateau").scheduler
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    kwargs = {"epochs": 3, "steps_per_epoch": 2}
    follower = make_schedule(cfg, opt, monitor="val_accuracy", **kwargs)
    assert follower.scheduler.mode == "max" and follower.monitor == "val_accuracy"
    own = make_schedule({**cfg, "monitor": "val_loss"}, opt, monitor="val_accuracy", **kwargs)
    assert own.scheduler.mode == "min" and own.monitor == "val_loss"
    assert make_monitor(compose_cfg("scheduler=plateau"), Task.MULTICLASS).name == "val_loss"


def test_early_stopping_follows_trainer_monitor_unless_told_otherwise(tmp_path: Path) -> None:
    def stopper(*overrides: str) -> EarlyStopping:
        cfg = compose_cfg("regularization=early_stopping", *overrides)
        monitor_name = make_monitor(cfg, Task.MULTICLASS).name
        callbacks = make_callbacks(cfg, tmp_path, Console(quiet=True), monitor_name, False)
        return next(cb for cb in callbacks if isinstance(cb, EarlyStopping))

    assert stopper().monitor is None  # reads the trainer's best epoch
    assert stopper("trainer.monitor=val_accuracy").monitor is None
    own = stopper("regularization.early_stopping.monitor=val_accuracy").monitor
    assert own == Monitor("val_accuracy", "max")


def _run(tmp: Path, *overrides: str) -> dict:
    return run_in_process(tmp, "model=mlp", "data=breast_cancer", *overrides)


def test_a_saturated_monitor_does_not_freeze_the_best_epoch(tmp_path: Path) -> None:
    # val_accuracy reaches 1.0 within a few epochs on breast_cancer; among the epochs at
    # the top, the one with the lowest val_loss is the best, not the first.
    metrics = _run(
        tmp_path / "run",
        "trainer.epochs=8",
        "trainer.monitor=val_accuracy",
        "regularization=none",
        "scheduler=none",
        "optimizer.lr=0.0005",
    )
    rows = read_history(tmp_path / "run")
    top = max(r["val_accuracy"] for r in rows)
    tied = [r for r in rows if r["val_accuracy"] == top]
    assert len(tied) > 1  # the case this test is about
    expected = min(tied, key=lambda r: r["val_loss"])["epoch"]
    assert metrics["train"]["best_epoch"] == expected != tied[0]["epoch"]


def test_early_stopping_and_best_checkpoint_agree_on_the_epoch(tmp_path: Path) -> None:
    metrics = _run(
        tmp_path / "run",
        "trainer.epochs=40",
        "regularization=early_stopping",
        "regularization.early_stopping.patience=2",
    )
    train = metrics["train"]
    assert "early stopping" in train["stop_reason"]
    assert train["epochs"] - train["best_epoch"] == 2  # stopped 2 epochs after the best
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["epoch"] == train["best_epoch"]
    rows = read_history(tmp_path / "run")
    assert min(rows, key=lambda r: r["val_loss"])["epoch"] == train["best_epoch"]


def test_regularization_choices_no_longer_report_identical_numbers(tmp_path: Path) -> None:
    # With a saturating monitor all three picked the same early epoch and reported the
    # same test accuracy, F1 and AUC; now each is judged on its own best val_loss epoch.
    runs = {
        name: _run(tmp_path / name, "trainer.epochs=6", f"regularization={name}")
        for name in ("none", "l1", "l2")
    }
    headline = ("accuracy", "f1_macro", "roc_auc")
    assert [runs["l1"]["test"][k] for k in headline] != [runs["none"]["test"][k] for k in headline]
    assert len({r["test"]["loss"] for r in runs.values()}) == 3
    for name, metrics in runs.items():
        rows = read_history(tmp_path / name)
        best = min(rows, key=lambda r: r["val_loss"])["epoch"]
        assert metrics["train"]["best_epoch"] == best, name


def test_monitor_settings_are_checked_before_anything_runs() -> None:
    config.validate(compose_cfg("scheduler=plateau"))  # null: follow trainer.monitor
    config.validate(compose_cfg("scheduler=plateau", "scheduler.monitor=val_accuracy"))
    for bad in ["scheduler.monitor=val_f3", "regularization.early_stopping.monitor=f1"]:
        cfg = compose_cfg("scheduler=plateau", bad)
        with pytest.raises(config.UserError, match=bad.split("=")[0]):
            config.validate(cfg)
