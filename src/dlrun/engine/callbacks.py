"""Callbacks: objects with typed hook methods the trainer calls at fixed points.

No string dispatch: each hook is a real method with a signature, so a typo is an
AttributeError at import, not a silently ignored hook. The trainer never draws, writes
CSV or saves files itself; these callbacks do.

At the end of an epoch the trainer calls ``on_epoch_end`` of every callback, then
``on_checkpoint`` of every callback: whatever a callback updates in ``on_epoch_end``
(early stopping's patience) is in the checkpoint of that epoch, in any callback order.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.engine.checkpoint import copy_checkpoint, save_checkpoint
from dlrun.monitor import Monitor

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from dlrun.engine.trainer import FitState, Trainer


class Callback:
    """Base class: every hook does nothing unless a subclass overrides it."""

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        return None

    def on_epoch_start(self, trainer: Trainer, state: FitState, n_batches: int) -> None:
        return None

    def on_batch_end(
        self, trainer: Trainer, state: FitState, batch: int, loss: torch.Tensor
    ) -> None:
        return None

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        return None

    def on_checkpoint(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        """After every callback's ``on_epoch_end``: the place to save the epoch's state."""
        return None

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints so a resumed run behaves as if never stopped."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class HistoryCSV(Callback):
    """Rewrites ``history.csv`` after every epoch so it is complete even after a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        rows = state.history
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


class Checkpointer(Callback):
    """Saves ``last.pt`` every epoch and ``best.pt`` when the monitored metric improves.

    It saves in ``on_checkpoint``, after every callback has updated its state.
    """

    def __init__(self, directory: Path, extra: dict | None = None) -> None:
        self.directory = directory
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

    def __init__(self, console: Console, mode: str = "auto", refresh_s: float = 0.2) -> None:
        self.console = console
        self.show_bar = mode == "bar" or (mode == "auto" and console.is_terminal)
        self.quiet = mode == "none"
        self.refresh_s = refresh_s
        self._progress = None
        self._task = None
        self._last = 0.0
        self._started = 0.0

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
        self._started = time.perf_counter()
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

    def __init__(self, path: Path) -> None:
        self.path = path

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


class TensorBoardLogger(Callback):
    """Writes every history value as a TensorBoard scalar (``logger=tensorboard``)."""

    def __init__(self, log_dir: Path) -> None:
        from dlrun.errors import UserError

        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise UserError(
                "logger=tensorboard needs the tensorboard package: pip install tensorboard"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, global_step=state.epoch)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        self.writer.close()
