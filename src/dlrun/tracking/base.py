"""The tracker interface, and the guard that keeps a failing tracker from touching a run.

A tracker (MLflow, TensorBoard, W&B) is told what happens to one run: it starts, gets
params and tags, per-epoch and final metrics, the run's files, and an end state. Every
call goes through :class:`Guarded`: the first exception disables that tracker for the
run (a server that is down stays down for the next epoch too, and each call could wait
for a timeout) and prints one line naming the tracker, what failed and what therefore
was not logged; a second failure of the same kind in another run of the same process
(the next job of a sweep) is not repeated. Nothing a tracker does changes the run's
state or files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# dlrun's end states -> the words trackers use; each tracker maps them further.
STATES = ("completed", "failed", "interrupted", "pruned", "running")


@dataclass
class RunInfo:
    """Everything a tracker needs to start a run."""

    dir: Path
    kind: str  # run | fold | kfold | sweep
    name: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    parent: dict[str, Any] | None = None  # the parent run's record for this tracker
    previous: dict[str, Any] | None = None  # this run's own record, when it resumes
    group: str | None = None  # the sweep or k-fold run it belongs to (for W&B)


class Tracker:
    """One tracker for one run. Subclasses override what their service supports."""

    name = "tracker"
    # W&B has no nested runs: a sweep or a k-fold run is a group of child runs there.
    makes_parent_runs = True

    def where(self) -> str:
        """Where it logs to, for messages (a URI, a folder)."""
        return ""

    def start(self, run: RunInfo) -> dict[str, Any]:
        """Start (or, with ``run.previous``, continue) the run; returns its record."""
        raise NotImplementedError

    def log_metrics(self, values: dict[str, float], step: int | None) -> None:
        raise NotImplementedError

    def log_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Several epochs' metrics at once, ``(step, values)`` in order (the worker
        gathers the epochs that end within a second; a tracker with a batch call uses it)."""
        for step, values in rows:
            self.log_metrics(values, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        return None

    def finish(self, state: str) -> None:
        return None


_warned: set[tuple[str, str]] = set()


class Guarded:
    """A tracker whose every call is caught: one warning, then it is left out.

    ``what`` in each call names what would not be logged, for the warning.
    """

    def __init__(self, tracker: Tracker, run_dir: Path) -> None:
        self.tracker = tracker
        self.run_dir = run_dir
        self.failed = False

    def call(self, what: str, method: str, *args: Any) -> Any:
        if self.failed:
            return None
        try:
            return getattr(self.tracker, method)(*args)
        except Exception as exc:  # a tracker must never fail the run
            self.failed = True
            warn_once(self.tracker, what, exc, self.run_dir)
            return None


def warn_once(tracker: Tracker, what: str, exc: BaseException, run_dir: Path) -> None:
    """One line per tracker and kind of failure in this process."""
    key = (tracker.name, type(exc).__name__)
    if key in _warned:
        return
    _warned.add(key)
    detail = " ".join(str(exc).split()) or "no message"
    detail = detail if len(detail) <= 160 else detail[:159] + "…"
    where = f" at {tracker.where()}" if tracker.where() else ""
    print(
        f"dlrun: warning: logger {tracker.name}{where} could not {what} "
        f"({type(exc).__name__}: {detail}); from there on nothing of {run_dir} is logged "
        f"to {tracker.name} (a failure of this kind is reported once). The run goes on "
        "and its files are complete.",
        file=sys.stderr,
        flush=True,
    )
