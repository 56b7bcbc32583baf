"""``dlrun-eval``: evaluate a saved run again, without training.

    dlrun-eval run=outputs/runs/<run> [ckpt=best|last|path.pt] [split=test|val]
               [out=<dir>] [threshold=0.5] [device=auto]

Writes the same files as a training run (metrics.json, predictions.csv, plots,
report.md) into ``<run>/eval/`` (or ``out=``), never over the run's own results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlrun.cli_args import parse_key_values
from dlrun.errors import UserError

USAGE = (__doc__ or "").strip()
DEFAULTS = {
    "run": "",
    "ckpt": "best",
    "split": "test",
    "out": "",
    "threshold": 0.5,
    "device": "auto",
    "batch_size": 256,
}


def evaluate_saved(args: dict) -> Path:
    """Evaluate per ``args``; returns the output directory."""
    import csv

    from rich.console import Console

    from dlrun.evaluation import evaluate_run, headline_table
    from dlrun.saved_run import load_run

    run_dir = Path(args["run"])
    if args["split"] not in ("test", "val"):
        raise UserError(f"split={args['split']} is invalid: use test or val")
    _, exp = load_run(run_dir, args["ckpt"], args["device"])
    out = Path(args["out"]) if args["out"] else run_dir / "eval"
    if out.resolve() == run_dir.resolve():
        raise UserError("out= must not be the run dir itself (its results would be overwritten)")
    history_path = run_dir / "history.csv"
    history = None
    if history_path.is_file():
        with history_path.open() as fh:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    metrics = evaluate_run(
        exp.model,
        exp.bundle,
        out,
        splits=(args["split"],),
        batch_size=args["batch_size"],
        device=exp.device,
        threshold=args["threshold"],
        history=history,
        run_summary=f"re-evaluation of {run_dir} ({args['ckpt']} checkpoint)",
    )
    Console().print(headline_table(metrics))
    return out


def main() -> None:
    args = parse_key_values(sys.argv[1:], DEFAULTS, USAGE, required=("run",))
    try:
        out = evaluate_saved(args)
    except UserError as exc:
        print(f"dlrun-eval: error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"evaluation written to {out}")


if __name__ == "__main__":
    main()
