"""``dlrun-compare <run> <run> [...]``: what differs between runs, and what it did.

Two tables, on the terminal and (``html=<file>``) as a page: the configs key by key
(only the keys whose values differ, unless ``all=true``), and the metrics side by side
(test metrics, the baseline, the verdict against it, the monitored best, time), with
each row's best run marked. A sweep dir stands for all of its jobs.

Runs are read as files only (``.hydra/config.yaml`` as plain YAML, ``metrics.json``,
``status.json``): nothing in them is built or run, so a run dir from elsewhere is safe
to compare. Torch-free: answers in well under a second.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.cli_args import errors_reported, parse_key_values
from dlrun.display import interval, number
from dlrun.document import Cell, Document, Heading, Paragraph, Table
from dlrun.errors import UserError
from dlrun.tracking.content import flatten

USAGE = """usage: dlrun-compare <run> <run> [...] [html=<file>] [all=true]

Compares dlrun runs: their configs key by key, and their metrics side by side.
  <run>        a run dir (outputs/runs/<run>), a sweep job, a k-fold run or its fold,
               or a sweep dir (outputs/multirun/<timestamp>: all of its jobs)
  html=<file>  also write the comparison as a self-contained page (a new file)
  all=true     list every config key, not only those that differ

example: dlrun-compare outputs/runs/2025-01-01_10-00-00_lenet_digits \\
                       outputs/runs/2025-01-01_11-00-00_resnet_digits html=compare.html"""

# Bookkeeping keys that differ between any two runs and say nothing about them.
_IGNORED = ("summary", "model_name", "trial", "resume", "paths")


@dataclass
class Run:
    """One run as its files describe it."""

    dir: Path
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    status: str


def load_run(path: Path) -> Run:
    """A run from its dir; a dir that holds no run is refused with one line."""
    import yaml

    config_path = path / ".hydra" / "config.yaml"
    metrics_path = path / "metrics.json"
    if not config_path.is_file() and not metrics_path.is_file():
        raise UserError(f"{path} is not a dlrun run dir (no .hydra/config.yaml, no metrics.json)")
    try:
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        status = (
            json.loads((path / "status.json").read_text())
            if (path / "status.json").is_file()
            else {}
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read its files ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise UserError(f"{path}: its config or metrics are not what dlrun writes")
    state = status.get("status") or ("completed" if "train" in metrics else "unknown")
    return Run(path, path.name, config, metrics, str(state))


def expand(paths: list[Path]) -> list[Path]:
    """Run dirs, a sweep dir replaced by its jobs (in job order)."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path} does not exist")
        jobs = sorted(p for p in path.iterdir() if (p / ".hydra" / "config.yaml").is_file())
        is_sweep = not (path / ".hydra").is_dir() and jobs
        out += jobs if is_sweep else [path]
    return out


def config_rows(runs: list[Run], every_key: bool = False) -> list[list[str]]:
    """``[key, value per run]`` for each config key that differs (or every key)."""
    flat = [{k: v for k, v in flatten(r.config) if k.split(".")[0] not in _IGNORED} for r in runs]
    keys = sorted({k for f in flat for k in f})
    rows = []
    for key in keys:
        values = [_text(f[key]) if key in f else "(absent)" for f in flat]
        if every_key or len(set(values)) > 1:
            rows.append([key, *values])
    return rows


def metric_rows(runs: list[Run]) -> list[tuple[str, list[float | None], str]]:
    """``(metric, value per run, which is better)``: test metrics first, then the rest."""
    keys: list[str] = []
    for run in runs:
        for key, value in (run.metrics.get("test") or {}).items():
            if _number(value) and key not in keys:
                keys.append(key)
    rows = [(f"test {k}", [_get(r.metrics, "test", k) for r in runs], _better(k)) for k in keys]
    rows += [(f"baseline {k}", [_get(r.metrics, "baseline", k) for r in runs], "")
             for k in keys[:3]]  # fmt: skip
    monitors = {(r.metrics.get("train") or {}).get("monitor") for r in runs} - {None}
    monitor = next(iter(monitors)) if len(monitors) == 1 else "monitored"
    rows.append((f"best {monitor}", [_get(r.metrics, "train", "best_value") for r in runs],
                 _better(str(monitor)) if len(monitors) == 1 else ""))  # fmt: skip
    for key, label in (("best_epoch", "best epoch"), ("epochs", "epochs"),
                       ("parameters", "parameters"), ("seconds", "training s")):  # fmt: skip
        rows.append((label, [_get(r.metrics, "train", key) for r in runs], ""))
    return rows


