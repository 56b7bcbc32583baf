"""Ctrl-C and SIGTERM that stop a run cleanly instead of killing it mid-write.

The first signal only sets a flag; the trainer checks it after every step, abandons
the epoch in progress and stops. ``last.pt`` then holds the last *complete* epoch, so a
resumed run is exactly the run that was never stopped. A second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from dlrun.errors import UserError


class RunInterrupted(UserError):
    """The user (or the system) asked the run to stop."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop, raised where Ctrl-C raises KeyboardInterrupt."""


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM stops the process as Ctrl-C does: :class:`Terminated` is raised
    in the main thread, so start-up and evaluation end with one line, exit 130 and a run
    dir marked ``interrupted``, not a silent kill (exit 143, no status.json). The
    training loop's own handlers (:func:`graceful_interrupts`) take over while it runs.
    Only the main thread may install a handler; elsewhere this changes nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def cause(interrupt: KeyboardInterrupt) -> str:
    """``SIGTERM`` or ``Ctrl-C``: what stopped the process, for its one line."""
    return "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"


class StopFlag:
    """Set by the signal handler, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


@contextmanager
def stop_signals_handled_by(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` for the duration, then restore the old ones.

    Only the main thread may install signal handlers; elsewhere this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def graceful_interrupts() -> Iterator[StopFlag]:
    """Install SIGINT/SIGTERM handlers for the duration (main thread only)."""
    flag = StopFlag()

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag.requested:  # second signal: leave now
            os._exit(128 + signum)
        flag.signal_name = signal.Signals(signum).name

    with stop_signals_handled_by(handle):
        yield flag
