"""Every ready experiment runs (one batch): what `make smoke` does, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from dlrun.config import validate
from dlrun.runner import train_and_evaluate
from tests.conftest import compose_cfg, group_options


@pytest.mark.parametrize("name", group_options("experiment"))
def test_experiment_runs_one_batch(name: str, tmp_path: Path) -> None:
    if name == "gru_sunspots":
        pytest.importorskip("statsmodels")
    cfg = compose_cfg(f"experiment={name}", "trainer.epochs=1", "trainer.limit_batches=1")
    validate(cfg)
    metrics = train_and_evaluate(cfg, tmp_path, Console(quiet=True))
    assert metrics["train"]["epochs"] == 1
    assert (tmp_path / "report.md").is_file()
    assert "loss" in metrics["test"]
