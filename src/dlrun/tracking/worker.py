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

import contextlib
import importlib
import json
import os
import signal
import sys
from typing import Any

from dlrun.tracking.session import Session

# Imported ahead of the first message, while the training process loads its data and a
# core is idle. MLflow's SQL store (its default local store, and a database URI) is ~0.9 s
# of CPU more to import (SQLAlchemy's models); left to the first message, that is CPU
# taken from training, as the run opens at the first epoch. With a server URI it is
# imported for nothing, but during start-up only, and it creates no file.
WARM = {
    "mlflow": ("mlflow", "mlflow.store.tracking.sqlalchemy_store"),
    "tensorboard": ("tensorboard.summary",),
    "wandb": ("wandb",),
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
    session.end_of_input()


if __name__ == "__main__":
    main()
