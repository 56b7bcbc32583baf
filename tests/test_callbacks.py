"""The standard callbacks one hook at a time, without a training loop.

Each callback reads only a few things of the trainer (its monitor, ``settings.epochs``,
its callbacks and ``state_dict``), so a stand-in trainer is enough and every test takes
milliseconds. They pin the lines the user reads, the files a run dir holds and early
stopping's counting, found through mutation testing (docs/testing.md).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from dlrun.engine.callbacks import (
    Checkpointer,
    EarlyStopping,
    HistoryCSV,
    ProgressReporter,
    TrainLog,
    epochs,
)
from dlrun.engine.checkpoint import load_checkpoint
from dlrun.engine.trainer import FitState
from dlrun.monitor import Monitor

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def _trainer(*callbacks: object, n_epochs: int = 3, monitor: str = "val_loss"):
    return SimpleNamespace(
        monitor=Monitor(monitor),
        settings=SimpleNamespace(epochs=n_epochs),
        callbacks=list(callbacks),
        state_dict=lambda state: {"model": {}, "epoch": state.epoch, "step": state.step},
    )


def _state(epoch: int, best_epoch: int | None = None, **fields: object) -> FitState:
    return FitState(epoch=epoch, best_epoch=best_epoch, **fields)


def test_epochs_counts_in_words() -> None:
    assert [epochs(n) for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


# -- early stopping ------------------------------------------------------------------


def test_early_stopping_defaults_to_following_the_trainer_with_keras_patience() -> None:
    stopper = EarlyStopping()
    assert (stopper.monitor, stopper.patience, stopper.best, stopper.wait, stopper.since) == (
        None, 5, None, 0, 0,
    )  # fmt: skip


def test_following_the_trainer_stops_after_patience_epochs_without_a_new_best() -> None:
    stopper, trainer = EarlyStopping(patience=2), _trainer()
    state = _state(2, best_epoch=1)
    stopper.on_epoch_end(trainer, state, {})
    assert (stopper.wait, state.should_stop, state.stop_reason) == (1, False, "")
    state.epoch = 3
    stopper.on_epoch_end(trainer, state, {})
    assert state.should_stop and stopper.wait == 2
    assert state.stop_reason == "early stopping: val_loss did not improve for 2 epochs"


def test_following_the_trainer_without_any_best_counts_from_the_start() -> None:
    stopper, state = EarlyStopping(patience=1), _state(1)
    stopper.on_epoch_end(_trainer(monitor="val_accuracy"), state, {})
    assert state.should_stop
    assert state.stop_reason == "early stopping: val_accuracy did not improve for 1 epoch"


def test_a_new_best_this_epoch_never_stops_even_with_zero_patience() -> None:
    stopper, state = EarlyStopping(patience=0), _state(4, best_epoch=4)
    stopper.on_epoch_end(_trainer(), state, {})
    assert (stopper.wait, state.should_stop) == (0, False)


def test_restart_counts_patience_from_the_given_epoch() -> None:
    stopper = EarlyStopping(patience=2)
    stopper.wait = 7
    stopper.restart(5)
    assert (stopper.wait, stopper.since) == (0, 5)
    state = _state(6, best_epoch=1)
    stopper.on_epoch_end(_trainer(), state, {})
    assert (stopper.wait, state.should_stop) == (1, False)


def test_an_own_monitor_keeps_its_best_row_and_counts() -> None:
    stopper, trainer = EarlyStopping(Monitor("val_f1"), patience=2), _trainer()
    state = _state(1)
    row = {"epoch": 1.0, "val_f1": 0.5, "val_loss": 1.0}
    stopper.on_epoch_end(trainer, state, row)
    assert stopper.best == row and stopper.best is not row and stopper.wait == 0
    stopper.on_epoch_end(trainer, state, {"epoch": 2.0, "val_f1": 0.4, "val_loss": 0.9})
    assert (stopper.wait, state.should_stop) == (1, False)
    stopper.on_epoch_end(trainer, state, {"epoch": 3.0, "val_f1": 0.6, "val_loss": 0.9})
    assert (stopper.wait, stopper.best["epoch"]) == (0, 3.0)
    for epoch in (4.0, 5.0):
        stopper.on_epoch_end(trainer, state, {"epoch": epoch, "val_f1": 0.1, "val_loss": 2.0})
    assert state.should_stop  # named after its own metric, not the trainer's
    assert state.stop_reason == "early stopping: val_f1 did not improve for 2 epochs"


def test_early_stopping_state_round_trips() -> None:
    follower = EarlyStopping(patience=3)
    follower.since = 4
    assert follower.state_dict() == {"since": 4}
    again = EarlyStopping(patience=3)
    again.load_state_dict({"since": 4, "wait": 9, "best": {"val_loss": 1.0}})
    assert (again.since, again.wait, again.best) == (4, 0, None)  # a follower has no own best
    own = EarlyStopping(Monitor("val_loss"), patience=3)
    own.best, own.wait = {"val_loss": 0.5}, 2
    assert own.state_dict() == {"best": {"val_loss": 0.5}, "wait": 2}
    restored = EarlyStopping(Monitor("val_loss"), patience=3)
    restored.load_state_dict(own.state_dict())
    assert (restored.best, restored.wait, restored.since) == ({"val_loss": 0.5}, 2, 0)


def test_early_stopping_loads_old_or_odd_state_safely() -> None:
    own = EarlyStopping(Monitor("val_loss"))
    own.load_state_dict({"best": 0.5, "wait": 1})  # not a row: no best, the count kept
    assert (own.best, own.wait) == (None, 1)
    own.best, own.wait = {"val_loss": 1.0}, 3
    own.load_state_dict({"since": 2})  # a follower's state: the own count is kept
    assert (own.best, own.wait, own.since) == ({"val_loss": 1.0}, 3, 2)


# -- files ---------------------------------------------------------------------------


def test_history_csv_rewrites_the_whole_history_atomically(tmp_path: Path) -> None:
    history = HistoryCSV(tmp_path)
    state = _state(2, history=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
    history.on_epoch_end(_trainer(), state, state.history[-1])
    with (tmp_path / "history.csv").open(newline="") as fh:
        assert list(csv.reader(fh)) == [["epoch", "loss"], ["1", "0.5"], ["2", "0.25"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_checkpointer_saves_last_always_and_best_on_a_best_epoch(tmp_path: Path) -> None:
    stopper = EarlyStopping(patience=3)
    stopper.since = 1
    keeper = Checkpointer(tmp_path, extra={"config": {"seed": 0}})
    trainer = _trainer(stopper, keeper)
    keeper.on_checkpoint(trainer, _state(1, best_epoch=1, step=7), {})
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last == {
        "model": {}, "epoch": 1, "step": 7, "config": {"seed": 0},
        "callbacks": {"EarlyStopping": {"since": 1}, "Checkpointer": {}},
    }  # fmt: skip
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1
    keeper.on_checkpoint(trainer, _state(2, best_epoch=1, step=9), {})
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1


def test_checkpointer_without_extra_saves_only_the_trainer_and_callbacks(tmp_path: Path) -> None:
    keeper = Checkpointer(tmp_path)
    keeper.on_checkpoint(_trainer(), _state(1), {})
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt") == {
        "model": {}, "epoch": 1, "step": 0, "callbacks": {},
    }  # fmt: skip
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


def _log(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert all(re.match(STAMP, line) for line in lines), lines
    return [re.sub(f"^{STAMP}", "", line) for line in lines]


def test_train_log_says_how_the_run_started_went_and_ended(tmp_path: Path) -> None:
    log, trainer = TrainLog(tmp_path), _trainer(n_epochs=1)
    log.on_fit_start(trainer, _state(0))
    log.on_epoch_end(trainer, _state(1), {"epoch": 1, "loss": 0.123456789})
    log.on_fit_end(trainer, _state(1, outcome="completed"))
    log.on_fit_start(_trainer(n_epochs=4), _state(2))
    log.on_fit_end(trainer, _state(3, outcome="completed", stop_reason="early stopping: x"))
    assert _log(tmp_path) == [
        "starting: 1 epoch, monitor val_loss",
        "epoch 1 - loss 0.123457",
        "finished after 1 epoch",
        "resuming after epoch 2: 4 epochs, monitor val_loss",
        "early stopping: x",
    ]


def test_train_log_never_calls_a_failed_run_finished(tmp_path: Path) -> None:
    log, trainer = TrainLog(tmp_path), _trainer()
    log.on_fit_end(trainer, _state(1, outcome="failed", failure="  disk full\ntraceback\n"))
    log.on_fit_end(trainer, _state(2, outcome="interrupted", failure=" "))
    assert _log(tmp_path) == [
        "failed with 1 epoch completed: disk full",
        "interrupted with 2 epochs completed: no reason",
    ]


# -- the console ---------------------------------------------------------------------


def _console(terminal: bool = False) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=200, color_system=None)


def _printed(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize(
    ("mode", "terminal", "bar", "quiet"),
    [
        ("auto", False, False, False),
        ("auto", True, True, False),
        ("bar", False, True, False),
        ("none", True, False, True),
        ("epoch", True, False, False),
    ],
)
def test_progress_modes(mode: str, terminal: bool, bar: bool, quiet: bool) -> None:
    reporter = ProgressReporter(_console(terminal), mode)
    assert (reporter.show_bar, reporter.quiet) == (bar, quiet)


def test_progress_defaults_to_auto() -> None:
    assert ProgressReporter(_console(True)).show_bar
    assert ProgressReporter(_console(True)).refresh_s == 0.2  # live loss 5 times a second
    assert not ProgressReporter(_console(False)).show_bar


def test_progress_prints_one_keras_line_per_epoch_and_the_stop_reason() -> None:
    console = _console()
    reporter, trainer = ProgressReporter(console), _trainer(n_epochs=3)
    row = {"epoch": 2, "seconds": 1.25, "loss": 0.123456, "val_loss": 2.0}
    reporter.on_epoch_end(trainer, _state(2, best_epoch=2), row)
    reporter.on_epoch_end(trainer, _state(3, best_epoch=2), {**row, "epoch": 3})
    reporter.on_fit_end(trainer, _state(3, stop_reason="early stopping: val_loss"))
    reporter.on_fit_end(trainer, _state(3))
    assert _printed(console) == [
        "epoch 2/3 - 1.2s - loss 0.1235 - val_loss 2 *",
        "epoch 3/3 - 1.2s - loss 0.1235 - val_loss 2",
        "early stopping: val_loss",
    ]


def test_quiet_progress_prints_nothing() -> None:
    console = _console()
    reporter, trainer = ProgressReporter(console, "none"), _trainer()
    reporter.on_epoch_end(trainer, _state(1, best_epoch=1), {"epoch": 1, "seconds": 1.0})
    reporter.on_fit_end(trainer, _state(1, stop_reason="early stopping"))
    assert console.file.getvalue() == ""


def test_the_bar_follows_the_batches_and_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    clock = [10.0]
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])
    reporter, trainer = ProgressReporter(_console(True), "bar", refresh_s=1.0), _trainer()
    reporter.on_fit_start(trainer, _state(0))
    progress = reporter._progress
    assert progress is not None and progress.live.is_started
    for epoch in (0, 1):
        reporter.on_epoch_start(trainer, _state(epoch), 4)
        reporter.on_batch_end(trainer, _state(epoch), 0, torch.tensor(0.5))  # shown
        clock[0] += 0.5
        reporter.on_batch_end(trainer, _state(epoch), 1, torch.tensor(0.25))  # too soon
        clock[0] += 0.5
        reporter.on_batch_end(trainer, _state(epoch), 2, torch.tensor(0.125))  # due again
        clock[0] += 1.0
    (task,) = progress.tasks  # one bar: last epoch's was removed
    assert (task.total, task.completed) == (4, 3)
    assert (task.fields["epoch"], task.fields["loss"]) == ("2/3", "0.1250")
    assert progress.live.console is reporter.console
    drawn = Console(file=io.StringIO(), width=120, color_system=None)
    drawn.print(progress.make_tasks_table(progress.tasks))
    text = drawn.file.getvalue()
    assert text.startswith("epoch 2/3 ") and "3/4" in text and text.rstrip().endswith("loss 0.1250")
    assert "━" in text  # the bar itself
    assert re.search(r" (-|\d+):(--|\d\d):(--|\d\d) ", text)  # and the time left
    assert progress.live.transient is True  # gone from the terminal once training ends
    reporter.on_fit_end(trainer, _state(2))
    assert reporter._progress is None and not progress.live.is_started


def test_without_a_bar_batches_cost_nothing() -> None:
    reporter = ProgressReporter(_console(False))
    reporter.on_fit_start(_trainer(), _state(0))
    reporter.on_epoch_start(_trainer(), _state(0), 4)
    reporter.on_batch_end(_trainer(), _state(0), 0, None)  # no .item() without a bar
    assert reporter._progress is None


def test_the_first_epochs_history_has_its_own_header(tmp_path: Path) -> None:
    state = _state(1, history=[{"epoch": 1, "loss": 0.5, "lr": 0.1}])
    HistoryCSV(tmp_path).on_epoch_end(_trainer(), state, state.history[0])
    assert (tmp_path / "history.csv").read_bytes() == b"epoch,loss,lr\r\n1,0.5,0.1\r\n"


def test_epoch_lines_are_plain_and_never_wrapped() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=30, color_system="standard")
    row = {"epoch": 1, "seconds": 2.0, "loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.75}
    reporter = ProgressReporter(console, "epoch")
    reporter.on_epoch_end(_trainer(), _state(1), row)
    reporter.on_fit_end(_trainer(), _state(1, stop_reason="early stopping: 2 epochs"))
    assert console.file.getvalue() == (
        "epoch 1/3 - 2.0s - loss 0.5 - val_loss 0.25 - val_accuracy 0.75\n"
        "early stopping: 2 epochs\n"
    )  # no colours on the numbers, one line even on a narrow terminal


def test_the_first_batch_shows_its_loss_and_before_it_a_dash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr("time.perf_counter", lambda: 10.0)
    reporter, trainer = ProgressReporter(_console(True), "bar"), _trainer()
    reporter.on_fit_start(trainer, _state(0))
    reporter.on_epoch_start(trainer, _state(0), 4)
    assert reporter._progress.tasks[0].fields["loss"] == "-"
    reporter.on_batch_end(trainer, _state(0), 0, torch.tensor(0.5))
    assert reporter._progress.tasks[0].fields["loss"] == "0.5000"
    reporter.on_fit_end(trainer, _state(1))


# -- the heartbeat -------------------------------------------------------------------


def _heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: list[float]):
    from dlrun.engine import callbacks

    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    identity = {"pid": 1, "hostname": "h", "started_at": "2026-01-01T00:00:00+00:00"}
    return callbacks.StatusHeartbeat(tmp_path, identity, every_s=30)


def _beaten_epoch(tmp_path: Path) -> int | None:
    from dlrun.rundir import read_status

    status = read_status(tmp_path)
    (tmp_path / "status.json").unlink(missing_ok=True)
    return None if status is None else status["epoch"]


def test_a_resumed_run_beats_with_the_epoch_it_resumes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    beat = _heartbeat(tmp_path, monkeypatch, clock)
    beat.on_fit_start(None, _state(2))
    assert _beaten_epoch(tmp_path) == 2
    clock[0] = 130.0  # exactly every_s later: due
    beat.on_batch_end(None, _state(3), 0, None)
    assert _beaten_epoch(tmp_path) == 3


def test_a_new_heartbeat_is_due_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    beat = _heartbeat(tmp_path, monkeypatch, [0.5])
    beat.on_batch_end(None, _state(1), 0, None)
    assert _beaten_epoch(tmp_path) == 1
