"""What a finished job means for its trial (COMPLETE, PRUNED or FAIL), and trial.json.

A job's verdict can arrive three ways, depending on the launcher and on how the CLI maps
errors in multirun: a number, NaN with ``status.json`` saying why, or an exception. The
pruning callback also leaves a mark on the trial itself, which is the most reliable
sign of pruning because it does not depend on any of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from dlrun.rundir import read_json_dict, read_status, write_json
from dlrun.sweep.protocol import PRUNED_AT_ATTR, TrialPrunedByOptuna


@dataclass(frozen=True)
class Outcome:
    state: str  # COMPLETE | PRUNED | FAIL (names of optuna.trial.TrialState)
    value: float | None = None
    reason: str = ""


def job_dir(ret: JobReturn) -> Path | None:
    """The job's output dir (``working_dir`` is the launch cwd when chdir is off)."""
    if ret.hydra_cfg is not None:
        out = ret.hydra_cfg.hydra.runtime.get("output_dir")
        if out:
            return Path(out)
    return Path(ret.working_dir) if ret.working_dir else None


def judge(ret: JobReturn, trial_attrs: dict[str, Any]) -> Outcome:
    """Classify one job's result for ``study.tell``."""
    run_dir = job_dir(ret)
    status = (read_status(run_dir) if run_dir and run_dir.is_dir() else None) or {}
    pruned = PRUNED_AT_ATTR in trial_attrs or status.get("status") == "pruned"
    if ret.status == JobStatus.FAILED:
        exc = ret._return_value  # the exception; .return_value would re-raise it
        if pruned or isinstance(exc, TrialPrunedByOptuna):
            return Outcome("PRUNED", reason=str(exc))
        return Outcome("FAIL", reason=f"{type(exc).__name__}: {exc}")
    if pruned:
        return Outcome("PRUNED", reason=status.get("reason", ""))
    value = ret._return_value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return Outcome("COMPLETE", float(value))
    reason = status.get("reason") or f"the job returned {value!r}, not a finite number"
    return Outcome("FAIL", reason=reason)


def monitored_metric(run_dir: Path | None) -> str | None:
    """The metric the job optimised, as it recorded in ``metrics.json`` (if it got there)."""
    if run_dir is None:
        return None
    return read_json_dict(run_dir / "metrics.json").get("train", {}).get("monitor")


def write_trial_record(
    run_dir: Path,
    number: int,
    params: dict[str, Any],
    state: str,
    value: float | None,
    **extra: Any,
) -> None:
    """``trial.json`` in the job's dir, which the sweep leaderboard reads."""
    finite = value if value is not None and math.isfinite(value) else None
    write_json(
        run_dir / "trial.json",
        {"number": number, "params": params, "state": state, "value": finite, **extra},
    )
