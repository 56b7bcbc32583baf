"""A sweep run again into its own sweep dir picks up where it stopped.

Hydra makes a job's directory and writes its ``.hydra/`` before any callback or the task
function hears of the job (``hydra.core.utils.run_job``); the only dlrun code that runs
earlier is the resolver of ``hydra.sweep.subdir``. So the decision for each job is taken
there, from what its directory already holds, before Hydra writes into it:

* nothing there: a new job;
* the same overrides, ``completed`` (or ``pruned``): **skip**. Hydra is pointed at a
  scratch directory instead, so the finished job's files stay byte for byte as they were;
  the task function reports the saved metrics and the leaderboard lists the job as before;
* the same overrides, ``interrupted`` (also a ``running`` job whose process is gone) with
  ``checkpoints/last.pt``: **resume** exactly from it, as ``dlrun resume=`` would;
* the same overrides, ``failed`` (or interrupted before its first epoch): **retry** from
  scratch, after moving the old files into ``attempts/<n>/``;
* other overrides, files that are not a dlrun job, or a job still running: **refused**,
  never mixed. ``hydra_callbacks.RunDirGuard`` checks all of this for the whole sweep
  before it starts; the resolver refusing is the backstop for sweepers whose job list
  cannot be known in advance.

Torch-free; job overrides are compared as sorted lists of ``key=value`` strings.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.rundir import read_status, run_is_alive, run_status

SKIP, RESUME, RETRY, NEW = "skip", "resume", "retry", "new"


@dataclass(frozen=True)
class JobPlan:
    """What this sweep does with one job dir."""

    kind: str  # new | skip | resume | retry
    job_dir: Path
    output_dir: Path  # where Hydra writes: the job dir, or a scratch dir for a skip
    earlier: str = ""  # how the earlier attempt ended, for the user
    kept_in: Path | None = None  # where a retried job's earlier files went


_plans: dict[Path, JobPlan] = {}  # by job dir and by output dir


class JobDirRefused(Exception):
    """An existing job dir that this sweep must not write into."""


def judge(job_dir: Path, overrides: list[str]) -> JobPlan:
    """The plan for ``job_dir`` given the new job's overrides; no side effects."""
    if not job_dir.is_dir() or not any(job_dir.iterdir()):
        return JobPlan(NEW, job_dir, job_dir)
    saved = saved_overrides(job_dir)
    if saved is None:
        raise JobDirRefused(f"{job_dir} exists and is not a dlrun job; nothing was written")
    if sorted(saved) != sorted(overrides):
        old, new = sorted(set(saved) - set(overrides)), sorted(set(overrides) - set(saved))
        raise JobDirRefused(
            f"{job_dir} holds a job with other overrides (only there: {' '.join(old) or '-'}; "
            f"only in this sweep: {' '.join(new) or '-'}); run the same sweep again to resume "
            "it, or choose a new hydra.sweep.dir"
        )
    if run_is_alive(job_dir):
        status = read_status(job_dir) or {}
        raise JobDirRefused(
            f"{job_dir} is still running (pid {status.get('pid')} on {status.get('hostname')})"
        )
    status = run_status(job_dir) or {}
    state = str(status.get("status", "not started"))
    if state in ("completed", "pruned"):
        return JobPlan(SKIP, job_dir, job_dir, state)
    if state == "interrupted" and (job_dir / "checkpoints" / "last.pt").is_file():
        return JobPlan(RESUME, job_dir, job_dir, state)
    return JobPlan(RETRY, job_dir, job_dir, state)


def saved_overrides(job_dir: Path) -> list[str] | None:
    saved = _load_yaml(job_dir / ".hydra" / "overrides.yaml")
    return [str(o) for o in saved] if isinstance(saved, list) else None


def saved_job_number(job_dir: Path) -> int | None:
    saved = _load_yaml(job_dir / ".hydra" / "hydra.yaml")
    try:
        return int(saved["hydra"]["job"]["num"])
    except (TypeError, KeyError, ValueError):
        return None


