"""The tracking worker's state: the runs it has open, and what each tracker is told.

Messages (JSON objects from the training process, see :mod:`dlrun.tracking.worker`):

* ``open``: start a run's trackers (``dir``, ``kind``, ``name``, ``config``,
  ``loggers``, ``tags``, ``parent``, ``group``). A fold's k-fold run is opened first if
  it isn't yet; a sweep is opened by the sweep's own process, so a job only reads the
  sweep's record from ``<sweep_dir>/tracking.json``.
* ``log``: one epoch's row (``dir``, ``step``, ``row``).
* ``finish``: the run is over (``dir``; with ``reopen``, a run another process started,
  e.g. rank 0 of a multi-process run). Its children (a k-fold run's folds) end first.
  The final metrics, tags, files and state are read from the run dir now.

Each run's records (MLflow run id, W&B id, ...) go to ``<run_dir>/tracking.json``, so
``dlrun resume=`` continues the same tracker runs and child runs find their parent.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.rundir import read_json_dict
from dlrun.tracking import content
from dlrun.tracking.base import Guarded, RunInfo, Tracker

RECORD = "tracking.json"


@dataclass
class OpenRun:
    dir: Path
    kind: str
    parent: Path | None
    trackers: list[Guarded] = field(default_factory=list)


def build_tracker(spec: dict[str, Any]) -> Tracker:
    """A tracker from its config node (``_target_`` and keyword arguments)."""
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    module, _, name = str(spec["_target_"]).rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def read_records(run_dir: Path) -> dict[str, Any]:
    return read_json_dict(run_dir / RECORD)


class Session:
    """The runs open in this worker, by run dir."""

    def __init__(self, cwd: Path | None = None) -> None:
        self.runs: dict[Path, OpenRun] = {}
        self._commit: str | bool | None = False
        self.cwd = cwd or Path.cwd()

    def git_commit(self) -> str | None:
        if self._commit is False:
            self._commit = content.git_commit(self.cwd)
        return self._commit  # type: ignore[return-value]

    def open(self, msg: dict[str, Any]) -> None:
        run_dir = Path(msg["dir"])
        if run_dir in self.runs:
            return
        parent = msg.get("parent")
        parent_dir = Path(parent["dir"]) if parent else None
        if parent and parent["kind"] != "sweep" and parent_dir not in self.runs:
            self.open({**msg, **parent, "name": Path(parent["dir"]).name, "group": None})
        run = OpenRun(run_dir, msg["kind"], parent_dir)
        self.runs[run_dir] = run
        previous = read_records(run_dir)
        parent_records = read_records(parent_dir) if parent_dir else {}
        overrides = msg.get("overrides") or content.read_overrides(run_dir)
        params = content.params(msg.get("config") or {}, overrides)
        tags = {k: str(v) for k, v in (msg.get("tags") or {}).items() if v not in (None, "")}
        commit = self.git_commit()
        if commit:
            tags["git_commit"] = commit
        for name, spec in (msg.get("loggers") or {}).items():
            self._start(run, name, spec, msg, params, tags, previous, parent_records)

    def _start(
        self,
        run: OpenRun,
        name: str,
        spec: dict[str, Any],
        msg: dict[str, Any],
        params: dict[str, str],
        tags: dict[str, str],
        previous: dict[str, Any],
        parent_records: dict[str, Any],
    ) -> None:
        try:
            tracker = build_tracker(spec)
        except Exception as exc:
            from dlrun.tracking.base import warn_once

            stub = Tracker()
            stub.name = name
            warn_once(stub, "load", exc, run.dir)
            return
        if run.kind in ("kfold", "sweep") and not tracker.makes_parent_runs:
            return
        info = RunInfo(
            dir=run.dir,
            kind=run.kind,
            name=msg.get("name") or run.dir.name,
            params=params,
            tags=tags,
            parent=parent_records.get(name),
            previous=previous.get(name),
            group=msg.get("group"),
        )
        guarded = Guarded(tracker, run.dir)
        record = guarded.call("start the run", "start", info)
        if record is None:
            return
        run.trackers.append(guarded)
        _save_record(run.dir, name, record)
        if run.kind != "fold" and tracker.name == "mlflow":
            print(
                f"mlflow: {run.dir.name} is run {record.get('run_id')} of experiment "
                f"{record.get('experiment_name')} at {record.get('tracking_uri')}",
                file=sys.stderr,
                flush=True,
            )

    def log(self, msg: dict[str, Any]) -> None:
        self.log_rows(Path(msg["dir"]), [msg])

    def log_rows(self, run_dir: Path, msgs: list[dict[str, Any]]) -> None:
        """Epochs of one run (``log`` messages, in order), in one call per tracker."""
        run = self.runs.get(run_dir)
        if run is None or not msgs:
            return
        rows = [(m.get("step"), content.epoch_metrics(m.get("row") or {})) for m in msgs]
        first, last = rows[0][0], rows[-1][0]
        what = f"epoch {first}" if len(rows) == 1 else f"epochs {first} to {last}"
        for tracker in run.trackers:
            tracker.call(f"log the metrics of {what}", "log_rows", rows)

    def finish(self, msg: dict[str, Any]) -> None:
        run_dir = Path(msg["dir"])
        if run_dir not in self.runs and msg.get("reopen") and (run_dir / RECORD).is_file():
            self.open({**msg["reopen"], "dir": msg["dir"]})
        run = self.runs.get(run_dir)
        if run is None:
            return
        for child in [r for r in self.runs.values() if r.parent == run_dir]:
            self.finish({"dir": str(child.dir)})
        self._finish(run, msg.get("summary") or {})

    def _finish(self, run: OpenRun, summary: dict[str, Any]) -> None:
        """Final metrics, tags and files from the run dir (a sweep's numbers from
        ``summary``), then the end state."""
        state = content.run_status(run.dir, run.kind)
        metrics = read_json_dict(run.dir / "metrics.json") if run.kind != "sweep" else {}
        values = content.final_metrics(metrics)
        tags = content.final_tags(metrics, state)
        if run.kind == "sweep":
            values = dict(summary.get("values") or {})
            tags.update(summary.get("tags") or {})
        files = content.run_files(run.dir, run.kind, checkpoints=True)
        step = (metrics.get("train") or {}).get("epochs")
        for tracker in run.trackers:
            if values:
                tracker.call("log the final metrics", "log_metrics", values, step)
            tracker.call("set the final tags", "set_tags", tags)
            tracker.call("upload the run's files", "log_files", files)
            tracker.call(f"mark the run {state}", "finish", state)
        del self.runs[run.dir]

    def end_of_input(self) -> None:
        """The training process is gone: end the runs whose files say they ended.

        A run still ``running`` on disk is left open: another process may finish it
        (the parent of a multi-process run), or it was killed, as its files say.
        """
        for run in sorted(self.runs.values(), key=lambda r: len(r.dir.parts), reverse=True):
            if run.dir in self.runs and content.run_status(run.dir, run.kind) != "running":
                self._finish(run, {})


def _save_record(run_dir: Path, name: str, record: dict[str, Any]) -> None:
    """Add this tracker's record to ``tracking.json`` (atomically)."""
    records = read_records(run_dir)
    records[name] = record
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(records, indent=2, default=str) + "\n")
    tmp.replace(run_dir / RECORD)
