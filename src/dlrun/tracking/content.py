"""What a tracker is told about a run, read from the run's own files.

The run dir is the source of truth: the numbers a tracker shows are those of
``metrics.json``, the files it keeps are the run's files, the state is ``status.json``'s.
Every tracker (MLflow, TensorBoard, W&B) gets the same names from here:

* params: the composed config flattened to dotted keys (``optimizer.lr``), plus
  ``overrides`` (the command line's overrides, one string);
* per-epoch metrics: history.csv's columns, step = epoch (``seconds`` as
  ``epoch_seconds``);
* final metrics: ``test_<m>`` (the best checkpoint on the test split), ``baseline_<m>``
  (the baseline on the same split), ``eval_<split>_<m>`` for other evaluated splits,
  ``vs_baseline_difference`` / ``_ci_low`` / ``_ci_high``, ``best_<monitor>``,
  ``best_epoch``, ``epochs_trained``, ``train_seconds``, ``parameters``; a k-fold run
  adds ``cv_<m>`` and ``cv_<m>_std`` (mean and std over the held-out folds);
* tags: ``model``, ``data``, ``task``, ``sweep_id``, ``git_commit`` (when the working
  directory is in a git repository), ``verdict``, ``status``.

Torch-free: the tracking worker process imports this and the trackers only.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlrun.rundir import read_json_dict

# Config keys that are dlrun's bookkeeping, not hyperparameters.
_PRIVATE = ("summary", "model_name", "trial", "resume")
# Files at the top of a run dir that are kept as artifacts (in this order).
_RUN_FILES = (
    "report.html", "report.md", "metrics.json", "status.json", "history.csv",
    "predictions.csv", "train.log", "trial.json", "tracking.json",
)  # fmt: skip
_SWEEP_FILES = (
    "leaderboard.html", "leaderboard.md", "leaderboard.csv", "multirun.yaml",
    "optuna_study.json",
)  # fmt: skip
MAX_PARAM_LENGTH = 500  # MLflow takes 6,000 characters; nobody reads a longer param


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, leaf value)`` of a nested config; lists are leaves."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def params(config: dict[str, Any], overrides: list[str]) -> dict[str, str]:
    """The flattened composed config as strings, plus the overrides in one string."""
    out = {}
    for key, value in flatten({k: v for k, v in config.items() if k not in _PRIVATE}):
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[key] = text[:MAX_PARAM_LENGTH]
    out["overrides"] = " ".join(overrides)[:MAX_PARAM_LENGTH] or "(none)"
    return out


def read_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides (a fold reads its k-fold run's)."""
    for folder in (run_dir, run_dir.parent):
        path = folder / ".hydra" / "overrides.yaml"
        if path.is_file():
            import yaml

            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                return []
            return [str(o) for o in loaded] if isinstance(loaded, list) else []
    return []


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """One history row as metrics (``epoch`` is the step, not a metric)."""
    names = {"seconds": "epoch_seconds"}
    return {names.get(k, k): float(v) for k, v in row.items() if k != "epoch" and _number(v)}


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a finished run's metrics.json, named as the module docstring says."""
    out: dict[str, float] = {}
    splits = metrics.get("splits") or ["test"]
    for split in splits:
        prefix = "test_" if split == "test" else f"eval_{split}_"
        out.update(_numbers(metrics.get(split), prefix))
    out.update(_numbers(metrics.get("baseline"), "baseline_"))
    for key, summary in (metrics.get("cv") or {}).items():  # k-fold: over held-out folds
        if isinstance(summary, dict):
            out.update(
                _numbers({key: summary.get("mean"), f"{key}_std": summary.get("std")}, "cv_")
            )
    out.update(_numbers(metrics.get("test_std"), "test_", suffix="_std"))
    comparison = metrics.get("comparison") or {}
    ci = comparison.get("ci") or [None, None]
    out.update(
        _numbers(
            {"difference": comparison.get("difference"), "ci_low": ci[0], "ci_high": ci[1]},
            "vs_baseline_",
        )
    )
    train = metrics.get("train") or {}
    monitor = train.get("monitor") or "monitor"
    named = {
        f"best_{monitor}": train.get("best_value"),
        "best_epoch": train.get("best_epoch"),
        "epochs_trained": train.get("epochs"),
        "train_seconds": train.get("seconds"),
        "parameters": train.get("parameters"),
    }
    out.update(_numbers(named, ""))
    return out


def final_tags(metrics: dict[str, Any], status: str) -> dict[str, str]:
    """Tags known once the run is over: its state and its verdict against the baseline."""
    tags = {"status": status}
    comparison = metrics.get("comparison") or {}
    if comparison.get("verdict"):
        tags["verdict"] = str(comparison["verdict"])
    if metrics.get("baseline_kind"):
        tags["baseline_kind"] = str(metrics["baseline_kind"])
    return tags


def run_files(run_dir: Path, kind: str, checkpoints: bool = False) -> list[tuple[Path, str]]:
    """``(file, folder in the tracker)`` of what a run keeps as artifacts.

    Pictures and the top files of a run (or a sweep's leaderboard); ``.hydra/`` as
    ``hydra/``; ``checkpoints/`` only when asked for (they can be large). A k-fold run
    keeps its own files; each fold's are its child run's.
    """
    names = _SWEEP_FILES if kind == "sweep" else _RUN_FILES
    files = [(run_dir / n, "") for n in names if (run_dir / n).is_file()]
    files += [(p, "") for p in sorted(run_dir.glob("*.png"))]
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.is_dir():
        files += [(p, "hydra") for p in sorted(hydra_dir.glob("*.yaml"))]
    if checkpoints and kind != "sweep":
        files += [(p, "checkpoints") for p in sorted((run_dir / "checkpoints").glob("*.pt"))]
    return files


def run_status(run_dir: Path, kind: str) -> str:
    """completed, failed, interrupted, pruned or running, from the run's files.

    A fold has no status.json: it completed when its metrics.json holds the training
    summary, else it shares its k-fold run's state. A sweep completed unless a job failed.
    """
    if kind == "sweep":
        if not run_dir.is_dir():  # every job was refused: the sweep removed its dir
            return "failed"
        jobs = [read_json_dict(p) for p in run_dir.glob("*/status.json")]
        return "failed" if any(j.get("status") == "failed" for j in jobs) else "completed"
    if kind == "fold" and "train" in read_json_dict(run_dir / "metrics.json"):
        return "completed"
    from dlrun.rundir import run_status as read_run_status  # "running", process gone: interrupted

    folder = run_dir.parent if kind == "fold" else run_dir
    return str((read_run_status(folder) or {}).get("status") or "running")


def git_commit(cwd: Path) -> str | None:
    """The commit checked out where dlrun runs (``+dirty`` with uncommitted changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _numbers(section: Any, prefix: str, suffix: str = "") -> dict[str, float]:
    if not isinstance(section, dict):
        return {}
    return {f"{prefix}{k}{suffix}": float(v) for k, v in section.items() if _number(v)}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