def _load_yaml(path: Path) -> Any:
    import yaml  # PyYAML comes with omegaconf

    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def job_subdir(subdir: str) -> str:
    """The ``dlrun_job_dir`` resolver of ``hydra.sweep.subdir`` (see the module doc).

    Returns ``subdir`` itself, or for a skipped job the absolute path of a scratch
    directory (``os.path.join`` then ignores the sweep dir). Memoised: Hydra may resolve
    the key more than once per job.
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job_dir = Path(os.path.abspath(Path(hydra_cfg.sweep.dir) / subdir))
    if job_dir not in _plans:
        try:
            plan = judge(job_dir, [str(o) for o in hydra_cfg.overrides.task])
        except JobDirRefused as exc:  # Hydra would print a traceback for an exception
            print(f"dlrun: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        plan = _prepare(plan)
        _plans[job_dir] = _plans[plan.output_dir] = plan
    plan = _plans[job_dir]
    return str(plan.output_dir) if plan.kind == SKIP else subdir


def _prepare(plan: JobPlan) -> JobPlan:
    """Make room before Hydra writes: old files of a retried job go to ``attempts/<n>/``."""
    if plan.kind == SKIP:
        scratch = Path(tempfile.mkdtemp(prefix="dlrun-skipped-job-"))
        return JobPlan(SKIP, plan.job_dir, scratch, plan.earlier)
    if plan.kind == RETRY:
        attempts = plan.job_dir / "attempts"
        number = 1 + sum(1 for _ in attempts.iterdir()) if attempts.is_dir() else 1
        target = attempts / str(number)
        target.mkdir(parents=True)
        for entry in plan.job_dir.iterdir():
            if entry.name != "attempts":
                entry.rename(target / entry.name)
        return JobPlan(RETRY, plan.job_dir, plan.output_dir, plan.earlier, target)
    return plan


def plan_for(output_dir: Path) -> JobPlan:
    """The plan of the job Hydra runs in ``output_dir`` (a new job when none was made,
    e.g. under a sweeper config that does not use the ``dlrun_job_dir`` resolver)."""
    output_dir = Path(os.path.abspath(output_dir))
    return _plans.get(output_dir) or JobPlan(NEW, output_dir, output_dir)


def drop_scratch(plan: JobPlan) -> None:
    """Remove the scratch dir Hydra wrote a skipped job's config into."""
    if plan.kind == SKIP and plan.output_dir != plan.job_dir:
        shutil.rmtree(plan.output_dir, ignore_errors=True)


def survey(sweep_dir: Path, jobs: list[list[str]] | None) -> str:
    """Check an existing sweep dir before a sweep starts; returns the summary to print.

    Raises :class:`JobDirRefused` for a folder that holds something other than a dlrun
    sweep, a job that is still running, or (when the sweep's ``jobs`` are known, in
    launch order) a job dir whose saved overrides differ from the job that would run in
    it. Returns "" when there is nothing to resume.
    """
    if not sweep_dir.is_dir():
        return ""
    entries = sorted(sweep_dir.iterdir())
    job_dirs = [p for p in entries if (p / ".hydra" / "overrides.yaml").is_file()]
    if entries and not job_dirs and not (sweep_dir / "multirun.yaml").is_file():
        names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise JobDirRefused(
            f"hydra.sweep.dir={sweep_dir} holds files that are not a dlrun sweep ({names}); "
            "choose a new or empty folder"
        )
    counts: dict[str, int] = {}
    for job_dir in job_dirs:
        number = saved_job_number(job_dir)
        planned = jobs is not None and number is not None and number < len(jobs)
        overrides = jobs[number] if planned else saved_overrides(job_dir)  # type: ignore[index]
        kind = judge(job_dir, overrides or []).kind
        if planned:
            counts[kind] = counts.get(kind, 0) + 1
    if jobs is None or not counts:
        return ""  # another sweeper (Optuna) decides itself what is left to run
    counts[NEW] = len(jobs) - sum(counts.values())
    return _summary(sweep_dir, counts)


def _summary(sweep_dir: Path, counts: dict[str, int]) -> str:
    """``sweep resumed in <dir>: 4 completed jobs skipped, 1 re-run (...)``."""
    skipped = counts.get(SKIP, 0)
    parts = [
        f"{skipped} completed job{'' if skipped == 1 else 's'} skipped" if skipped else "",
        f"{counts[RESUME]} resumed from its last.pt" if counts.get(RESUME) else "",
        f"{counts[RETRY]} re-run (earlier files kept in attempts/)" if counts.get(RETRY) else "",
        f"{counts[NEW]} new" if counts.get(NEW) else "",
    ]
    return f"sweep resumed in {sweep_dir}: " + ", ".join(p for p in parts if p)
