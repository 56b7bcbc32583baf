"""The ``Diagnostics`` section of report.md, and its one-line terminal summary.

Works on the ``diagnostics`` dict of metrics.json alone (no torch), like the rest of
:mod:`dlrun.evaluation.report`.
"""

from __future__ import annotations

from typing import Any

CHECKS = (("fit", "fit"), ("gradients", "gradients"), ("activations", "activations"))


def one_line(diagnostics: dict[str, Any]) -> str:
    """``diagnostics: fit overfitting · gradients healthy · activations healthy``."""
    parts = []
    for key, label in CHECKS:
        section = diagnostics.get(key)
        if section and section.get("verdict") not in (None, "n/a"):
            parts.append(f"{label} {section['verdict']}")
    tail = " (report.md has the figures and remedies)" if _has_remedies(diagnostics) else ""
    return "diagnostics: " + " · ".join(parts) + tail if parts else ""


def _has_remedies(diagnostics: dict[str, Any]) -> bool:
    return any((diagnostics.get(k) or {}).get("remedies") for k, _ in CHECKS)


def markdown(diagnostics: dict[str, Any]) -> list[str]:
    """The report section: one row per check, then remedies, gradient and unit tables."""
    lines = ["", "## Diagnostics", "", "| check | verdict | what was seen |", "|---|---|---|"]
    for key, label in CHECKS:
        section = diagnostics.get(key)
        if section:
            message = str(section.get("message", "")).replace("|", "\\|")
            lines.append(f"| {label} | **{section.get('verdict')}** | {message} |")
    fit = diagnostics.get("fit") or {}
    for finding in fit.get("findings", [])[1:]:
        lines.append(f"| fit (also) | **{finding['verdict']}** | {finding['message']} |")
    lines += _remedies(diagnostics)
    lines += _gradients(diagnostics.get("gradients") or {})
    lines += _activations(diagnostics.get("activations") or {})
    return lines


def _remedies(diagnostics: dict[str, Any]) -> list[str]:
    """Each diagnosis' remedies in the notes' order, as commands to paste."""
    lines: list[str] = []
    fit = diagnostics.get("fit") or {}
    sections = [(f["verdict"], f.get("remedies")) for f in fit.get("findings", [])]
    for key in ("gradients", "activations"):
        section = diagnostics.get(key) or {}
        sections.append((f"{section.get('verdict')} {key}", section.get("remedies")))
    for verdict, items in sections:
        if not items:
            continue
        lines += ["", f"### What to try: {verdict}", ""]
        for item in items:
            if item.get("command"):
                lines.append(f"- {item['why']}: `{item['command']}`")
            else:
                lines.append(f"- {item['why']}")
    return lines


def _gradients(grads: dict[str, Any]) -> list[str]:
    if not grads.get("layers"):
        return []
    every = grads.get("every_n_steps")
    lines = [
        "",
        "### Gradient norms per layer",
        "",
        f"Recorded every {every} optimizer steps ({grads['samples']} samples), before "
        "clipping; layers from input to output.",
        "",
        "| layer | median norm | max norm |",
        "|---|---|---|",
    ]
    for name, median, peak in zip(grads["layers"], grads["median"], grads["max"], strict=True):
        lines.append(f"| {name} | {median:.3g} | {peak:.3g} |")
    if grads.get("picture"):
        lines += ["", f"![gradient norms]({grads['picture']})"]
    return lines


def _activations(acts: dict[str, Any]) -> list[str]:
    layers = acts.get("layers") or []
    if not layers:
        return []
    lines = [
        "",
        "### Activations on the validation split",
        "",
        "Never active: the unit's output is never above 0 on any validation sample (dead "
        "for ReLU, whose gradient is then 0; the leaky family still passes a gradient). "
        "Saturated: in the flat tails of sigmoid/tanh on at least 99% of the samples.",
        "",
        "| layer | activation | units | never active | saturated | at initialisation |",
        "|---|---|---|---|---|---|",
    ]
    for row in layers:
        start = [
            f"{row[k]:.0%}" for k in ("never_active_at_start", "saturated_at_start") if k in row
        ]
        lines.append(
            f"| {row['layer']} | {row['kind']} | {row['units']} | {_share(row, 'never_active')} | "
            f"{_share(row, 'saturated')} | {' / '.join(start) or 'n/a'} |"
        )
    return lines


def _share(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.0%}" if key in row else "-"


def mistakes_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The report's table of mistakes (the gallery, if any, is among the pictures)."""
    with_input = any(r.get("input") for r in rows)
    with_p = any("p_true" in r for r in rows)
    header = "| test index | true | predicted | confidence |" + (" p(true) |" if with_p else "")
    header += " input |" if with_input else ""
    lines = [
        "",
        "## Most confident mistakes",
        "",
        "The wrong predictions the model was surest of (index as in predictions.csv): "
        "look for mislabelled samples and for the patterns that fool the model.",
        "",
        header,
        "|---" * (header.count("|") - 1) + "|",
    ]
    for r in rows:
        cells = [str(r["index"]), _cell(r["true"]), _cell(r["predicted"]), f"{r['confidence']:.1%}"]
        if with_p:
            cells.append(f"{r['p_true']:.1%}" if "p_true" in r else "")
        if with_input:
            cells.append(_cell(r.get("input", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")
