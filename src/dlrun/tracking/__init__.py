"""Experiment trackers: ``logger=mlflow``, ``logger=tensorboard``, ``logger=wandb``,
or several at once (``logger=[mlflow,tensorboard]``).

The ``logger`` config group is a dict of trackers, as in the Lightning-Hydra template:
each option file puts its settings under its own name (``logger.mlflow.tracking_uri``),
so options combine. The hooks into the rest of dlrun are few and small:

* :func:`job_started` (a Hydra callback, as a run or sweep job starts) starts the
  tracking worker early, so its imports overlap the run's own;
* :func:`loggers` (from the runner's callbacks) feeds each epoch to the trackers;
* :func:`job_ended` (a Hydra callback, after every run or sweep job) logs the final
  metrics, tags and files from the run dir and ends the tracker runs;
* :func:`sweep_started` / :func:`sweep_ended` (the leaderboard's Hydra callback) open
  and close the sweep's parent run, under which every job is a child run.

The trackers run in a worker process (:mod:`dlrun.tracking.worker`), so their imports
and network calls neither slow training nor can fail it. Light to import: nothing here
imports torch, Hydra or a tracker library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlrun.engine.callbacks import Callback


def logger_specs(node: Any) -> dict[str, dict[str, Any]]:
    """The configured trackers: ``{name: {_target_, ...}}`` (``logger=none``: empty)."""
    if not isinstance(node, dict):
        return {}
    return {
        str(name): dict(spec)
        for name, spec in node.items()
        if isinstance(spec, dict) and spec.get("_target_")
    }


def loggers(cfg: Any, run_dir: Path) -> list[Callback]:
    """The callback that feeds this run's epochs to its trackers (none without a logger).

    ``cfg``: the run's typed config (a ``RunConfig``) or the same as plain data; the
    trackers get plain data (their params are its flattened keys).
    """
    plain = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    specs = logger_specs(plain.get("logger"))
    if not specs:
        return []
    from dlrun.tracking.feed import TrackerFeed

    return [TrackerFeed(plain, run_dir.resolve(), specs)]


def job_started(logger_node: Any) -> None:
    """Start the tracking worker as a run starts, before the run imports torch.

    The worker's own imports (MLflow's take seconds) then use the core that the run's
    single-threaded imports leave idle, instead of competing with training later.
    """
    specs = logger_specs(logger_node)
    if specs:
        from dlrun.tracking import client

        client.worker(sorted(specs))


def job_ended(run_dir: Path, logger_node: Any = None) -> None:
    """A run (or a sweep's job) is over: log its results and end its tracker runs.

    ``logger_node`` (the job's ``logger`` config) lets a process that did not start the
    run finish it from its ``tracking.json`` (the parent of ``trainer.devices=N``).
    """
    from dlrun.tracking import client
    from dlrun.tracking.feed import reopen_message

    specs = logger_specs(logger_node)
    started = (run_dir / "tracking.json").is_file()  # not a job a resumed sweep skipped
    reopen = reopen_message(run_dir, specs) if specs and started else None
    client.finish(run_dir, reopen)


def sweep_started(
    sweep_dir: Path, logger_node: Any, config: dict[str, Any], overrides: list[str]
) -> None:
    """Open the sweep's parent run and wait until its record is on disk for the jobs."""
    specs = logger_specs(logger_node)
    if not specs:
        return
    from dlrun.tracking import client

    sweep_dir.mkdir(parents=True, exist_ok=True)
    msg = {
        "dir": str(sweep_dir.resolve()),
        "kind": "sweep",
        "name": sweep_dir.name,
        "config": config,
        "loggers": specs,
        "tags": {"sweep_id": sweep_dir.name},
        "overrides": overrides,
    }
    client.open_run(msg, wait=True)


def sweep_ended(sweep_dir: Path, summary: dict[str, Any] | None = None) -> None:
    """Log the leaderboard to the sweep's parent run and end it.

    ``summary``: ``{"values": {...}, "tags": {...}}`` of the whole sweep (its jobs, the
    leader), from the leaderboard the sweep just wrote."""
    from dlrun.tracking import client

    client.finish(sweep_dir, summary=summary)
