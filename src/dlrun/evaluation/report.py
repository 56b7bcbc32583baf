"""The human side of an evaluation: headline table, verdict against baseline, the report.

report.md and report.html are two renderings of one :class:`dlrun.document.Document`
(:func:`report_document`), so they always say the same.

Works on the metrics dict alone (no torch, no torchmetrics), so the CLI can print the
table of a finished run, or of one read back from ``metrics.json``, at no import cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data import notes as data_notes
from dlrun.data.spec import Task
from dlrun.diagnostics.report import blocks as diagnostics_blocks
from dlrun.diagnostics.report import mistakes_blocks
from dlrun.display import interval, number
from dlrun.document import (
    Block,
    Bullets,
    Cell,
    Curves,
    Document,
    Heading,
    Paragraph,
    Pictures,
    Table,
)
from dlrun.monitor import lower_is_better as lower_is_better  # the one direction table
from dlrun.tasks import info

if TYPE_CHECKING:
    from rich.table import Table as RichTable


@dataclass(frozen=True)
class Row:
    """One headline metric: model (headline split), baseline, and val when evaluated."""

    key: str
    model: float | None
    baseline: float | None
    val: float | None
    versus: str  # the primary metric: the interval verdict; others: higher, lower, equal, n/a
    ahead: bool | None = None  # the model's point value is on the better side (colour only)


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
    record = info(task)
    key = record.primary
    keys = [k for k in record.headline if k in model]
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

    The primary metric's row carries the interval verdict (``better``, ``worse``,
    ``indistinguishable``). The others say only which way the point values go,
    ``higher``/``lower``/``equal``: no interval backs them, and "better" there would
    read as a verdict that ignores chance. ``ahead`` says whether that way is the
    metric's better side (the terminal colours it).
    """
    record = info(metrics["task"])
    main = metrics["splits"][0]
    model, base = metrics[main], metrics["baseline"]
    val = metrics.get("val") if main != "val" else None
    comparison = metrics.get("comparison", {})
    rows = []
    for key in record.headline:
        if key not in model:
            continue
        outcome = versus(key, model[key], base.get(key))
        ahead = None if outcome in ("n/a", "equal") else outcome == "better"
        if key == comparison.get("metric") and ahead is not None:
            shown = comparison.get("verdict", outcome)
        elif ahead is None:
            shown = outcome
        else:
            shown = "higher" if model[key] > base[key] else "lower"
        rows.append(Row(key, model[key], base.get(key), _get(val, key), shown, ahead))
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


