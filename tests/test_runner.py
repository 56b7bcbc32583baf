"""One run in-process: reproducibility and the files a run writes."""

from __future__ import annotations

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
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 4  # header + 3 epochs
    best = metrics["train"]["best_epoch"]
    values = [float(r.split(",")[4]) for r in history[1:]]  # val_accuracy column
    assert values[best - 1] == max(values)


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
