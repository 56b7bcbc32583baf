"""``dlrun-ensemble``: combine trained runs into one model, evaluated like a run.

    dlrun-ensemble runs=[<run dir>,<run dir>,...] [method=average|vote] [out=<new dir>]
    dlrun-ensemble sweep=<multirun dir> [top_k=5] [method=average|vote] [out=<new dir>]

runs= takes the runs as they are (a k-fold run stands for its fold models); sweep=
takes the top_k completed jobs of a sweep, ranked by their best validation value (the
leaderboard's order), never by test scores.
Members must share their data settings and seed (one test split): a member trained on
another split may have trained on the others' test examples.

The ensemble dir (out=, or <sweep>/ensemble_top<k>/ , or outputs/ensembles/<time>/)
holds copies of the members (config, checkpoints, input contract) and the files of an
evaluation on their shared test split: metrics.json (with an `ensemble` block: every
member's and the members' mean test metrics), report.md (a members table at the end),
predictions.csv and the plots. dlrun-predict, dlrun-export and dlrun-serve take it like a
run dir. method=average averages probabilities (regression: values); method=vote counts
each member's predicted class (regression: the median).

Bagging trains its own members: dlrun ensemble.bagging=5 (one after another), or in
parallel with a launcher: dlrun -m ensemble.bagging=5 'ensemble.member=range(5)'
hydra/launcher=joblib (the sweep ends with <sweep>/ensemble/).
Exit codes: 0 done, 2 bad arguments or members that don't fit together, 130 interrupted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from dlrun.cli_args import errors_reported, parse_key_values
from dlrun.errors import UserError

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {
    "runs": "",
    "sweep": "",
    "top_k": 5,
    "method": "average",
    "out": "",
}


def run_list(text: str) -> list[Path]:
    """``[a,b]`` or ``a,b`` as paths."""
    inner = text.strip().removeprefix("[").removesuffix("]")
    return [Path(p.strip().strip("'\"")) for p in inner.split(",") if p.strip()]


def chosen_runs(args: dict[str, Any]) -> tuple[list[Path], Path]:
    """The member run dirs, and the folder an unnamed ensemble dir goes under."""
    if bool(args["runs"]) == bool(args["sweep"]):
        raise UserError("give runs=[<run>,...] or sweep=<multirun dir> (one of them)")
    if args["runs"]:
        runs = run_list(args["runs"])
        missing = [str(r) for r in runs if not r.is_dir()]
        if missing:
            raise UserError(f"run dir not found: {', '.join(missing)}")
        return runs, Path("outputs") / "ensembles"
    from dlrun import leaderboard

    sweep = Path(args["sweep"])
    if args["top_k"] < 2:
        raise UserError("top_k must be at least 2")
    try:
        jobs = leaderboard.rank(leaderboard.collect(sweep))
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    done = [j for j in jobs if j.status == "completed" and j.best_value is not None]
    if len(done) < 2:
        raise UserError(f"{sweep} has {len(done)} completed job(s); an ensemble needs two")
    return [sweep / j.name for j in done[: args["top_k"]]], sweep


def build(args: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Assemble and evaluate per ``args``; returns the ensemble dir and its metrics."""
    runs, parent = chosen_runs(args)  # before torch: a mistyped path is refused at once
    from dlrun import ensembling
    from dlrun.display import make_console
    from dlrun.nn.ensemble import METHODS
    from dlrun.rundir import new_output_dir

    if args["method"] not in METHODS:
        raise UserError(f"method={args['method']} is invalid: use {', '.join(METHODS)}")
    if args["sweep"]:
        label = f"ensemble_top{len(runs)}"
    else:
        label = time.strftime("%Y-%m-%d_%H-%M-%S") + f"_{args['method']}"
    with new_output_dir(args["out"], parent, label) as out:
        ensembling.assemble(runs, out, args["method"])
        metrics = ensembling.evaluate(out, make_console())
    return out, metrics


def main() -> None:
    args = parse_key_values(sys.argv[1:], DEFAULTS, USAGE, prog="dlrun-ensemble")
    with errors_reported("dlrun-ensemble"):
        out, metrics = build(args)
    _print_members(metrics["ensemble"])
    print(f"ensemble written to {out}")


def _print_members(table: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from dlrun.display import number

    keys = list(table["ensemble"])
    view = Table(title=f"ensemble ({table['method']}) vs its members, test split")
    for column in ("model", *keys):
        view.add_column(column, justify="right")
    view.add_row("ensemble", *(number(table["ensemble"][k]) for k in keys))
    for name, row in table["members"].items():
        view.add_row(name, *(number(row.get(k)) for k in keys))
    view.add_row("member mean", *(number(table["member_mean"].get(k)) for k in keys))
    view.add_row("baseline", *(number(table["baseline"].get(k)) for k in keys))
    Console().print(view)


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
