"""k-fold and iterated k-fold cross-validation: k models, mean ± std of every metric.

The seeds' way to validate when data is scarce. The training and validation splits are
pooled and cut into k folds (stratified for single-label classification); each fold in
turn is the validation split of a model trained on the others, and every fold model is
also scored on the untouched test split. ``metrics.json`` then holds ``cv`` (the
held-out fold metrics, mean and std), ``test`` (the mean over fold models) with
``test_std``, and every fold's numbers; each fold's own files sit in ``fold_<i>/``.

Feature scaling stays as the loader fit it on the original training split (70% of the
data), so the folds' validation parts were partly seen by the scaler: a small, stated
optimism that keeps every loader simple.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from dlrun.data.spec import DataBundle, Split, Task
from dlrun.errors import UserError
from dlrun.runner import instantiate, train_and_evaluate


def fold_indices(
    targets: torch.Tensor, task: Task, folds: int, repeats: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs for every fold of every repeat."""
    from sklearn.model_selection import (
        KFold,
        RepeatedKFold,
        RepeatedStratifiedKFold,
        StratifiedKFold,
    )

    stratify = task in (Task.MULTICLASS, Task.BINARY)
    y = targets.cpu().numpy()
    n = len(y)
    if stratify:
        smallest = int(np.bincount(y.astype(np.int64)).min(initial=n))
        if smallest < folds:
            raise UserError(
                f"eval.folds={folds} is more than the {smallest} samples of the rarest class"
            )
        splitter = (
            StratifiedKFold(folds, shuffle=True, random_state=seed)
            if repeats == 1
            else RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        )
    else:
        splitter = (
            KFold(folds, shuffle=True, random_state=seed)
            if repeats == 1
            else RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        )
    return list(splitter.split(np.zeros(n), y if stratify else None))


def cross_validate(
    cfg: dict[str, Any], run_dir: Path, console: Console | None = None
) -> dict[str, Any]:
    """Train and evaluate one model per fold; return the aggregated metrics."""
    console = console or Console()
    evaluation = cfg["eval"]
    repeats = evaluation["repeats"] if evaluation["protocol"] == "iterated_kfold" else 1
    base: DataBundle = instantiate(cfg["data"], seed=cfg["seed"])
    task = base.spec.task
    if task in (Task.FORECAST, Task.LANGUAGE_MODEL):
        raise UserError(
            f"eval.protocol={evaluation['protocol']} would shuffle time: {base.spec.name} "
            "is a series, which always uses its temporal holdout split"
        )
    pool = _concat(base.train, base.val)
    pairs = fold_indices(pool.y, task, evaluation["folds"], repeats, cfg["seed"])
    per_fold = []
    for number, (train_idx, val_idx) in enumerate(pairs):
        console.print(f"fold {number + 1}/{len(pairs)}", highlight=False)
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg["eval"]["splits"] = ["val", "test"]
        bundle = DataBundle(
            base.spec,
            pool.subset(torch.from_numpy(train_idx)),
            pool.subset(torch.from_numpy(val_idx)),
            base.test,
            base.meta,
        )
        fold_dir = run_dir / f"fold_{number}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        metrics = train_and_evaluate(fold_cfg, fold_dir, console, bundle=bundle)
        per_fold.append(metrics)
    result = _aggregate(per_fold, evaluation["protocol"], run_dir)
    _print_summary(console, result)
    return result


def _print_summary(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{result['protocol']}: mean ± std over {result['folds']} folds")
    for column in ("metric", "cv (held-out folds)", "test"):
        table.add_column(column, justify="right")
    for key, cv in result["cv"].items():
        test, spread = result["test"].get(key), result["test_std"].get(key)
        test_cell = "" if test is None else f"{test:.4f} ± {spread:.4f}"
        table.add_row(key, f"{cv['mean']:.4f} ± {cv['std']:.4f}", test_cell)
    console.print(table)


def _aggregate(per_fold: list[dict[str, Any]], protocol: str, run_dir: Path) -> dict[str, Any]:
    first = per_fold[0]

    def summary(split: str) -> dict[str, dict[str, float]]:
        keys = [k for k, v in first[split].items() if _number(v)]
        out = {}
        for key in keys:
            values = [m[split][key] for m in per_fold if _number(m[split].get(key))]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                out[key] = {"mean": statistics.mean(values), "std": spread}
        return out

    cv, test = summary("val"), summary("test")
    best = [m["train"]["best_value"] for m in per_fold if _number(m["train"]["best_value"])]
    result = {
        "task": first["task"],
        "protocol": protocol,
        "folds": len(per_fold),
        "class_names": first.get("class_names"),
        "n_test": first.get("n_test"),
        "cv": cv,
        "test": {k: v["mean"] for k, v in test.items()},
        "test_std": {k: v["std"] for k, v in test.items()},
        "baseline": first.get("baseline", {}),
        "per_fold": [
            {"fold": i, "val": _numbers(m["val"]), "test": _numbers(m["test"])}
            for i, m in enumerate(per_fold)
        ],
        "train": {
            "monitor": first["train"]["monitor"],
            "best_value": statistics.mean(best) if best else None,
            "best_epoch": None,
            "epochs": max(m["train"]["epochs"] for m in per_fold),
            "seconds": sum(m["train"]["seconds"] for m in per_fold),
            "parameters": first["train"]["parameters"],
            "stop_reason": "",
        },
    }
    _write_report(run_dir, result)
    return result


def _write_report(run_dir: Path, result: dict[str, Any]) -> None:
    lines = [
        f"# {result['protocol']}: {result['folds']} fold models ({result['task']})",
        "",
        "Held-out fold metrics (cv) and the fold models on the untouched test split,",
        "as mean ± std over folds. Each fold's full report is in `fold_<i>/report.md`.",
        "",
        "| metric | cv (held-out folds) | test |",
        "| --- | --- | --- |",
    ]
    for key in result["cv"]:
        cv = result["cv"][key]
        test = result["test"].get(key)
        spread = result["test_std"].get(key)
        test_cell = "" if test is None else f"{test:.4f} ± {spread:.4f}"
        lines.append(f"| {key} | {cv['mean']:.4f} ± {cv['std']:.4f} | {test_cell} |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def _concat(a: Split, b: Split) -> Split:
    lengths = None
    if a.lengths is not None and b.lengths is not None:
        lengths = torch.cat([a.lengths, b.lengths])
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), lengths)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items() if _number(v)}
