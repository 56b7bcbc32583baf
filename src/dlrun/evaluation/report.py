"""The human side of an evaluation: headline table, verdict against baseline, report.md.

Works on the metrics dict alone (no torch, no torchmetrics), so the CLI can print the
table of a finished run, or of one read back from ``metrics.json``, at no import cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.spec import Task
from dlrun.monitor import lower_is_better as lower_is_better  # the one direction table

if TYPE_CHECKING:
    from rich.table import Table

# The few numbers a user reads first, per task, in display order.
HEADLINE: dict[Task, tuple[str, ...]] = {
    Task.MULTICLASS: (
        "accuracy",
        "top5_accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "roc_auc",
        "pr_auc",
        "loss",
    ),
    Task.BINARY: (
        "accuracy",
        "f1",
        "precision",
        "recall",
        "f1_macro",
        "roc_auc",
        "pr_auc",
        "loss",
    ),
    Task.MULTILABEL: (
        "f1_micro",
        "f1_macro",
        "subset_accuracy",
        "hamming_loss",
        "roc_auc",
        "pr_auc",
        "loss",
    ),
    Task.REGRESSION: ("rmse", "mae", "r2", "mape", "loss"),
    Task.FORECAST: ("rmse", "mae", "r2", "loss"),
    Task.LANGUAGE_MODEL: ("loss", "perplexity", "bits_per_token", "accuracy"),
}

# The metric that decides "beats the baseline". Macro F1 rather than accuracy for
# classification: the majority-class baseline can have high accuracy on imbalanced data
# (seed 001: accuracy only when the classes are balanced), but its macro F1 is low.
PRIMARY: dict[Task, str] = {
    Task.MULTICLASS: "f1_macro",
    Task.BINARY: "f1_macro",
    Task.MULTILABEL: "f1_macro",
    Task.REGRESSION: "rmse",
    Task.FORECAST: "rmse",
    Task.LANGUAGE_MODEL: "loss",
}


LOSS_UNITS: dict[Task, str] = {
    Task.MULTICLASS: "cross entropy in nats per sample",
    Task.BINARY: "binary cross entropy in nats per sample",
    Task.MULTILABEL: "binary cross entropy in nats per label",
    Task.REGRESSION: "MSE on the standardised targets the model was trained on",
    Task.FORECAST: "MSE on the (standardised) targets the model was trained on",
    Task.LANGUAGE_MODEL: "cross entropy in nats per token",
}


@dataclass(frozen=True)
class Row:
    """One headline metric: model (headline split), baseline, and val when evaluated."""

    key: str
    model: float | None
    baseline: float | None
    val: float | None
    versus: str  # the model against the baseline: better, worse, equal or n/a


def versus(key: str, model: float | None, baseline: float | None) -> str:
    """``better``, ``worse`` or ``equal`` on ``key``; ``n/a`` when either is undefined."""
    if not _defined(model) or not _defined(baseline):
        return "n/a"
    if model == baseline:
        return "equal"
    return "better" if (model < baseline) == lower_is_better(key) else "worse"


def compare(task: Task, model: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The verdict: does the model beat the baseline on the task's primary metric?"""
    key = PRIMARY[task]
    keys = [k for k in HEADLINE[task] if k in model]
    return {
        "metric": key,
        "higher_is_better": not lower_is_better(key),
        "model": model.get(key),
        "baseline": baseline.get(key),
        "beats_baseline": _beats(versus(key, model.get(key), baseline.get(key))),
        "better_on": [k for k in keys if versus(k, model[k], baseline.get(k)) == "better"],
        "worse_on": [k for k in keys if versus(k, model[k], baseline.get(k)) == "worse"],
    }


def headline_rows(metrics: dict[str, Any]) -> list[Row]:
    """Rows of the headline table, shared by the terminal and report.md."""
    task = Task(metrics["task"])
    main = metrics["splits"][0]
    model, base = metrics[main], metrics["baseline"]
    val = metrics.get("val") if main != "val" else None
    return [
        Row(
            key,
            model[key],
            base.get(key),
            None if val is None else val.get(key),
            versus(key, model[key], base.get(key)),
        )
        for key in HEADLINE[task]
        if key in model
    ]


def verdict(metrics: dict[str, Any]) -> str:
    """One plain sentence: whether the model beats the trivial baseline, and on what."""
    c = metrics["comparison"]
    numbers = f"{c['metric']} {fmt(c['model'])} vs {fmt(c['baseline'])}"
    baseline = f"(baseline: {metrics['baseline_kind']})"
    if c["beats_baseline"] is None:
        return f"Cannot tell whether the model beats the baseline: {numbers} {baseline}."
    if c["beats_baseline"]:
        return f"The model beats the baseline on {numbers} {baseline}."
    return f"The model does NOT beat the baseline on {numbers} {baseline}."


