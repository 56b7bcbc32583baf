"""The ``Diagnostics`` and mistakes sections of the report, and a one-line terminal summary.

Works on the ``diagnostics`` dict of metrics.json alone (no torch), like the rest of
:mod:`dlrun.evaluation.report`; sections are document blocks, so report.md and
report.html show the same.
"""

from __future__ import annotations

from typing import Any

from dlrun.document import Block, Bullets, Cell, Heading, Paragraph, Pictures, Table, cells

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


def blocks(diagnostics: dict[str, Any]) -> list[Block]:
    """The report section: one row per check, then remedies, gradient and unit tables."""
    rows = []
    for key, label in CHECKS:
        section = diagnostics.get(key)
        if section:
            rows.append(cells(label, section.get("verdict"), section.get("message", "")))
    fit = diagnostics.get("fit") or {}
    for finding in fit.get("findings", [])[1:]:
        rows.append(cells("fit (also)", finding["verdict"], finding["message"]))
    return [
        Heading("Diagnostics"),
        Table(["check", "verdict", "what was seen"], rows, name="diagnostics"),
        *_remedies(diagnostics),
        *_gradients(diagnostics.get("gradients") or {}),
        *_activations(diagnostics.get("activations") or {}),
    ]


def _remedies(diagnostics: dict[str, Any]) -> list[Block]:
    """Each diagnosis' remedies in the notes' order, as commands to paste."""
    out: list[Block] = []
    fit = diagnostics.get("fit") or {}
    sections = [(f["verdict"], f.get("remedies")) for f in fit.get("findings", [])]
    for key in ("gradients", "activations"):
        section = diagnostics.get(key) or {}
        sections.append((f"{section.get('verdict')} {key}", section.get("remedies")))
    for verdict, items in sections:
        if items:
            lines = [
                f"{item['why']}: `{item['command']}`" if item.get("command") else item["why"]
                for item in items
            ]
            out += [Heading(f"What to try: {verdict}", level=3), Bullets(lines)]
    return out


def _gradients(grads: dict[str, Any]) -> list[Block]:
    if not grads.get("layers"):
        return []
    every = grads.get("every_n_steps")
    rows = [
        [Cell(name), Cell(f"{median:.3g}", sort=median), Cell(f"{peak:.3g}", sort=peak)]
        for name, median, peak in zip(grads["layers"], grads["median"], grads["max"], strict=True)
    ]
    out: list[Block] = [
        Heading("Gradient norms per layer", level=3),
        Paragraph(
            f"Recorded every {every} optimizer steps ({grads['samples']} samples), before "
            "clipping; layers from input to output."
        ),
        Table(["layer", "median norm", "max norm"], rows, name="gradient_norms"),
    ]
    if grads.get("picture"):
        out.append(Pictures([grads["picture"]]))
    return out


def _activations(acts: dict[str, Any]) -> list[Block]:
    layers = acts.get("layers") or []
    if not layers:
        return []
    rows = []
    for row in layers:
        start = [
            f"{row[k]:.0%}" for k in ("never_active_at_start", "saturated_at_start") if k in row
        ]
        rows.append(
            [
                *cells(row["layer"], row["kind"], row["units"]),
                _share(row, "never_active"),
                _share(row, "saturated"),
                Cell(" / ".join(start) or "n/a"),
            ]
        )
    return [
        Heading("Activations on the validation split", level=3),
        Paragraph(
            "Never active: the unit's output is never above 0 on any validation sample (dead "
            "for ReLU, whose gradient is then 0; the leaky family still passes a gradient). "
            "Saturated: in the flat tails of sigmoid/tanh on at least 99% of the samples."
        ),
        Table(
            ["layer", "activation", "units", "never active", "saturated", "at initialisation"],
            rows,
            name="activations",
        ),
    ]


def _share(row: dict[str, Any], key: str) -> Cell:
    return Cell(f"{row[key]:.0%}", sort=row[key]) if key in row else Cell("-")


def mistakes_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    """The report's table of mistakes (the gallery, if any, is among the pictures)."""
    with_input = any(r.get("input") for r in rows)
    with_p = any("p_true" in r for r in rows)
    header = ["test index", "true", "predicted", "confidence"]
    header += ["p(true)"] * with_p + ["input"] * with_input
    table = []
    for r in rows:
        row = [*cells(r["index"], r["true"], r["predicted"])]
        row.append(Cell(f"{r['confidence']:.1%}", sort=r["confidence"]))
        if with_p:
            row.append(Cell(f"{r['p_true']:.1%}", sort=r["p_true"]) if "p_true" in r else Cell(""))
        if with_input:
            row.append(Cell(str(r.get("input", ""))))
        table.append(row)
    return [
        Heading("Most confident mistakes"),
        Paragraph(
            "The wrong predictions the model was surest of (index as in predictions.csv): "
            "look for mislabelled samples and for the patterns that fool the model."
        ),
        Table(header, table, name="mistakes"),
    ]
