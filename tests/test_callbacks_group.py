"""The ``callbacks:`` config group and the typed config the runner receives."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from rich.console import Console

from dlrun.config import RunConfig, TrainerSettings
from dlrun.engine.callbacks import (
    Checkpointer,
    EarlyStopping,
    HistoryCSV,
    ProgressReporter,
    StatusHeartbeat,
    TrainLog,
)
from dlrun.engine.trainer import Callback, FitState, Trainer
from dlrun.errors import UserError
from dlrun.runner import build, make_callbacks, make_trainer
from tests.conftest import SHRINK, compose_cfg, run_in_process

IRIS = ("model=mlp", "data=iris")
MINE = "tests.test_callbacks_group.Recorder"


class Recorder(Callback):
    """A user's callback: writes the epochs it saw into the run dir."""

    def __init__(self, run_dir: Path, monitor: str, name: str = "recorder.txt") -> None:
        self.path = Path(run_dir) / name
        self.monitor = monitor

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        with self.path.open("a") as fh:
            fh.write(f"{state.epoch} {self.monitor}\n")


def _callbacks(tmp_path: Path, *overrides: str, main: bool = True) -> list[Callback]:
    """The callbacks of a run, without the diagnostics recorders (tested on their own)."""
    cfg = compose_cfg(*IRIS, "diagnostics=none", *overrides)
    return make_callbacks(cfg, tmp_path, Console(quiet=True), "val_loss", main)


def test_the_config_is_typed_and_the_trainer_gets_its_trainer_node(tmp_path: Path) -> None:
    cfg = compose_cfg(*IRIS, *SHRINK)
    assert isinstance(cfg, RunConfig) and isinstance(cfg.trainer, TrainerSettings)
    assert cfg.regularization.early_stopping.patience == 5  # typed all the way down
    setup = build(cfg)
    trainer = make_trainer(cfg, setup, tmp_path, Console(quiet=True), main=True)
    assert trainer.settings is cfg.trainer  # the trainer: node is the trainer's settings
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # what spawned workers receive


def test_the_default_group_builds_the_standard_callbacks_in_order(tmp_path: Path) -> None:
    kinds = [type(cb) for cb in _callbacks(tmp_path)]
    assert kinds == [ProgressReporter, TrainLog, HistoryCSV, Checkpointer, StatusHeartbeat]
    progress = _callbacks(tmp_path, "trainer.progress=none")[0]
    assert isinstance(progress, ProgressReporter) and progress.quiet  # ${trainer.progress}


def test_diagnostics_add_their_recorders_on_rank_0_only(tmp_path: Path) -> None:
    cfg = compose_cfg(*IRIS)  # diagnostics on by default
    mine = make_callbacks(cfg, tmp_path, Console(quiet=True), "val_loss", True)
    names = [type(cb).__name__ for cb in mine]
    assert "GradientNorms" in names
    others = make_callbacks(cfg, tmp_path, Console(quiet=True), "val_loss", False)
    assert "GradientNorms" not in [type(cb).__name__ for cb in others]


def test_early_stopping_comes_from_regularization_after_the_group(tmp_path: Path) -> None:
    kinds = [type(cb) for cb in _callbacks(tmp_path, "regularization=early_stopping")]
    assert kinds[-1] is EarlyStopping and kinds.count(EarlyStopping) == 1


def test_a_callback_is_dropped_with_null_and_added_by_target(tmp_path: Path) -> None:
    kinds = [type(cb) for cb in _callbacks(tmp_path, "callbacks.progress=null")]
    assert ProgressReporter not in kinds and HistoryCSV in kinds
    mine = _callbacks(tmp_path, f"++callbacks.mine._target_={MINE}")[-1]
    assert isinstance(mine, Recorder)  # run_dir and monitor filled in by name
    assert mine.path == tmp_path / "recorder.txt" and mine.monitor == "val_loss"


def test_other_ranks_build_no_callback_that_writes_or_prints(tmp_path: Path) -> None:
    kinds = [
        type(cb)
        for cb in _callbacks(
            tmp_path, "regularization=early_stopping", f"++callbacks.mine._target_={MINE}",
            main=False,
        )
    ]  # fmt: skip
    assert kinds == [Recorder, EarlyStopping]  # a user's callback runs on every rank


@pytest.mark.parametrize(
    ("target", "says"),
    [("collections.OrderedDict", "is not a callback"), ("no_such.Module", "cannot be imported")],
)
def test_a_target_that_is_not_a_callback_is_refused(target: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"callbacks.checkpoint._target_={target} {says}"):
        _callbacks(tmp_path, f"callbacks.checkpoint._target_={target}")


def test_a_run_honours_the_callbacks_group(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_in_process(
        run_dir, *IRIS, *SHRINK, "trainer.epochs=2", "callbacks.history=null",
        f"++callbacks.mine._target_={MINE}",
    )  # fmt: skip
    assert not (run_dir / "history.csv").exists()
    assert (run_dir / "recorder.txt").read_text() == "1 val_loss\n2 val_loss\n"
    assert (run_dir / "checkpoints" / "best.pt").is_file()
