"""Hydra callbacks: hooks Hydra calls around runs and sweeps (``hydra.callbacks``)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun.errors import os_error_line
from dlrun.rundir import (
    created_here,
    discard,
    make_dirs,
    note_existing,
    note_missing,
    note_run_dir,
    read_status,
)

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def register_resolvers() -> None:
    """dlrun's resolvers of ``hydra.run.dir`` and ``hydra.sweep.subdir``.

    Called by the CLI, and when this module is imported: a joblib or submitit worker
    resolves a job's directory itself, and it imports this module (Hydra sends it the
    callbacks) but never runs the CLI's start-up.
    """
    from dlrun.rundir import claim_unique_dir
    from dlrun.sweepdir import job_subdir

    for name, resolver in (("dlrun_unique_dir", claim_unique_dir), ("dlrun_job_dir", job_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


class RunDirGuard(Callback):
    """Never write into, or delete, a directory this program did not create.

    Runs before Hydra writes anything. A single run's ``hydra.run.dir`` must be new or
    empty (or the run's own, for ``resume=``); what it held before is noted so that a
    refused run removes only what it wrote (:func:`dlrun.rundir.discard`). An existing
    ``hydra.sweep.dir`` must be a dlrun sweep: running it again resumes it
    (:mod:`dlrun.sweepdir`).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        raw = OmegaConf.to_container(config.hydra.run, resolve=False)
        if "dlrun_unique_dir" in str(raw):
            return  # the default dir is freshly claimed (see dlrun.rundir), never reused
        run_dir = Path(config.hydra.run.dir)
        note_run_dir(run_dir)
        if config.get("resume"):
            note_existing(run_dir)  # resuming continues in the run's own directory
            return
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            _exit(2, _taken(run_dir))
        try:
            if run_dir.is_dir():
                note_existing(run_dir)  # the user's empty folder: used, never deleted
            else:
                make_dirs(run_dir)
        except OSError as exc:
            _exit(1, os_error_line(exc))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dlrun.sweepdir import JobDirRefused, survey

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = survey(sweep_dir, _basic_sweep_jobs(config))
        except JobDirRefused as exc:
            _exit(2, str(exc))
        if not sweep_dir.exists():
            _check_writable(sweep_dir)
            note_missing(sweep_dir)
        if summary:
            print(summary)


def _taken(run_dir: Path) -> str:
    if any((run_dir / name).exists() for name in ("status.json", ".hydra", "metrics.json")):
        return (
            f"{run_dir} already holds a run; choose another hydra.run.dir "
            f"(nothing was written), or continue it with dlrun resume={run_dir}"
        )
    names = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (
        f"hydra.run.dir={run_dir} is not empty ({shown or 'a file'}); "
        "choose a new or empty folder (nothing was written)"
    )


def _check_writable(path: Path) -> None:
    """Name an unwritable output folder in one line (Hydra would print a traceback)."""
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if os.access(existing, os.W_OK | os.X_OK):
        return
    read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
    code = errno.EROFS if read_only else errno.EACCES
    _exit(1, os_error_line(OSError(code, os.strerror(code), str(path))))


def _basic_sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides in launch order, as Hydra's basic sweeper will make them;
    None for another sweeper, or a sweep syntax that needs the config loader."""
    if config.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)  # type: ignore[arg-type]
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # e.g. glob() over a config group: the resolver still checks each job
        return None
    return [job for batch in batches for job in batch]


def _exit(code: int, message: str) -> None:
    print(f"dlrun: error: {message}", file=sys.stderr)
    sys.exit(code)


def _bagging_ensemble(config: DictConfig, sweep_dir: Path) -> None:
    """A sweep over ``ensemble.member`` ends with its members evaluated together."""
    if not config.get("ensemble") or not config.ensemble.get("bagging"):
        return
    from dlrun import ensembling
    from dlrun.display import make_console
    from dlrun.errors import UserError

    try:
        out = ensembling.after_sweep(sweep_dir, config.ensemble.method, make_console())
    except UserError as exc:
        print(f"dlrun: error: the bagging ensemble was not built: {exc}", file=sys.stderr)
        sys.exit(1)
    if out is not None:
        print(f"ensemble: {out}")


class Leaderboard(Callback):
    """Before a sweep: refuse a config every job would reject, then open the trackers'
    parent run. After it: write leaderboard.csv/.md/.html, print it, end the parent run
    (with the leaderboard as its files), and exit non-zero if a job failed. A sweep
    whose every job was refused before training for the same reason leaves nothing
    behind."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dlrun.config import to_run_config, validate
        from dlrun.errors import UserError
        from dlrun.overrides import check_sweep

        main = {k: v for k, v in config.items() if k != "hydra"}
        try:
            check_sweep(config)  # every swept value composes; plugins installed
            plain: Any = OmegaConf.to_container(OmegaConf.create(main), resolve=True)
            validate(to_run_config(OmegaConf.create(main)))
        except UserError as exc:
            _exit(2, f"{exc} (the sweep was not started)")
        overrides = list(config.hydra.overrides.task)
        sweep_dir = Path(config.hydra.sweep.dir)
        _trackers().sweep_started(sweep_dir, plain.get("logger"), plain, overrides)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from dlrun import leaderboard

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        _refuse_if_all_jobs_were_refused(sweep_dir)
        try:
            jobs, csv_path, md_path = leaderboard.write(sweep_dir)
            leaderboard.print_tables(sweep_dir, jobs)
        except Exception as exc:  # Hydra would demote it to a warning and exit 0
            _exit(1, f"could not write the leaderboard: {exc!r}")
        print(f"leaderboard: {csv_path} {md_path} {md_path.with_suffix('.html')}")
        _trackers().sweep_ended(sweep_dir, leaderboard.tracker_summary(jobs))
        _bagging_ensemble(config, sweep_dir)
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            print(f"dlrun: {len(failed)} of {len(jobs)} jobs failed", file=sys.stderr)
            sys.exit(1)


def _refuse_if_all_jobs_were_refused(sweep_dir: Path) -> None:
    """An error common to every job (a model that can't take the data, a missing
    dataset) refuses the sweep as it refuses a single run: one line, nothing left."""
    if not created_here(sweep_dir):
        return  # a resumed sweep keeps what it had
    job_dirs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    statuses = [read_status(p) or {} for p in job_dirs]
    reasons = {s.get("reason") for s in statuses}
    if not statuses or not all(s.get("refused") for s in statuses) or len(reasons) != 1:
        return
    discard(sweep_dir)
    _exit(2, f"{reasons.pop()} (every job was refused; the sweep left nothing)")


class Trackers(Callback):
    """Around every run or sweep job, for the trackers (``logger=...``): the tracking
    worker starts with the job; after it the trackers get the run's final metrics, tags
    and files, and its end state (:func:`dlrun.tracking.job_ended`)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        _trackers().job_started(_logger_node(config))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        _trackers().job_ended(Path(config.hydra.runtime.output_dir), _logger_node(config))


def _logger_node(config: DictConfig) -> Any:
    """The job's ``logger`` config as plain data (None when the config has none)."""
    if "logger" not in config:
        return None
    return OmegaConf.to_container(config.logger, resolve=True)


def _trackers() -> Any:
    from dlrun import tracking

    return tracking
