"""The tracking worker: a process beside training that talks to the trackers.

Why a process: MLflow's import and its store's start-up cost seconds of Python, which in
a thread would hold the GIL the training loop needs, and a tracker that hangs or
crashes must not take the run with it. The training process writes one JSON message a
line to this process's stdin and never waits for it, except at the end of a run (so
its runs are complete when the command returns). Epochs that end within a second of
each other are logged together (:class:`Epochs`). Acknowledgements (``{"ack": id}``)
are the only thing written to stdout; warnings go to stderr, which is the terminal's.

It ignores Ctrl-C (the training process decides what an interruption means and says so
in a message) and ends at end of input, finishing what the messages before it asked.

    python -m dlrun.tracking.worker [tracker modules to import before the first message]
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrun import process_exit
from dlrun.tracking.session import Session

# Imported ahead of the first message, while the training process loads its data and a
# core is idle: everything the run's opening imports (measured with MLflow 3.17), since
# it opens at the first epoch, when what the worker does is CPU taken from training.
# MLflow's SQL store (its default local store, and a database URI: SQLAlchemy's models,
# the SQLite dialect, Alembic's schema check) is ~1 s of CPU of it. With a server URI
# it is imported for nothing, but during start-up only, and it creates no file.
WARM = {
    "mlflow": (
        "mlflow",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.tracking.sqlalchemy_workspace_store",
        "sqlalchemy.dialects.sqlite.pysqlite",
        "alembic.command",
        "dlrun.tracking.mlflow_tracker",
    ),
    "tensorboard": ("tensorboard.summary", "dlrun.tracking.tensorboard_tracker"),
    "wandb": ("wandb", "dlrun.tracking.wandb_tracker"),
}
GATHER_S = 1.0  # epochs that end within a second of a logged one go in one call per tracker


def warm_up(names: list[str]) -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no INFO lines in the run's log
    for name in names:
        for module in WARM.get(name, (name,)):
            with contextlib.suppress(Exception):  # reported with its tracker's name when used
                importlib.import_module(module)


def handle(session: Session, msg: dict[str, Any]) -> None:
    op = msg.get("op")
    if op == "open":
        session.open(msg)
    elif op == "log":
        session.log(msg)
    elif op == "finish":
        session.finish(msg)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # training goes first; this catches up when it idles
        os.nice(10)
    gc.disable()  # collections during the imports were a fifth of their CPU: none is garbage
    warm_up(sys.argv[1:])
    session = Session()
    session.git_commit()  # two git commands, during start-up too
    gc.freeze()  # what was imported lives to the end: no collection need scan it again
    gc.enable()
    serve(session)
    session.end_of_input()
    leave(session)


def serve(session: Session) -> None:
    """Handle the messages on stdin until ``close`` or end of input.

    Epoch rows are gathered (:class:`Epochs`); any other message first logs those
    waiting, so the trackers see everything in the order it happened."""
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    threading.Thread(target=_read, args=(lines,), daemon=True, name="dlrun-stdin").start()
    epochs = Epochs(session)
    while True:
        try:
            line = lines.get(timeout=epochs.wait())
        except queue.Empty:
            _safely(epochs.flush)
            continue
        msg = {"op": "close"} if line is None else _parse(line)
        if msg.get("op") == "log" and msg.get("ack") is None:
            _safely(epochs.add, msg)
            continue
        _safely(epochs.flush)
        if msg.get("op") == "close":
            return
        _safely(handle, session, msg)
        if msg.get("ack") is not None:
            sys.stdout.write(json.dumps({"ack": msg["ack"]}) + "\n")
            sys.stdout.flush()


class Epochs:
    """Epoch rows waiting to be logged, so that a run of fast epochs costs a few calls.

    Each tracker call is a transaction (MLflow's local store: a write to SQLite; a
    server: a request), ~6 ms of CPU beside training per epoch. A row that comes after
    a second without logging is logged at once (a run of slow epochs logs each as it
    ends); rows that follow within the second wait for it to end, and go in one call.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.rows: dict[Path, list[dict[str, Any]]] = {}
        self.last = -math.inf

    def add(self, msg: dict[str, Any]) -> None:
        self.rows.setdefault(Path(msg["dir"]), []).append(msg)
        if self.wait() == 0:
            self.flush()

    def wait(self) -> float | None:
        """Seconds until the rows waiting are due (None: none wait)."""
        if not self.rows:
            return None
        return max(0.0, self.last + GATHER_S - time.monotonic())

    def flush(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, {}
        self.last = time.monotonic()
        for run_dir, msgs in rows.items():
            self.session.log_rows(run_dir, msgs)


def _read(lines: queue.SimpleQueue[str | None]) -> None:
    for line in sys.stdin:
        lines.put(line)
    lines.put(None)


def _parse(line: str) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


def _safely(step: Callable[..., None], *args: Any) -> None:
    try:
        step(*args)
    except Exception as exc:  # a bug here must not leave the training process waiting
        print(f"dlrun: warning: tracking: {type(exc).__name__}: {exc}", file=sys.stderr)


def leave(session: Session) -> None:
    """Exit now, when nothing is left open, skipping the interpreter's teardown.

    Tearing down MLflow's thousands of modules takes ~0.6 s of CPU, which the end of
    every run waited for. Every run here is finished (its trackers closed, flushed and
    told the end state), so only exit handlers (MLflow's, W&B's) remain: they run, then
    the process ends (:func:`dlrun.process_exit.exit_now`). A run left open (its training
    process was killed) gets the normal exit, as does a thread a tracker left running.
    """
    if not session.runs:
        process_exit.exit_now(0)


if __name__ == "__main__":
    main()
