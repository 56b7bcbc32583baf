"""``dlrun-eval``: evaluate saved runs again, without training.

    dlrun-eval run=<run dir | k-fold run dir | sweep dir> [ckpt=best|last|path.pt]
               [split=test|val] [out=<new dir>] [threshold=<the run's>] [device=auto]
               [batch_size=256]

Every evaluation gets a folder of its own, so an earlier one is never overwritten:
<run>/eval/<split>_<ckpt>/ (then _2, _3, ... when that exists), or out= (a folder that
does not exist yet, or is empty). It holds the files a training run writes
(metrics.json, predictions.csv, plots, report.md).

A k-fold run evaluates every fold model into fold_<i>/ (the names the run gave them on
disk) and writes the mean and std over folds to metrics.json beside them. A sweep dir
evaluates every job that has checkpoints, each in its own run dir (or out=/<job>/).

Saved configs are untrusted input: only dlrun's own targets are built from them.
Exit codes: 0 done, 1 an evaluation failed, 2 bad arguments or a refused run dir.
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.cli_args import SAVED_RUN_DEFAULTS, SAVED_RUN_KINDS, errors_reported, parse_key_values
from dlrun.errors import UserError

if TYPE_CHECKING:
    from dlrun.config import RunConfig

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {**SAVED_RUN_DEFAULTS, "split": "test"}
KINDS = SAVED_RUN_KINDS


class EvaluationFailed(UserError):
    """Some evaluations of a sweep failed (exit code 1, not a usage error)."""

    exit_code = 1


def evaluate_saved(args: dict[str, Any]) -> Path:
    """Evaluate per ``args``; returns the folder that holds the results."""
    from dlrun.restore import checkpoint_path

    run_dir = Path(args["run"])
    if args["split"] not in ("test", "val"):
        raise UserError(f"split={args['split']} is invalid: use test or val")
    checkpoint_path(run_dir, args["ckpt"])  # a bad ckpt= value is refused first
    if (run_dir / "multirun.yaml").is_file() and not (run_dir / ".hydra").is_dir():
        return _evaluate_sweep(run_dir, args)
    return _evaluate_dir(run_dir, args, args["out"], verbose=True)


def _evaluate_dir(run_dir: Path, args: dict[str, Any], out_arg: str, verbose: bool) -> Path:
    """One run dir: a single model, or every fold model of a k-fold run."""
    from rich.console import Console

    from dlrun.evaluation.report import headline_table
    from dlrun.restore import checkpoint_path, load_model, read_run_config

    cfg = read_run_config(run_dir)  # refuses targets that aren't dlrun's
    if cfg.eval.protocol != "holdout":
        return _evaluate_folds(run_dir, cfg, args, out_arg)
    exp = load_model(cfg, checkpoint_path(run_dir, args["ckpt"]), args["device"])
    out = _claim_out(run_dir, args, out_arg)
    metrics = _evaluate(exp, cfg, run_dir, out, args)
    Console().print(headline_table(metrics) if verbose else _headline(metrics), highlight=False)
    return out


def _evaluate_folds(run_dir: Path, cfg: RunConfig, args: dict[str, Any], out_arg: str) -> Path:
    """Every fold model on the test split, then the mean and std over folds."""
    from rich.console import Console

    from dlrun.evaluation.files import write_json
    from dlrun.restore import checkpoint_path, load_model

    split = args["split"]
    if split == "val":
        raise UserError(
            "split=val on a k-fold run: each fold model's validation split is its own "
            "held-out fold, scored when it trained (metrics.json, cv); use split=test"
        )
    if args["ckpt"].endswith(".pt"):
        raise UserError("ckpt=<file> names one checkpoint; a k-fold run has one per fold")
    folds = fold_dirs(run_dir)
    if not folds:
        raise UserError(f"{run_dir} is a {cfg.eval.protocol} run without fold_<i>/ dirs")
    console, out, bundle = Console(), None, None
    per_fold: dict[str, dict[str, Any]] = {}
    for fold in folds:
        exp = load_model(cfg, checkpoint_path(fold, args["ckpt"]), args["device"], bundle)
        bundle = exp.bundle  # the test split is the same for every fold: load it once
        out = out or _claim_out(run_dir, args, out_arg)
        metrics = _evaluate(exp, cfg, fold, out / fold.name, args)
        per_fold[fold.name] = metrics[split]
        console.print(f"{fold.name}: {_headline(metrics)}", highlight=False)
    assert out is not None
    summary = _mean_std(per_fold)
    write_json(
        out / "metrics.json",
        {"protocol": cfg.eval.protocol, "split": split, "ckpt": args["ckpt"],
         "folds": list(per_fold), split: summary, "per_fold": per_fold},
    )  # fmt: skip
    console.print(_summary_table(summary, split, len(per_fold)))
    return out


def fold_dirs(run_dir: Path) -> list[Path]:
    """The ``fold_<i>`` dirs of a k-fold run, in their numeric order."""
    folds = [p for p in run_dir.glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(folds, key=lambda p: int(p.name[5:]))


def _evaluate_sweep(sweep_dir: Path, args: dict[str, Any]) -> Path:
    """Every job of a sweep that has something to evaluate; failures don't stop the rest."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "config.yaml").is_file()]
    jobs.sort(key=_job_order)
    if not jobs:
        raise UserError(f"{sweep_dir} is a sweep dir without job dirs")
    root = _claim_out(sweep_dir, args, args["out"]) if args["out"] else None
    failed = []
    for job in jobs:
        if not (job / "checkpoints").is_dir() and not fold_dirs(job):
            print(f"{job.name}: skipped (no checkpoints: the job did not train)")
            continue
        print(f"{job.name}: ", end="", flush=True)
        try:
            _evaluate_dir(job, args, str(root / job.name) if root else "", verbose=False)
        except UserError as exc:
            print(f"dlrun-eval: error: {job.name}: {exc}", file=sys.stderr)
            failed.append(job.name)
    if failed:
        raise EvaluationFailed(f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(failed)}")
    return root or sweep_dir