def headline_table(metrics: dict[str, Any]) -> RichTable:
    """A rich Table of the headline metrics, model vs baseline, verdict as caption."""
    from rich.table import Table as RichTable
    from rich.text import Text

    rows = headline_rows(metrics)
    main = metrics["splits"][0]
    table = RichTable(
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
        colour = colours.get(row.versus) or ("green" if row.ahead else "red")
        table.add_row(*cells, f"[{colour}]{row.versus}[/]")
    return table


def write_report(
    out_dir: Path,
    metrics: dict[str, Any],
    pictures: list[str],
    run_summary: str,
    history: list[dict[str, float]] | None = None,
    monitor: str | None = None,
) -> list[str]:
    """report.md and report.html in ``out_dir``, two renderings of one document.

    Returns the names written. The HTML page adds interactive learning curves (from
    ``history``, the best epoch of ``monitor`` marked) and sortable tables.
    """
    from dlrun.document import to_markdown
    from dlrun.html_page import write_page

    doc = report_document(metrics, pictures, run_summary, history, monitor)
    (out_dir / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    write_page(doc, out_dir / "report.html")
    return ["report.md", "report.html"]


def report_document(
    metrics: dict[str, Any],
    pictures: list[str],
    run_summary: str,
    history: list[dict[str, float]] | None = None,
    monitor: str | None = None,
) -> Document:
    """The report: config, verdict, headline vs baseline, per-class, errors, pictures."""
    record = info(metrics["task"])
    task = record.task
    main = metrics["splits"][0]
    model = metrics[main]
    doc = Document(f"Evaluation: {metrics.get('dataset', '')} ({task})")
    doc.add(
        Paragraph(f"Run: `{run_summary}`" if run_summary else "Run: (no config summary given)"),
        Paragraph(verdict(metrics), strong=True),
        Heading(f"Headline metrics ({main} split, n={metrics[f'n_{main}']})"),
        _headline_table(headline_rows(metrics), main),
        *_comparison_blocks(metrics),
    )
    if "operating_point" in model:
        doc.add(*_operating_blocks(model, metrics["class_names"]))
    if "per_class" in model:
        doc.add(*_per_class_blocks(model["per_class"], record.item))
    if model.get("most_confused"):
        doc.add(*_confused_blocks(model["most_confused"]))
    if metrics.get("mistakes"):
        doc.add(*mistakes_blocks(metrics["mistakes"]))
    if metrics.get("diagnostics"):
        doc.add(*diagnostics_blocks(metrics["diagnostics"]))
    if history:
        from dlrun.monitor import metric_mode

        mode = metric_mode(monitor) if monitor else "min"
        doc.add(Curves(history, monitor, mode))
    if pictures:
        doc.add(Heading("Pictures"), Pictures(list(pictures)))
    doc.add(*_data_blocks(metrics.get("data")))
    notes = [
        f"`loss` is the task loss: {record.loss_units}; other errors are in the "
        "data's original units.",
        *model.get("notes", []),
        "Undefined values are shown as n/a and written as null in metrics.json.",
        f"Evaluation took {metrics['eval_seconds']:.2f} s.",
    ]
    return doc.add(Heading("Notes"), Bullets(notes))


def _data_blocks(section: dict[str, Any] | None) -> list[Block]:
    """The "Data" section of own data: its notes and every skipped file, named."""
    if not section:
        return []
    blocks: list[Block] = [Heading("Data"), Bullets(list(section.get("notes", [])))]
    skipped = section.get("skipped", [])
    if skipped:
        rows = [[Cell(s["path"]), Cell(data_notes.reason(s))] for s in skipped]
        blocks += [
            Paragraph(f"{len(skipped)} file(s) skipped or replaced:"),
            Table(["file", "reason"], rows, name="skipped"),
        ]
    return blocks


def fmt(value: float | None) -> str:
    """Four significant digits (:func:`dlrun.display.number`); ``n/a`` when undefined."""
    return number(value)


def _num(value: float | None) -> Cell:
    """A number cell: shown rounded, sorted by its full value."""
    return Cell(fmt(value), sort=value if _defined(value) else None)


def _headline_table(rows: list[Row], main: str) -> Table:
    with_val = any(row.val is not None for row in rows)
    header = ["metric", main, "baseline", *(["val"] if with_val else []), "vs baseline"]
    body = [
        [
            Cell(row.key),
            _num(row.model),
            _num(row.baseline),
            *([_num(row.val)] if with_val else []),
            Cell(row.versus),
        ]
        for row in rows
    ]
    return Table(header, body, name="headline")


def _comparison_blocks(metrics: dict[str, Any]) -> list[Block]:
    """Which baseline was used and why, and how sure the verdict is."""
    c = metrics.get("comparison", {})
    lines = []
    kind = metrics.get("baseline_kind")
    if kind:
        lines.append(f"Baseline: {metrics.get('baseline_description', kind)} (`{kind}`).")
    chosen = metrics.get("baseline_selection")
    if chosen:
        scores = ", ".join(f"`{k}` {fmt(v)}" for k, v in chosen["scores"].items())
        lines.append(
            f"Chosen as the strongest trivial predictor on {chosen['metric']} of the "
            f"{chosen['split']} split (not the split reported here): {scores}."
        )
    boot = c.get("bootstrap") or {}
    if c.get("ci"):
        lines.append(
            f"{c['metric']}, model minus baseline: {number(c['difference'], signed=True)}, "
            f"{c['ci_level']:.0%} CI {interval(c['ci'], signed=True)} (paired bootstrap, "
            f"{boot.get('resamples')} resamples of the {boot.get('n')} {boot.get('unit')}, "
            f"seed {boot.get('seed')}): **{c['verdict']}**. The model's own interval: "
            f"{interval(c.get('model_ci'))}; the baseline's: {interval(c.get('baseline_ci'))}."
        )
    elif boot:
        lines.append(f"No interval: {boot.get('n')} {boot.get('unit')} are too few to tell.")
    if c.get("metric"):
        lines.append(
            f"Only {c['metric']} is tested against chance; on the other rows of the table, "
            "higher or lower says which way the values go, not that the gap is real."
        )
    test = c.get("mcnemar")
    if test:
        lines.append(
            f"Accuracy, McNemar's exact test: the model alone is right on "
            f"{test['model_only_correct']} examples, the baseline alone on "
            f"{test['baseline_only_correct']}; p = {number(test['p_value'], 3)}."
        )
    return [Heading("Against the baseline"), *([Bullets(lines)] if lines else [])]


def _operating_blocks(model: dict[str, Any], names: list[str]) -> list[Block]:
    """TP/FP/TN/FN per 1,000 cases, in the user's words (negative/positive class names)."""
    negative, positive = names
    per = model["operating_point"]["per_1000"]
    actual_positive = per["tp"] + per["fn"]
    actual_negative = per["tn"] + per["fp"]
    table = Table(
        ["", f"predicted {negative}", f"predicted {positive}"],
        [
            [Cell(f"actual {negative}"), Cell(f"{per['tn']:g} (TN)"), Cell(f"{per['fp']:g} (FP)")],
            [Cell(f"actual {positive}"), Cell(f"{per['fn']:g} (FN)"), Cell(f"{per['tp']:g} (TP)")],
        ],
        name="operating-point",
    )
    return [
        Heading(f"Operating point (threshold {model['threshold']}), per 1,000 cases"),
        table,
        Paragraph(
            f"Of every 1,000 cases like this split, about {actual_positive:g} are {positive}: "
            f"the model finds {per['tp']:g} and misses {per['fn']:g}. Of the "
            f"{actual_negative:g} {negative} cases it wrongly flags {per['fp']:g} as {positive}."
        ),
    ]


def _per_class_blocks(table: dict[str, dict[str, Any]], word: str) -> list[Block]:
    keys = ("precision", "recall", "specificity", "f1")
    rows = [
        [Cell(name), *(_num(row[key]) for key in keys), Cell(str(row["support"]), row["support"])]
        for name, row in table.items()
    ]
    header = [word, *keys, "support"]
    return [Heading(f"Per {word}"), Table(header, rows, name="per-class")]


def _confused_blocks(pairs: list[dict[str, Any]]) -> list[Block]:
    header = ["true class", "predicted as", "count", "share of the true class"]
    rows = [
        [
            Cell(str(pair["true"])),
            Cell(str(pair["predicted"])),
            Cell(str(pair["count"]), pair["count"]),
            Cell(f"{pair['share_of_true']:.1%}", pair["share_of_true"]),
        ]
        for pair in pairs
    ]
    return [Heading("Most-confused pairs"), Table(header, rows, name="most-confused")]


def _get(section: dict[str, Any] | None, key: str) -> Any:
    return None if section is None else section.get(key)


def _defined(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
