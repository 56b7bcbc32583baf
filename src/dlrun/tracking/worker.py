"""The tracking worker: a process beside training that talks to the trackers.

Why a process: MLflow's import and its store's start-up cost seconds of Python, which in
a thread would hold the GIL the training loop needs, and a tracker that hangs or
crashes must not take the run with it. The training process writes one JSON message a
line to this process's stdin and never waits for it, except at the end of a run (so
its runs are complete when the command returns). Acknowledgements (``{"ack": id}``)
are the only thing written to stdout; warnings go to stderr, which is the terminal's.

It ignores Ctrl-C (the training process decides what an interruption means and says so
in a message) and ends at end of input, finishing what the messages before it asked.

    python -m dlrun.tracking.worker [tracker modules to import before the first message]
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import threading
from typing import Any

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
    warm_up(sys.argv[1:])
    session = Session()
    session.git_commit()  # two git commands, during start-up too
    gc.freeze()  # what was imported lives to the end: no collection need scan it again
    serve(session)
    session.end_of_input()
    leave(session)


def serve(session: Session) -> None:
    """Handle the messages on stdin until ``close`` or end of input."""
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("op") == "close":
            break
        try:
            handle(session, msg)
        except Exception as exc:  # a bug here must not leave the training process waiting
            print(f"dlrun: warning: tracking: {type(exc).__name__}: {exc}", file=sys.stderr)
        if msg.get("ack") is not None:
            sys.stdout.write(json.dumps({"ack": msg["ack"]}) + "\n")
            sys.stdout.flush()


def leave(session: Session) -> None:
    """Exit now, when nothing is left open, skipping the interpreter's teardown.

    Tearing down MLflow's thousands of modules takes ~0.6 s of CPU, which the end of
    every run waited for. Every run here is finished (its trackers closed, flushed and
    told the end state), so only exit handlers (MLflow's, W&B's) remain: they run, then
    the process ends. A run left open (its training process was killed), or a thread
    a tracker left running, gets the normal exit, which waits for them.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if session.runs or any(not t.daemon for t in others):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
