"""Other work on the run's cores is measured while it trains, and a busy machine is named."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dlrun.engine import core_use
from dlrun.engine.core_use import CoreUse, busy_note
from dlrun.runner import train_and_evaluate
from tests.conftest import SHRINK, compose_cfg


def test_other_work_is_the_busy_time_not_spent_by_this_process() -> None:
    start = CoreUse(busy=100.0, own=5.0, clock=10.0)
    assert CoreUse(busy=104.0, own=7.0, clock=12.0).others_since(start) == 1.0  # 4 - 2 in 2 s
    assert CoreUse(busy=101.0, own=7.0, clock=12.0).others_since(start) == 0.0  # never < 0
    assert CoreUse(busy=101.0, own=5.5, clock=10.5).others_since(start) is None  # too short
    assert CoreUse(busy=101.0, own=5.5, clock=12.0).others_since(None) is None


def test_the_note_needs_half_a_core_of_other_work_and_several_threads() -> None:
    assert busy_note(None, 2, 2) is None
    assert busy_note(0.4, 2, 2) is None
    assert busy_note(1.0, 1, 2) is None  # one thread: nothing to wait for
    note = busy_note(1.0, 2, 2)
    assert note is not None and "1.0 of the 2 cores" in note and "trainer.num_threads=1" in note


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_reading_counts_this_process_cpu_time() -> None:
    first = CoreUse.now()
    sum(i * i for i in range(300_000))
    second = CoreUse.now()
    assert first is not None and second is not None
    assert second.own > first.own and second.busy >= first.busy and second.clock > first.clock


def test_a_run_records_other_work_and_ends_with_the_note(tmp_path: Path, monkeypatch) -> None:
    """Readings made up: 2 of the cores' busy seconds per second were not the run's."""
    ticks = iter([CoreUse(0.0, 0.0, 0.0), CoreUse(30.0, 10.0, 10.0)])
    monkeypatch.setattr(core_use.CoreUse, "now", classmethod(lambda cls: next(ticks)))
    monkeypatch.setattr("torch.get_num_threads", lambda: 2)
    out = io.StringIO()
    cfg = compose_cfg(*SHRINK, "model=mlp", "data=iris", "trainer.progress=none")
    tmp_path.mkdir(exist_ok=True)
    metrics = train_and_evaluate(cfg, tmp_path, Console(file=out, width=300))
    assert metrics["train"]["other_cores_busy"] == 2.0 and metrics["train"]["threads"] == 2
    assert "note: other work kept 2.0 of the" in out.getvalue()