def headline_table(metrics: dict[str, Any]) -> Table:
    """A rich Table of the headline metrics, model vs baseline, verdict as caption."""
    from rich.table import Table

    rows = headline_rows(metrics)
    main = metrics["splits"][0]
    table = Table(
        title=f"{metrics.get('dataset', '')} · {metrics['task']} · {main} "
        f"(n={metrics.get(f'n_{main}', '?')})",
        caption=verdict(metrics),
    )
    table.add_column("metric")
    table.add_column(main, justify="right")
    table.add_column("baseline", justify="right")
    with_val = any(row.val is not None for row in rows)
    if with_val:
        table.add_column("val", justify="right")
    table.add_column("vs baseline", justify="center")
    colours = {"better": "green", "worse": "red", "equal": "yellow", "n/a": "dim"}
    for row in rows:
        cells = [row.key, fmt(row.model), fmt(row.baseline)]
        if with_val:
            cells.append(fmt(row.val))
        table.add_row(*cells, f"[{colours[row.versus]}]{row.versus}[/]")
    return table


def write_report(
    path: Path, metrics: dict[str, Any], pictures: list[str], run_summary: str
) -> None:
    """report.md: config, verdict, headline vs baseline, per-class, errors, pictures."""
    task = Task(metrics["task"])
    main = metrics["splits"][0]
    model = metrics[main]
    lines = [
        f"# Evaluation: {metrics.get('dataset', '')} ({task})",
        "",
        f"Run: `{run_summary}`" if run_summary else "Run: (no config summary given)",
        "",
        f"**{verdict(metrics)}**",
        "",
        f"## Headline metrics ({main} split, n={metrics[f'n_{main}']})",
        "",
        *_headline_markdown(headline_rows(metrics), main),
    ]
    if "operating_point" in model:
        lines += _operating_markdown(model, metrics["class_names"])
    if "per_class" in model:
        lines += _per_class_markdown(model["per_class"], task)
    if model.get("most_confused"):
        lines += _confused_markdown(model["most_confused"])
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in pictures]
    lines += ["", "## Notes", ""]
    lines.append(
        f"- `loss` is the task loss: {LOSS_UNITS[task]}; other errors are in the "
        "data's original units."
    )
    lines += [f"- {note}" for note in model.get("notes", [])]
    lines.append("- Undefined values are shown as n/a and written as null in metrics.json.")
    lines.append(f"- Evaluation took {metrics['eval_seconds']:.2f} s.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def fmt(value: float | None) -> str:
    """Four significant decimals; ``n/a`` for undefined values."""
    if not _defined(value):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _headline_markdown(rows: list[Row], main: str) -> list[str]:
    with_val = any(row.val is not None for row in rows)
    header = f"| metric | {main} | baseline |" + (" val |" if with_val else "") + " vs baseline |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        val = f" {fmt(row.val)} |" if with_val else ""
        lines.append(f"| {row.key} | {fmt(row.model)} | {fmt(row.baseline)} |{val} {row.versus} |")
    return lines


def _operating_markdown(model: dict[str, Any], names: list[str]) -> list[str]:
    """TP/FP/TN/FN per 1,000 cases, in the user's words (negative/positive class names)."""
    negative, positive = names
    per = model["operating_point"]["per_1000"]
    actual_positive = per["tp"] + per["fn"]
    actual_negative = per["tn"] + per["fp"]
    return [
        "",
        f"## Operating point (threshold {model['threshold']}), per 1,000 cases",
        "",
        f"| | predicted {negative} | predicted {positive} |",
        "|---|---|---|",
        f"| actual {negative} | {per['tn']:g} (TN) | {per['fp']:g} (FP) |",
        f"| actual {positive} | {per['fn']:g} (FN) | {per['tp']:g} (TP) |",
        "",
        f"Of every 1,000 cases like this split, about {actual_positive:g} are {positive}: "
        f"the model finds {per['tp']:g} and misses {per['fn']:g}. Of the "
        f"{actual_negative:g} {negative} cases it wrongly flags {per['fp']:g} as {positive}.",
    ]


def _per_class_markdown(table: dict[str, dict[str, Any]], task: Task) -> list[str]:
    word = "label" if task is Task.MULTILABEL else "class"
    lines = [
        "",
        f"## Per {word}",
        "",
        f"| {word} | precision | recall | specificity | f1 | support |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        cells = [fmt(row[key]) for key in ("precision", "recall", "specificity", "f1")]
        lines.append(f"| {name} | {' | '.join(cells)} | {row['support']} |")
    return lines


def _confused_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Most-confused pairs",
        "",
        "| true class | predicted as | count | share of the true class |",
        "|---|---|---|---|",
    ]
    for pair in pairs:
        lines.append(
            f"| {pair['true']} | {pair['predicted']} | {pair['count']} | "
            f"{pair['share_of_true']:.1%} |"
        )
    return lines


def _beats(outcome: str) -> bool | None:
    """Strictly better beats the baseline; a tie does not; undefined cannot tell."""
    return None if outcome == "n/a" else outcome == "better"


def _defined(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
