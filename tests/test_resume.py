"""Exact resume as a matrix: stop a run at several points, resume it, compare bit for bit.

Each case trains a small model once without interruption, and again with a crash
injected after epoch k (once last.pt of epoch k is written) or in the middle of epoch k.
The crashed run is resumed in-process through the code path ``dlrun resume=`` takes
(``train_and_evaluate`` with ``resume=<run dir>``). History rows, the final weights,
optimizer, scheduler and RNG state in last.pt, best.pt and the test metrics must equal the
uninterrupted run's exactly. Real ``kill -9`` of a CLI process is in test_engine.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from dlrun import runner
from dlrun.engine.callbacks import Callback
from dlrun.engine.checkpoint import load_checkpoint
from tests.conftest import kill_after_epoch, read_history, run_cli, run_in_process

SMALL = ["model=mlp", "model.hidden=[16]", "trainer.batch_size=16"]
CASES: dict[str, list[str]] = {
    # the run: early stopping's patience must be in last.pt of the same epoch
    "early_stopping": [
        "model=mlp", "data=diabetes", "regularization=early_stopping",
        "regularization.early_stopping.patience=2", "seed=0",
    ],
    # early stopping on its own metric keeps its own patience count in last.pt
    "early_stopping_own_monitor": [
        *SMALL, "data=wine", "trainer.epochs=30", "optimizer.lr=0.05",
        "regularization=early_stopping", "regularization.early_stopping.monitor=val_accuracy",
        "regularization.early_stopping.patience=2",
    ],
    "plateau": [*SMALL, "data=iris", "trainer.epochs=6", "scheduler=plateau",
                "scheduler.patience=0", "optimizer.lr=0.05"],
    "onecycle": [*SMALL, "data=iris", "trainer.epochs=5", "scheduler=onecycle"],
    "augmentation": [*SMALL, "data=digits", "trainer.epochs=4", "trainer.batch_size=128",
                     "regularization=augment"],
    "accumulation": [*SMALL, "data=wine", "trainer.epochs=5", "trainer.accumulate=3"],
    "label_smoothing_binary": [*SMALL, "data=breast_cancer", "trainer.epochs=4",
                               "trainer.batch_size=64", "regularization.label_smoothing=0.2"],
    "l1": [*SMALL, "data=breast_cancer", "trainer.epochs=4", "trainer.batch_size=64",
           "regularization=l1"],
}  # fmt: skip
# (case, where the crash happens): ("after", k) once last.pt holds epoch k,
# ("during", k) at the 3rd batch of epoch k (last.pt holds epoch k-1); k=STOP is the
# epoch where early stopping stopped the uninterrupted run.
STOP = 0
MATRIX = [
    ("early_stopping", ("after", 3)),
    ("early_stopping", ("after", 7)),
    ("early_stopping", ("during", 9)),
    ("early_stopping", ("after", STOP)),
    ("early_stopping_own_monitor", ("after", STOP - 1)),
    ("early_stopping_own_monitor", ("after", STOP)),
    ("plateau", ("after", 2)),
    ("plateau", ("during", 4)),
    ("onecycle", ("after", 1)),
    ("onecycle", ("during", 3)),
    ("augmentation", ("after", 2)),
    ("accumulation", ("during", 2)),
    ("label_smoothing_binary", ("after", 2)),
    ("l1", ("during", 3)),
]


class Crash(Exception):
    """Stands for a crash: nothing after it runs, only files already written remain."""


class CrashAt(Callback):
    """Raises after last.pt of epoch ``k`` is written, or at batch 2 of epoch ``k``."""

    def __init__(self, when: str, epoch: int) -> None:
        self.when, self.epoch = when, epoch

    def on_batch_end(self, trainer: Any, state: Any, batch: int, loss: torch.Tensor) -> None:
        if self.when == "during" and state.epoch + 1 == self.epoch and batch == 2:
            raise Crash(f"during epoch {self.epoch}")

    def on_checkpoint(self, trainer: Any, state: Any, row: dict[str, float]) -> None:
        if self.when == "after" and state.epoch == self.epoch:
            raise Crash(f"after epoch {self.epoch}")


def _train(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    return run_in_process(run_dir, *overrides)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each case trained once without interruption (built on first use)."""
    cache: dict[str, tuple[Path, dict]] = {}

    def get(case: str) -> tuple[Path, dict]:
        if case not in cache:
            run_dir = tmp_path_factory.mktemp(f"whole_{case}")
            cache[case] = (run_dir, _train(CASES[case], run_dir))
        return cache[case]

    return get  # type: ignore[return-value]


def _history(run_dir: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run_dir)]


IGNORED = {"seconds", "CrashAt"}


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Nested checkpoint contents equal exactly (tensors bit for bit); the epoch times and
    the test's own crash callback are left out."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - IGNORED
        assert keys == set(b) - IGNORED, where
        for key in keys:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN == NaN here


def assert_same_run(first: Path, second: Path, a: dict, b: dict) -> None:
    assert _history(first) == _history(second)
    assert a["test"] == b["test"]
    for key in ("epochs", "best_epoch", "best_value", "stop_reason", "zero_weights"):
        assert a["train"][key] == b["train"][key], key
    for name in ("last.pt", "best.pt"):
        assert_identical(
            load_checkpoint(first / "checkpoints" / name),
            load_checkpoint(second / "checkpoints" / name),
            name,
        )


def _id(case: str, crash: tuple[str, int]) -> str:
    when, k = crash
    return f"{case}-{when}-" + (str(k) if k > STOP else f"stop{k or ''}")


@pytest.mark.parametrize(("case", "crash"), MATRIX, ids=[_id(*m) for m in MATRIX])
def test_resume_equals_an_uninterrupted_run(
    case: str, crash: tuple[str, int], whole: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole_dir, whole_metrics = whole(case)
    if crash[1] <= STOP:  # counted back from the epoch early stopping stopped at
        assert whole_metrics["train"]["stop_reason"]
        crash = (crash[0], whole_metrics["train"]["epochs"] + crash[1])
    assert 1 <= crash[1] <= whole_metrics["train"]["epochs"]  # inside the run
    make_callbacks = runner.make_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(runner, "make_callbacks", lambda *a: [*make_callbacks(*a), CrashAt(*crash)])
        with pytest.raises(Crash):
            _train(CASES[case], tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"]
    assert saved == (crash[1] if crash[0] == "after" else crash[1] - 1)
    resumed = _train([*CASES[case], f"resume={tmp_path}"], tmp_path)
    assert_same_run(whole_dir, tmp_path, whole_metrics, resumed)


@pytest.mark.slow  # three CLI processes: ~25 s; test_engine.py keeps a fast kill -9 test
def test_kill_9_from_outside_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # A real process killed with SIGKILL at whatever point it has reached after epoch 3's
    # history row appeared (possibly before its last.pt), then `dlrun resume=`.
    args = [*CASES["early_stopping"], "regularization.early_stopping.patience=3"]
    whole_dir, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(*args, f"hydra.run.dir={whole_dir}", cwd=tmp_path).returncode == 0
    code = kill_after_epoch(*args, run_dir=killed, cwd=tmp_path, epoch=3, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed = run_cli(f"resume={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole_dir / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert_same_run(whole_dir, killed, a, b)