def _job_order(job: Path) -> tuple[int, str]:
    """Hydra's job number first (``10_mlp_iris`` after ``9_mlp_iris``), then the name."""
    number = re.match(r"\d+", job.name)
    return (int(number[0]) if number else -1, job.name)


def _claim_out(run_dir: Path, args: dict[str, Any], out_arg: str) -> Path:
    """A new, empty folder for the results: ``out=`` or ``<run>/eval/<split>_<ckpt>[_n]``."""
    from dlrun.rundir import claim_new_dir

    return claim_new_dir(out_arg, run_dir / "eval", f"{args['split']}_{Path(args['ckpt']).stem}")


def _evaluate(
    exp: Any, cfg: RunConfig, trained_in: Path, out: Path, args: dict[str, Any]
) -> dict[str, Any]:
    from dlrun.evaluation import evaluate_run

    history_path = trained_in / "history.csv"
    history = None
    if history_path.is_file():
        with history_path.open() as fh:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    threshold = args["threshold"]
    return evaluate_run(
        exp.model,
        exp.bundle,
        out,
        splits=(args["split"],),
        batch_size=args["batch_size"],
        device=exp.device,
        threshold=cfg.eval.threshold if threshold is None else threshold,
        history=history,
        run_summary=f"re-evaluation of {trained_in} ({args['ckpt']} checkpoint)",
        plots=cfg.eval.plots,  # as the run was made
    )


def _headline(metrics: dict[str, Any]) -> str:
    from dlrun.evaluation.report import fmt, headline_rows

    return "  ".join(f"{row.key} {fmt(row.model)}" for row in headline_rows(metrics)[:4])


def _mean_std(per_fold: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample std over folds of every metric that is a number in each fold."""
    out = {}
    for key in next(iter(per_fold.values())):
        values = [m.get(key) for m in per_fold.values()]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key] = {"mean": statistics.mean(values), "std": spread}
    return out


def _summary_table(summary: dict[str, dict[str, float]], split: str, n: int) -> Any:
    from rich.table import Table

    table = Table(title=f"{split}: mean ± std over {n} fold models")
    table.add_column("metric")
    table.add_column(split, justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value['mean']:.4f} ± {value['std']:.4f}")
    return table


def main() -> None:
    args = parse_key_values(
        sys.argv[1:], DEFAULTS, USAGE, required=("run",), kinds=KINDS, prog="dlrun-eval"
    )
    with errors_reported("dlrun-eval"):
        out = evaluate_saved(args)
    print(f"evaluation written to {out}")


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
