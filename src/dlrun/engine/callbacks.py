"""The standard callbacks: progress, files, checkpoints, early stopping, the heartbeat.

The trainer never draws, writes CSV or saves files itself; these callbacks do. Which ones
a run gets is the ``callbacks:`` config group (configs/callbacks/default.yaml, built by
:func:`dlrun.runner.make_callbacks`); early stopping, loggers and the Optuna pruner are
added by the groups that own their settings. The hook contract is
:class:`dlrun.engine.trainer.Callback` (re-exported here).

The run dir's layout is fixed (``history.csv``, ``train.log``, ``checkpoints/``): resume,
``dlrun-eval`` and the report read it, so these callbacks take the run dir, not paths.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.engine.checkpoint import copy_checkpoint, save_checkpoint
from dlrun.engine.trainer import Callback, FitState, Trainer
from dlrun.monitor import Monitor
from dlrun.rundir import HEARTBEAT_S, process_identity, write_status

if TYPE_CHECKING:
    import torch
    from rich.console import Console

__all__ = [
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "HistoryCSV",
    "ProgressReporter",
    "StatusHeartbeat",
    "TrainLog",
    "epochs",
]


class HistoryCSV(Callback):
    """Rewrites ``history.csv`` after every epoch so it is complete even after a crash."""

    main_process_only = True

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "history.csv"

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        rows = state.history
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            # every column any epoch has (a resumed run may record a new val_<metric>)
            columns = list(dict.fromkeys([*rows[-1], *(key for row in rows for key in row)]))
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


class Checkpointer(Callback):
    """Saves ``last.pt`` every epoch and ``best.pt`` when the monitored metric improves.

    It saves in ``on_checkpoint``, after every callback has updated its state, into
    ``<run_dir>/checkpoints``.
    """

    main_process_only = True

    def __init__(self, run_dir: Path, extra: dict | None = None) -> None:
        self.directory = Path(run_dir) / "checkpoints"
        self.extra = extra or {}

    def on_checkpoint(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        snapshot = {**trainer.state_dict(state), **self.extra}
        snapshot["callbacks"] = {type(cb).__name__: cb.state_dict() for cb in trainer.callbacks}
        last = self.directory / "last.pt"
        save_checkpoint(snapshot, last)
        if state.best_epoch == state.epoch:
            copy_checkpoint(last, self.directory / "best.pt")


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a new best (Keras' meaning of patience).

    With ``monitor=None`` it follows the trainer's monitor and reads the best epoch the
    trainer tracks (``state.best_epoch``), so it stops on the very metric, ``min_delta``
    and tie-break that picked ``best.pt``: the weights restored are the ones it waited
    on. An explicit :class:`Monitor` keeps its own best and count, saved in checkpoints.
    """

    def __init__(self, monitor: Monitor | None = None, patience: int = 5) -> None:
        self.monitor = monitor
        self.patience = patience
        self.best: dict[str, float] | None = None  # own monitor only: the best row
        self.wait = 0
        self.since = 0  # following the trainer: patience counts from here at the earliest

    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return {"since": self.since}
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.since = int(state.get("since", 0))
        if self.monitor is not None and "wait" in state:
            best = state["best"]
            self.best, self.wait = (best if isinstance(best, dict) else None), state["wait"]

    def restart(self, epoch: int) -> None:
        """A fresh patience from ``epoch`` on, keeping the best so far as the one to beat
        (a completed, early-stopped run given more epochs, like Keras' ``initial_epoch``)."""
        self.wait, self.since = 0, epoch

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        if self.monitor is None:
            name = trainer.monitor.name
            self.wait = state.epoch - max(state.best_epoch or 0, self.since)
        else:
            name = self.monitor.name
            if self.monitor.improved(row, self.best):
                self.best, self.wait = dict(row), 0
            else:
                self.wait += 1
        if self.wait and self.wait >= self.patience:
            state.stop_reason = (
                f"early stopping: {name} did not improve for {epochs(self.patience)}"
            )
            state.should_stop = True


