"""The training process's side of tracking: start the worker, send it what happens.

One worker per process, started when the first run with a logger builds its callbacks
and kept for the rest of the process (the jobs of a sweep share it, and its imports).
Sending never blocks training: messages go through a queue to a writer thread. Only
the end of a run waits, for the worker to confirm it logged everything; if the worker
died, one warning says so and the run goes on.
"""

from __future__ import annotations

import atexit
import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

FINISH_WAIT_S = 600.0  # at most this long at the end of a run (MLflow's own timeouts are shorter)
NOTICE_AFTER_S = 3.0  # then say what we are waiting for


class Worker:
    """The tracking worker process and the threads that talk to it."""

    def __init__(self, trackers: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlrun.tracking.worker", *trackers],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the run, which then tells the worker
        )
        self.trackers = trackers
        self.outbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.acks: dict[int, threading.Event] = {}
        self.ids = itertools.count()
        self.broken = False
        self.used = False
        threading.Thread(target=self._write, daemon=True, name="dlrun-tracking-w").start()
        threading.Thread(target=self._read, daemon=True, name="dlrun-tracking-r").start()

    def _write(self) -> None:
        assert self.proc.stdin is not None
        while True:
            msg = self.outbox.get()
            try:
                if msg is None:
                    self.proc.stdin.close()
                    return
                self.proc.stdin.write(json.dumps(msg, default=str) + "\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self._lost()
                return

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ack = json.loads(line).get("ack")
            except (ValueError, AttributeError):
                continue
            event = self.acks.pop(ack, None)
            if event is not None:
                event.set()
        self._lost()

    def _lost(self) -> None:
        """The worker ended: release every waiter; warn if it was not asked to end."""
        for event in list(self.acks.values()):
            event.set()
        if not self.broken and self.proc.poll() not in (None, 0):
            print(
                f"dlrun: warning: the tracking worker stopped (exit code {self.proc.returncode});"
                f" not logged to {', '.join(self.trackers)}: what followed. The runs go on; "
                "their files are complete.",
                file=sys.stderr,
            )
        self.broken = True

    def send(self, msg: dict[str, Any]) -> None:
        if not self.broken:
            self.used = self.used or msg.get("op") != "close"
            self.outbox.put(msg)

    def request(self, msg: dict[str, Any], what: str) -> None:
        """Send and wait until the worker has done it (or is gone)."""
        if self.broken:
            return
        number = next(self.ids)
        event = threading.Event()
        self.acks[number] = event
        self.send({**msg, "ack": number})
        if event.wait(NOTICE_AFTER_S):
            return
        print(f"dlrun: waiting for {', '.join(self.trackers)} to {what}", file=sys.stderr)
        if not event.wait(FINISH_WAIT_S):
            print(
                f"dlrun: warning: {', '.join(self.trackers)} did not {what} within "
                f"{FINISH_WAIT_S:.0f} s; the run's files are complete",
                file=sys.stderr,
            )

    def close(self) -> None:
        if not self.used:  # started for a run that never began (refused): nothing to log
            self.broken = True
            self.proc.kill()
            self.proc.wait()
            return
        self.send({"op": "close"})
        self.outbox.put(None)
        deadline = time.monotonic() + FINISH_WAIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()


_worker: Worker | None = None
_open: dict[Path, dict[str, Any]] = {}  # run dir -> its open message, until it is finished


def worker(trackers: list[str]) -> Worker:
    """This process's worker (started on first use, closed at exit)."""
    global _worker
    if _worker is None or _worker.broken:
        _worker = Worker(trackers)
        atexit.register(close)
    return _worker


def open_run(msg: dict[str, Any], wait: bool = False) -> None:
    run_dir = Path(msg["dir"])
    _open[run_dir] = msg
    w = worker(sorted(msg["loggers"]))
    if wait:
        w.request({**msg, "op": "open"}, "start the run")
    else:
        w.send({**msg, "op": "open"})


def log(run_dir: Path, step: int, row: dict[str, Any]) -> None:
    if _worker is not None:
        _worker.send({"op": "log", "dir": str(run_dir), "step": step, "row": row})


def finish(
    run_dir: Path, reopen: dict[str, Any] | None = None, summary: dict[str, Any] | None = None
) -> None:
    """End ``run_dir``'s tracker runs (and its folds') from its files; wait for it.

    ``summary``: a sweep's numbers and tags, which its files hold only as tables."""
    run_dir = run_dir.resolve()
    opened = [d for d in _open if d == run_dir or run_dir in d.parents]
    if not opened and reopen is None:
        return
    for d in opened:
        del _open[d]
    msg: dict[str, Any] = {"op": "finish", "dir": str(run_dir), "summary": summary}
    if not opened:
        msg["reopen"] = reopen
    w = worker(sorted((reopen or {}).get("loggers") or []))
    w.request(msg, "finish logging")


def close() -> None:
    """At exit: end what is still open (its files say how it ended), stop the worker."""
    global _worker
    if _worker is None:
        return
    for run_dir in sorted(_open, key=lambda d: len(d.parts)):
        if run_dir in _open:
            finish(run_dir)
    _worker.close()
    _worker = None
