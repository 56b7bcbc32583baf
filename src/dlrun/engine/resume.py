"""What a resume keeps and what it changes: an early stop carried over (or reopened by
more epochs), and a schedule's length as built for the resumed run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dlrun.engine.callbacks import EarlyStopping, epochs
from dlrun.engine.trainer import Callback, FitState


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