def epochs(n: int) -> str:
    """``1 epoch``, ``2 epochs``: every message that counts epochs says it this way."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


class ProgressReporter(Callback):
    """A rich progress bar per epoch and one Keras-style line per epoch.

    On a terminal the bar shows batches, ETA and the live loss; elsewhere (CI logs,
    pipes) only the epoch lines are printed, so logs stay readable. The live loss is read
    from the device at most a few times a second, so the bar never slows training.
    """

    main_process_only = True

    def __init__(self, console: Console, mode: str = "auto", refresh_s: float = 0.2) -> None:
        self.console = console
        self.show_bar = mode == "bar" or (mode == "auto" and console.is_terminal)
        self.quiet = mode == "none"
        self.refresh_s = refresh_s
        self._progress = None
        self._task = None
        self._last = 0.0

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        if self.show_bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("loss {task.fields[loss]}"),
                console=self.console,
                transient=True,
            )
            self._progress.start()

    def on_epoch_start(self, trainer: Trainer, state: FitState, n_batches: int) -> None:
        if self._progress is not None:
            label = f"{state.epoch + 1}/{trainer.settings.epochs}"
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task("", total=n_batches, epoch=label, loss="-")

    def on_batch_end(
        self, trainer: Trainer, state: FitState, batch: int, loss: torch.Tensor
    ) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh_s:
            self._last = now
            self._progress.update(self._task, completed=batch + 1, loss=f"{loss.item():.4f}")
        else:
            self._progress.update(self._task, completed=batch + 1)

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        if self.quiet:
            return
        parts = [f"epoch {state.epoch}/{trainer.settings.epochs}", f"{row['seconds']:.1f}s"]
        parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds")]
        line = " - ".join(parts)
        if state.best_epoch == state.epoch:
            line += " *"
        self.console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if state.stop_reason and not self.quiet:
            self.console.print(state.stop_reason, highlight=False)


class TrainLog(Callback):
    """Appends the epoch lines and the stop reason to ``train.log`` as they happen."""

    main_process_only = True

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "train.log"

    def write(self, line: str) -> None:
        with self.path.open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        where = f"resuming after epoch {state.epoch}" if state.epoch else "starting"
        self.write(f"{where}: {epochs(trainer.settings.epochs)}, monitor {trainer.monitor.name}")

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        self.write(" - ".join(f"{k} {v:.6g}" for k, v in row.items()))

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        if state.outcome == "completed":
            self.write(state.stop_reason or f"finished after {epochs(state.epoch)}")
            return
        why = state.failure.strip().splitlines()[0] if state.failure.strip() else "no reason"
        # interrupted, failed, pruned: never "finished"
        self.write(f"{state.outcome} with {epochs(state.epoch)} completed: {why}")


class StatusHeartbeat(Callback):
    """Keeps ``status.json`` in ``status_dir`` saying "running", and how far.

    It beats in the checkpoint phase, listed after the :class:`Checkpointer`, so the
    ``epoch`` it records is always one that ``last.pt`` holds: a run that then fails (a
    full disk while writing the next epoch) reports exactly how far it can be resumed
    from. Between epochs it beats at most every ``every_s`` seconds, checked with one
    clock read per batch, so a reader on another host can tell a long epoch from a dead
    process. ``identity`` is the pid, host and start time of the process the user
    started (the CLI, which may not be this process when training runs in spawned
    workers); it defaults to this process.
    """

    main_process_only = True

    def __init__(
        self,
        status_dir: Path,
        identity: dict[str, Any] | None = None,
        every_s: float = HEARTBEAT_S,
    ) -> None:
        self.run_dir = Path(status_dir)
        self.identity = identity or process_identity()
        self.every_s = every_s
        self._next = 0.0

    def beat(self, epoch: int) -> None:
        write_status(self.run_dir, "running", epoch=epoch, **self.identity)
        self._next = time.monotonic() + self.every_s

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        self.beat(state.epoch)

    def on_batch_end(
        self, trainer: Trainer, state: FitState, batch: int, loss: torch.Tensor
    ) -> None:
        if time.monotonic() >= self._next:
            self.beat(state.epoch)

    def on_checkpoint(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        self.beat(state.epoch)  # listed after the Checkpointer: last.pt holds this epoch
