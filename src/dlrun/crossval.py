"""Cross-validation (k-fold and iterated k-fold): k models, mean ± std and intervals.

The seeds' way to validate when data is scarce. The training and validation splits are
pooled and cut into k folds (stratified for single-label classification). For each
fold in turn, a model is trained on the other folds and the fold itself is *only
scored*: the checkpoint (and early stopping) is chosen on an inner validation split
carved from the training folds, with the same share of data as the holdout protocol's
validation split. Choosing the checkpoint on the scored fold would report the best of
many epochs on that very fold, an optimistic score. Every fold model is also scored on
the untouched test split.

``metrics.json`` holds ``cv`` (the held-out folds) and ``test`` (the fold models on the
test split), each metric with mean, std and a 95% interval over folds, the comparison
with each fold's baseline summarised over folds, and every fold's numbers. Folds are
numbered from 1, on screen and on disk (``fold_1/`` ... ``fold_k/``), each with its own
full run files. A run interrupted in fold i resumes with ``dlrun resume=<run_dir>``:
finished folds are read back from their ``metrics.json``, fold i continues exactly from
its ``last.pt``.

Intervals: the held-out scores of different folds share most of their training data,
so the plain t-interval is too narrow; ``cv`` uses Nadeau and Bengio's corrected
resampled t (variance (1/J + n_held/n_train) s^2 over J folds). The ``test`` interval
is a plain t-interval over fold models: they are all scored on the same test examples,
so it shows training variation only.

Feature scaling stays as the loader fit it on the original training split (70% of the
data), so the folds' held-out parts were partly seen by the scaler: a small, stated
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

from dlrun.config import RunConfig, RunContext
from dlrun.data.spec import DataBundle, Task
from dlrun.display import interval, make_console, number
from dlrun.document import Cell, Document, Heading, Paragraph, Table, to_markdown
from dlrun.errors import UserError
from dlrun.evaluation.files import write_json
from dlrun.evaluation.significance import decide, t_interval
from dlrun.html_page import write_page
from dlrun.rundir import finished_metrics
from dlrun.runner import instantiate, train_and_evaluate
from dlrun.tasks import info

DEFAULT_INNER_SHARE = 0.15  # when the loader has no validation split to copy the share from


def fold_indices(
    targets: torch.Tensor, task: Task, folds: int, repeats: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs for every fold of every repeat."""
    from sklearn.model_selection import (
        KFold,
        RepeatedKFold,
        RepeatedStratifiedKFold,
        StratifiedKFold,
    )

    stratify = info(task).single_label
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


def inner_split(
    targets: torch.Tensor, task: Task, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices of a fold's training part, stratified when possible.

    Stratification falls back to a plain shuffle when a class has too few members to
    appear on both sides.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(targets))
    size = max(1, round(share * len(index)))
    y = targets.cpu().numpy()
    try:
        stratify = y if info(task).single_label else None
        fit, val = train_test_split(index, test_size=size, random_state=seed, stratify=stratify)
    except ValueError:
        fit, val = train_test_split(index, test_size=size, random_state=seed)
    return np.sort(fit), np.sort(val)


