"""The run dir's view of training: ``status.json`` while training; what a resume keeps.

:class:`StatusHeartbeat` keeps ``status.json`` saying "running", and how far. It runs
after the checkpointer, so the ``epoch`` it records is always one that ``last.pt``
holds: a run that then fails (a full disk while writing the next epoch) reports exactly
how far it can be resumed from. Between epochs it beats at most every
``rundir.HEARTBEAT_S`` seconds, checked with one clock read per batch, so a reader on
another host can tell a long epoch from a dead process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.engine.callbacks import Callback, EarlyStopping, epochs
from dlrun.rundir import HEARTBEAT_S, process_identity, write_status

if TYPE_CHECKING:
    import torch

    from dlrun.engine.trainer import FitState, Trainer


class StatusHeartbeat(Callback):
    """Writes ``status.json`` (running, epoch, heartbeat) into ``run_dir``.

    ``identity`` is the pid, host and start time of the process the user started (the
    CLI, which may not be this process when training runs in spawned workers); it
    defaults to this process.
    """

    def __init__(
        self, run_dir: Path, identity: dict[str, Any] | None = None, every_s: float = HEARTBEAT_S
    ) -> None:
        self.run_dir = run_dir
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


def resume_early_stopping(callbacks: Sequence[Callback], state: FitState, continuing: bool) -> str:
    """Carry an early stop over a resume; returns what the user should be told.

    ``last.pt`` holds the stop decision (``state.should_stop``), so a run that had stopped
    and is only resumed (interrupted while evaluating) stays stopped. A completed run that
    is given more epochs (``continuing``) trains on with a fresh patience, as Keras'
    ``fit(initial_epoch=...)`` does, but keeps the best value so far, so "improved" still
    means better than anything it has seen.
    """
    stopper = next((cb for cb in callbacks if isinstance(cb, EarlyStopping)), None)
    if stopper is None or not continuing or not state.should_stop:
        return ""
    state.should_stop, state.stop_reason = False, ""
    stopper.restart(state.epoch)
    best = "" if state.best_value is None else f" (best so far {state.best_value:.4g})"
    return (
        f"early stopping had stopped this run after epoch {state.epoch}; it trains on with "
        f"a fresh patience of {epochs(stopper.patience)}{best}"
    )


# Attributes in which a scheduler's state_dict records how long the run is (OneCycleLR).
_LENGTH_KEYS = ("total_steps", "_schedule_phases")


@contextmanager
def schedule_length_kept(scheduler: Any) -> Iterator[None]:
    """Load a checkpoint but keep the schedule's length as built for this run.

    A resume may ask for more ``trainer.epochs``; a scheduler that stores its length
    (OneCycleLR) would otherwise keep the old one and fail one step past it ("Tried to
    step 9 times"). Schedules that compute the lr from the step count alone (the
    LambdaLR ones) pick up at the step reached anyway.
    """
    fresh = {k: v for k, v in vars(scheduler).items() if k in _LENGTH_KEYS} if scheduler else {}
    yield
    if fresh:
        vars(scheduler).update(fresh)