def _better(metric: str) -> str:
    from dlrun.monitor import metric_mode

    return metric_mode(metric)


def best_index(values: list[float | None], better: str) -> int | None:
    """The run with the best value (None when there is no direction or fewer than 2)."""
    scored = [(v, i) for i, v in enumerate(values) if _number(v)]
    if not better or len(scored) < 2 or len({v for v, _ in scored}) == 1:
        return None
    pick = min if better == "min" else max
    return pick(scored)[1]


def verdicts(runs: list[Run]) -> list[str]:
    """Each run's verdict against its baseline, with the interval of the difference."""
    out = []
    for run in runs:
        c = run.metrics.get("comparison") or {}
        if not c.get("verdict"):
            out.append("n/a")
            continue
        out.append(f"{c['verdict']} on {c.get('metric')} {interval(c.get('ci'), signed=True)}")
    return out


def document(runs: list[Run], every_key: bool, page_dir: Path | None = None) -> Document:
    """The comparison as a document (the terminal tables and the page say the same)."""
    names = [r.name for r in runs]
    doc = Document(f"Comparison of {len(runs)} runs")
    run_cells = []
    for run in runs:
        report = run.dir / "report.md"
        href = os.path.relpath(report, page_dir) if page_dir and report.is_file() else None
        run_cells.append([Cell(run.name, href=href), Cell(run.status), Cell(str(run.dir))])
    doc.add(Table(["run", "status", "dir"], run_cells, name="runs"))
    rows = config_rows(runs, every_key)
    doc.add(Heading("Config" + (" (every key)" if every_key else ": the keys that differ")))
    if rows:
        doc.add(Table(["key", *names], [[Cell(c) for c in row] for row in rows], name="config"))
    else:
        doc.add(Paragraph("The configs are the same."))
    table = []
    for label, values, better in metric_rows(runs):
        best = best_index(values, better)
        cells = [Cell(label)]
        for i, value in enumerate(values):
            shown = number(value) + (" *" if i == best else "")
            cells.append(Cell(shown, value if _number(value) else None))
        table.append(cells)
    table.append([Cell("vs baseline"), *(Cell(v) for v in verdicts(runs))])
    doc.add(
        Heading("Metrics (* the best of the runs)"),
        Table(["metric", *names], table, name="metrics"),
    )
    return doc


def print_document(doc: Document) -> None:
    """The document's tables on the terminal with rich."""
    from rich.table import Table as RichTable

    from dlrun.display import make_console

    console = make_console()
    console.print(doc.title, style="bold", highlight=False)
    for block in doc.blocks:
        if isinstance(block, Heading):
            console.print(f"\n{block.text}", style="bold", highlight=False)
        elif isinstance(block, Paragraph):
            console.print(block.text, highlight=False)
        elif isinstance(block, Table):
            table = RichTable(show_lines=False)
            for header in block.header:
                table.add_column(header, overflow="fold")
            for row in block.rows:
                table.add_row(*(_styled(c) for c in row))
            console.print(table)


def _styled(cell: Cell) -> Any:
    from rich.text import Text

    return Text(cell.text, style="bold green" if cell.text.endswith(" *") else "")


def main() -> None:
    """The ``dlrun-compare`` console script."""
    args = sys.argv[1:]
    with errors_reported("dlrun-compare"):
        options = parse_key_values([a for a in args if "=" in a or a.startswith("-")],
                                   {"html": None, "all": False}, USAGE,
                                   kinds={"all": _boolean}, prog="dlrun-compare")  # fmt: skip
        paths = expand(
            [Path(a).expanduser() for a in args if "=" not in a and not a.startswith("-")]
        )
        if len(paths) < 2:
            raise UserError("give at least two runs (or a sweep dir) to compare; --help shows how")
        out = Path(options["html"]).expanduser() if options["html"] else None
        if out is not None and out.exists():
            raise UserError(f"html={out} exists; choose a new file (nothing is overwritten)")
        runs = [load_run(p) for p in paths]
        doc = document(runs, options["all"], out.parent.resolve() if out else None)
        print_document(doc)
        if out is not None:
            from dlrun.html_page import write_page

            out.parent.mkdir(parents=True, exist_ok=True)
            write_page(doc, out)
            print(f"written: {out}")


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise ValueError(text)


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _get(section: dict[str, Any], part: str, key: str) -> float | None:
    value = (section.get(part) or {}).get(key)
    return float(value) if _number(value) else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
