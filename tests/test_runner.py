"""One run in-process: reproducibility and the files a run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from dlrun.runner import train_and_evaluate
from tests.conftest import SHRINK, compose_cfg


def _run(tmp: Path, *overrides: str) -> dict:
    cfg = compose_cfg(*SHRINK, *overrides)
    tmp.mkdir(parents=True)
    return train_and_evaluate(cfg, tmp, Console(quiet=True))


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", "seed=3", "trainer.limit_batches=3")
    second = _run(tmp_path / "b", "seed=3", "trainer.limit_batches=3")
    assert first["test"] == second["test"]
    other = _run(tmp_path / "c", "seed=4", "trainer.limit_batches=3")
    assert other["test"] != first["test"]


def test_best_checkpoint_follows_the_monitored_metric(tmp_path: Path) -> None:
    metrics = _run(tmp_path / "run", "trainer.epochs=3", "model=mlp", "data=iris")
    with (tmp_path / "run" / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 3
    assert metrics["train"]["monitor"] == "val_loss"  # trainer.monitor=auto, every task
    best = metrics["train"]["best_epoch"]
    values = [float(r["val_loss"]) for r in history]
    assert values[best - 1] == min(values)


def test_early_stopping_stops_and_says_why(tmp_path: Path) -> None:
    metrics = _run(
        tmp_path / "run",
        "model=mlp",
        "data=iris",
        "trainer.epochs=50",
        "trainer.limit_batches=null",
        "optimizer.lr=1e-7",
        "regularization=early_stopping",
        "regularization.early_stopping.patience=1",
        "regularization.early_stopping.min_delta=0.1",
    )
    assert metrics["train"]["epochs"] == 2
    assert "early stopping" in metrics["train"]["stop_reason"]
    json.dumps(metrics)


def test_kfold_trains_k_models_and_reports_mean_and_std(tmp_path: Path) -> None:
    from dlrun.validation import cross_validate

    cfg = compose_cfg(*SHRINK, "model=mlp", "data=iris", "eval.protocol=kfold", "eval.folds=3")
    metrics = cross_validate(cfg, tmp_path, Console(quiet=True))
    assert metrics["folds"] == 3 and len(metrics["per_fold"]) == 3
    assert set(metrics["cv"]["accuracy"]) == {"mean", "std"}
    assert (
        metrics["test"]["accuracy"] == sum(f["test"]["accuracy"] for f in metrics["per_fold"]) / 3
    )
    assert all((tmp_path / f"fold_{i}" / "metrics.json").is_file() for i in range(3))
    assert "mean ± std" in (tmp_path / "report.md").read_text()


def test_iterated_kfold_repeats_the_folds(tmp_path: Path) -> None:
    from dlrun.validation import cross_validate

    cfg = compose_cfg(
        *SHRINK,
        "model=mlp",
        "data=iris",
        "eval.protocol=iterated_kfold",
        "eval.folds=2",
        "eval.repeats=2",
    )
    assert cross_validate(cfg, tmp_path, Console(quiet=True))["folds"] == 4


def test_kfold_is_refused_for_forecasting(tmp_path: Path) -> None:
    import pytest

    from dlrun.errors import UserError
    from dlrun.validation import cross_validate

    cfg = compose_cfg(*SHRINK, "model=lstm", "data=sine", "eval.protocol=kfold")
    with pytest.raises(UserError, match="temporal"):
        cross_validate(cfg, tmp_path, Console(quiet=True))
