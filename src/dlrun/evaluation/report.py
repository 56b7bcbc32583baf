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
from dlrun.display import interval, number
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
    versus: str  # better, worse, equal, n/a; the primary metric: the interval verdict


def versus(key: str, model: float | None, baseline: float | None) -> str:
    """``better``, ``worse`` or ``equal`` on ``key``; ``n/a`` when either is undefined."""
    if not _defined(model) or not _defined(baseline):
        return "n/a"
    if model == baseline:
        return "equal"
    return "better" if (model < baseline) == lower_is_better(key) else "worse"


def compare(
    task: Task,
    model: dict[str, Any],
    baseline: dict[str, Any],
    test: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict on the task's primary metric, with its interval from ``test``.

    ``test`` is :func:`dlrun.evaluation.significance.paired_bootstrap`'s result (plus
    ``mcnemar``); without it nothing is known about chance and the verdict stays
    ``indistinguishable``. ``better_on`` / ``worse_on`` compare point values only.
    """
    key = PRIMARY[task]
    keys = [k for k in HEADLINE[task] if k in model]
    test = test or {}
    value, base = model.get(key), baseline.get(key)
    defined = _defined(value) and _defined(base)
    outcome = test.get("verdict", "indistinguishable") if defined else "indistinguishable"
    return {
        "metric": key,
        "higher_is_better": not lower_is_better(key),
        "model": value,
        "baseline": base,
        "difference": value - base if defined else None,
        "verdict": outcome,
        "ci": test.get("ci"),
        "ci_level": test.get("ci_level", 0.95),
        "model_ci": test.get("model_ci"),
        "baseline_ci": test.get("baseline_ci"),
        "bootstrap": test.get("bootstrap"),
        "mcnemar": test.get("mcnemar"),
        "beats_baseline": outcome == "better" if defined else None,
        "better_on": [k for k in keys if versus(k, model[k], baseline.get(k)) == "better"],
        "worse_on": [k for k in keys if versus(k, model[k], baseline.get(k)) == "worse"],
    }


def headline_rows(metrics: dict[str, Any]) -> list[Row]:
    """Rows of the headline table, shared by the terminal and report.md.

    The primary metric's row carries the interval verdict; the others compare point
    values (no interval), as ``better``/``worse``/``equal``.
    """
    task = Task(metrics["task"])
    main = metrics["splits"][0]
    model, base = metrics[main], metrics["baseline"]
    val = metrics.get("val") if main != "val" else None
    comparison = metrics.get("comparison", {})
    rows = []
    for key in HEADLINE[task]:
        if key not in model:
            continue
        outcome = versus(key, model[key], base.get(key))
        if key == comparison.get("metric") and outcome not in ("n/a", "equal"):
            outcome = comparison.get("verdict", outcome)
        rows.append(Row(key, model[key], base.get(key), _get(val, key), outcome))
    return rows


def verdict(metrics: dict[str, Any]) -> str:
    """One plain sentence: does the model beat the trivial baseline beyond chance?"""
    c = metrics["comparison"]
    numbers = f"{c['metric']} {fmt(c['model'])} vs {fmt(c['baseline'])}"
    baseline = f"baseline: {metrics.get('baseline_description', metrics.get('baseline_kind'))}"
    if c.get("beats_baseline") is None:
        return f"Cannot tell whether the model beats the baseline: {numbers} ({baseline})."
    level = c.get("ci_level", 0.95)
    detail = f"difference {number(c.get('difference'), signed=True)}"
    detail += f", {level:.0%} CI {interval(c.get('ci'), signed=True)}"
    outcome = c.get("verdict") or ("better" if c["beats_baseline"] else "indistinguishable")
    if outcome == "better":
        return f"The model beats the baseline: {numbers} ({detail}; {baseline})."
    if outcome == "worse":
        return (
            f"The model does NOT beat the baseline, it is worse: {numbers} ({detail}; {baseline})."
        )
    return (
        f"The model does NOT beat the baseline beyond chance: {numbers} ({detail}, which "
        f"includes 0; {baseline})."
    )


def headline_table(metrics: dict[str, Any]) -> Table:
    """A rich Table of the headline metrics, model vs baseline, verdict as caption."""
    from rich.table import Table
    from rich.text import Text

    rows = headline_rows(metrics)
    main = metrics["splits"][0]
    table = Table(
        title=f"{metrics.get('dataset', '')} · {metrics['task']} · {main} "
        f"(n={metrics.get(f'n_{main}', '?')})",
        caption=Text(verdict(metrics)),  # plain text: "[low, high]" is not markup
    )
    table.add_column("metric")
    table.add_column(main, justify="right")
    table.add_column("baseline", justify="right")
    with_val = any(row.val is not None for row in rows)
    if with_val:
        table.add_column("val", justify="right")
    table.add_column("vs baseline", justify="center")
    colours = {
        "better": "green",
        "worse": "red",
        "equal": "yellow",
        "indistinguishable": "yellow",
        "n/a": "dim",
    }
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
        *_comparison_markdown(metrics),
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
    """Four significant digits (:func:`dlrun.display.number`); ``n/a`` when undefined."""
    return number(value)


def _headline_markdown(rows: list[Row], main: str) -> list[str]:
    with_val = any(row.val is not None for row in rows)
    header = f"| metric | {main} | baseline |" + (" val |" if with_val else "") + " vs baseline |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        val = f" {fmt(row.val)} |" if with_val else ""
        lines.append(f"| {row.key} | {fmt(row.model)} | {fmt(row.baseline)} |{val} {row.versus} |")
    return lines


def _comparison_markdown(metrics: dict[str, Any]) -> list[str]:
    """Which baseline was used and why, and how sure the verdict is."""
    c = metrics.get("comparison", {})
    lines = ["", "## Against the baseline", ""]
    kind = metrics.get("baseline_kind")
    if kind:
        lines.append(f"- Baseline: {metrics.get('baseline_description', kind)} (`{kind}`).")
    chosen = metrics.get("baseline_selection")
    if chosen:
        scores = ", ".join(f"`{k}` {fmt(v)}" for k, v in chosen["scores"].items())
        lines.append(
            f"- Chosen as the strongest trivial predictor on {chosen['metric']} of the "
            f"{chosen['split']} split (not the split reported here): {scores}."
        )
    boot = c.get("bootstrap") or {}
    if c.get("ci"):
        lines.append(
            f"- {c['metric']}, model minus baseline: {number(c['difference'], signed=True)}, "
            f"{c['ci_level']:.0%} CI {interval(c['ci'], signed=True)} (paired bootstrap, "
            f"{boot.get('resamples')} resamples of the {boot.get('n')} {boot.get('unit')}, "
            f"seed {boot.get('seed')}): **{c['verdict']}**. The model's own interval: "
            f"{interval(c.get('model_ci'))}; the baseline's: {interval(c.get('baseline_ci'))}."
        )
    elif boot:
        lines.append(f"- No interval: {boot.get('n')} {boot.get('unit')} are too few to tell.")
    test = c.get("mcnemar")
    if test:
        lines.append(
            f"- Accuracy, McNemar's exact test: the model alone is right on "
            f"{test['model_only_correct']} examples, the baseline alone on "
            f"{test['baseline_only_correct']}; p = {number(test['p_value'], 3)}."
        )
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


def _get(section: dict[str, Any] | None, key: str) -> Any:
    return None if section is None else section.get(key)


def _defined(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