def cross_validate(
    cfg: RunConfig,
    run_dir: Path,
    console: Console | None = None,
    context: RunContext | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model per fold (skipping folds a resumed run finished)."""
    console = console or make_console()
    evaluation = cfg.eval
    repeats = evaluation.repeats if evaluation.protocol == "iterated_kfold" else 1
    base: DataBundle = instantiate(cfg.data, seed=cfg.seed)
    task = base.spec.task
    if info(task).temporal:
        raise UserError(
            f"eval.protocol={evaluation.protocol} would shuffle time: {base.spec.name} "
            "is a series, which always uses its temporal holdout split"
        )
    pool = base.train.concat(base.val)  # in memory or streamed alike
    share = len(base.val) / len(pool) if len(base.val) else DEFAULT_INNER_SHARE
    pairs = fold_indices(pool.y, task, evaluation.folds, repeats, cfg.seed)
    per_fold = []
    for fold, (train_idx, held_idx) in enumerate(pairs, start=1):
        fold_dir = run_dir / f"fold_{fold}"
        finished = finished_metrics(fold_dir) if cfg.resume else None
        if finished is not None:
            console.print(f"fold {fold}/{len(pairs)} ({fold_dir.name}): done", highlight=False)
            per_fold.append(finished)
            continue
        console.print(f"fold {fold}/{len(pairs)} ({fold_dir.name})", highlight=False)
        fit_idx, val_idx = inner_split(pool.y[train_idx], task, share, cfg.seed + fold)
        training = pool.subset(torch.from_numpy(train_idx))
        fit = training.subset(torch.from_numpy(fit_idx))
        train_bundle = DataBundle(
            base.spec, fit, training.subset(torch.from_numpy(val_idx)), base.test, base.meta
        )
        held_out = pool.subset(torch.from_numpy(held_idx))
        eval_bundle = DataBundle(base.spec, fit, held_out, base.test, base.meta)
        bundles = (train_bundle, eval_bundle)
        per_fold.append(_run_fold(cfg, fold_dir, console, bundles, fold, context))
    result = _aggregate(per_fold, evaluation.protocol, run_dir)
    _print_summary(console, result)
    return result


def _run_fold(
    cfg: RunConfig,
    fold_dir: Path,
    console: Console,
    bundles: tuple[DataBundle, DataBundle],
    fold: int,
    context: RunContext | None,
) -> dict[str, Any]:
    """Train one fold (continuing its ``last.pt`` when resuming); save its metrics.

    ``bundles``: the data it trains on (with its inner validation split), and the data
    it is scored on (the held-out fold as ``val``, and the test split)."""
    train_bundle, eval_bundle = bundles
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.eval.splits = ["val", "test"]  # val = the held-out fold, only scored
    last = fold_dir / "checkpoints" / "last.pt"
    fold_cfg.resume = str(fold_dir) if cfg.resume and last.is_file() else None
    fold_dir.mkdir(parents=True, exist_ok=True)
    metrics = train_and_evaluate(fold_cfg, fold_dir, console, train_bundle, eval_bundle, context)
    metrics["fold"] = fold
    metrics["sizes"] = {
        "fit": len(train_bundle.train),
        "inner_val": len(train_bundle.val),
        "held_out": len(eval_bundle.val),
        "test": len(eval_bundle.test),
    }
    write_json(fold_dir / "metrics.json", metrics)  # now with the training summary
    return metrics


def _print_summary(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"{result['protocol']}: mean ± std and 95% interval over {result['folds']} folds",
        caption=Text(_comparison_sentence(result)),
    )
    for column in ("metric", "cv (held-out folds)", "test (fold models)"):
        table.add_column(column, justify="right")
    for key, cv in result["cv"].items():
        table.add_row(key, _cell(cv), _cell(result["test_summary"].get(key)))
    console.print(table)


def _aggregate(per_fold: list[dict[str, Any]], protocol: str, run_dir: Path) -> dict[str, Any]:
    first = per_fold[0]
    overlap = statistics.mean(_held_out_share(m.get("sizes", {})) for m in per_fold)
    cv, test = _summary(per_fold, "val", overlap), _summary(per_fold, "test", 0.0)
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
        "test_summary": test,
        "baseline": first.get("baseline", {}),
        "baseline_kind": first.get("baseline_kind"),
        "comparison": _comparison(per_fold, overlap),
        "per_fold": [
            {
                "fold": m.get("fold", i),
                "dir": f"fold_{m.get('fold', i)}",
                "val": _numbers(m["val"]),
                "test": _numbers(m["test"]),
                "sizes": m.get("sizes"),
                "verdict": m.get("comparison", {}).get("verdict"),
                "baseline_kind": m.get("baseline_kind"),
            }
            for i, m in enumerate(per_fold, start=1)
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


def _held_out_share(sizes: dict[str, int]) -> float:
    """Held-out size / training size of one fold (Nadeau and Bengio's n2 / n1)."""
    trained = sizes.get("fit", 0) + sizes.get("inner_val", 0)
    return sizes.get("held_out", 0) / trained if trained else 0.0


def _summary(per_fold: list[dict[str, Any]], split: str, overlap: float) -> dict[str, Any]:
    """Mean, std and 95% t-interval over folds of every numeric metric of ``split``."""
    keys = [k for k, v in per_fold[0][split].items() if _number(v)]
    out = {}
    for key in keys:
        values = [m[split][key] for m in per_fold if _number(m[split].get(key))]
        if values:
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key] = {
                "mean": statistics.mean(values),
                "std": spread,
                "ci": t_interval(values, overlap=overlap),
            }
    return out


def _comparison(per_fold: list[dict[str, Any]], overlap: float) -> dict[str, Any]:
    """Model minus baseline on the held-out folds' headline metric, over folds."""
    folds = [m.get("comparison", {}) for m in per_fold]
    first = folds[0]
    differences = [c.get("difference") for c in folds if _number(c.get("difference"))]
    ci = t_interval(differences, overlap=overlap)
    higher = bool(first.get("higher_is_better", True))
    verdicts = [c.get("verdict") for c in folds]
    return {
        "metric": first.get("metric"),
        "higher_is_better": higher,
        "model": _mean([c.get("model") for c in folds]),
        "baseline": _mean([c.get("baseline") for c in folds]),
        "difference": _mean(differences),
        "ci": ci,
        "ci_level": 0.95,
        "interval": "corrected resampled t over folds (Nadeau and Bengio)",
        "verdict": decide(ci, higher),
        "beats_baseline": decide(ci, higher) == "better" if differences else None,
        "fold_verdicts": {v: verdicts.count(v) for v in ("better", "worse", "indistinguishable")},
    }


def _comparison_sentence(result: dict[str, Any]) -> str:
    c = result["comparison"]
    counts = ", ".join(f"{n} {v}" for v, n in c["fold_verdicts"].items() if n)
    return (
        f"Against the baseline ({c['metric']}, held-out folds): {c['verdict']}; "
        f"difference {number(c['difference'], signed=True)}, 95% CI "
        f"{interval(c['ci'], signed=True)}; per fold: {counts}."
    )


def _write_report(run_dir: Path, result: dict[str, Any]) -> None:
    """report.md and report.html of the k-fold run, from one document."""
    doc = Document(f"{result['protocol']}: {result['folds']} fold models ({result['task']})")
    doc.add(
        Paragraph(
            "Each fold model was trained on the other folds, with its checkpoint chosen on an "
            "inner validation split of them; its held-out fold (cv) was only scored. Every fold "
            "model was also scored on the untouched test split. Mean ± std and 95% interval "
            "over folds (cv: corrected resampled t, since folds share training data; test: t "
            "over fold models, training variation only). Each fold's full report is in "
            "`fold_<i>/report.md` (i from 1)."
        ),
        Paragraph(_comparison_sentence(result), strong=True),
    )
    rows = [
        [Cell(key), _summary_cell(cv), _summary_cell(result["test_summary"].get(key))]
        for key, cv in result["cv"].items()
    ]
    doc.add(
        Table(["metric", "cv (held-out folds)", "test (fold models)"], rows, name="folds-summary")
    )
    keys = list(result["cv"])[:4]
    per_fold = [
        [
            Cell(f"fold {f['fold']}", f["fold"], href=f"{f['dir']}/report.md"),
            *(Cell(number(f["val"].get(k)), f["val"].get(k)) for k in keys),
            Cell(str(f.get("verdict") or "")),
        ]
        for f in result["per_fold"]
    ]
    doc.add(
        Heading("Folds (held-out scores)"),
        Table(["fold", *keys, "vs baseline"], per_fold, name="per-fold"),
    )
    (run_dir / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    write_page(doc, run_dir / "report.html")


def _summary_cell(summary: dict[str, Any] | None) -> Cell:
    return Cell(_cell(summary), summary["mean"] if summary else None)


def _cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    return f"{number(summary['mean'])} ± {number(summary['std'], 2)} {interval(summary['ci'])}"


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if _number(v)]
    return statistics.mean(numbers) if numbers else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items() if _number(v)}
