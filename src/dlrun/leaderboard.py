"""The sweep summary Hydra leaves out: one table of every job, ranked, with intervals.

Each row shows the job's verdict against its baseline with the interval of the
difference, and the job's own 95% interval on its headline metric; a note says when the
leader's interval overlaps the next rows' (a ranking inside the noise). Jobs that differ
only by seed are grouped into mean ± std with a 95% t-interval over seeds. The CSV holds
plain numbers for machines; the Markdown and the terminal round them for people.

Built only from files on disk (each job's ``.hydra/overrides.yaml``, ``status.json``,
``metrics.json`` and an optional ``trial.json``), so it can be rebuilt at any time,
also for a sweep that was interrupted: ``dlrun-leaderboard <sweep_dir>``.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.display import interval, number
from dlrun.document import Cell, Document, Heading, Paragraph, Scatter, Table, to_markdown
from dlrun.evaluation.significance import VERDICTS, t_interval
from dlrun.html_page import write_page
from dlrun.monitor import metric_mode
from dlrun.rundir import read_json_dict, run_status

# Test metrics shown when present, in this order (the headline of each task kind).
TEST_COLUMNS = (
    "accuracy", "f1_macro", "roc_auc", "pr_auc", "subset_accuracy",
    "rmse", "mae", "r2", "perplexity", "loss",
)  # fmt: skip
SEED_KEYS = ("seed",)


@dataclass
class Job:
    """One job's row: what was swept, how it ended and what it scored."""

    name: str
    overrides: dict[str, str]
    status: str
    reason: str = ""
    test: dict[str, float] = field(default_factory=dict)
    monitor: str = ""
    best_value: float | None = None
    best_epoch: int | None = None
    parameters: int | None = None
    wall_seconds: float | None = None
    trial: int | None = None
    headline: str = ""  # the metric compared with the baseline (comparison.metric)
    verdict: str = ""  # better | worse | indistinguishable (comparison.verdict)
    diff_ci: list[float] | None = None  # model minus baseline, 95% (comparison.ci)
    ci: list[float] | None = None  # the job's own 95% interval on ``headline``


def read_job(job_dir: Path) -> Job | None:
    """A job from its directory, or None when the directory holds no job."""
    overrides_path = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_path.is_file():
        return None
    overrides = dict(_split_override(line) for line in _yaml_list(overrides_path))
    status = run_status(job_dir) or {}  # "running" with its process gone: interrupted
    metrics = read_json_dict(job_dir / "metrics.json")
    trial = read_json_dict(job_dir / "trial.json")
    train = metrics.get("train", {})
    state = status.get("status", "not started")
    if trial.get("state") == "PRUNED":
        state = "pruned"
    test = {k: v for k, v in metrics.get("test", {}).items() if _is_number(v)}
    comparison = metrics.get("comparison") or {}
    return Job(
        name=job_dir.name,
        overrides=overrides,
        status=state,
        reason=str(status.get("reason", "")).splitlines()[0] if status.get("reason") else "",
        test={k: test[k] for k in TEST_COLUMNS if k in test},
        monitor=train.get("monitor", ""),
        best_value=train.get("best_value"),
        best_epoch=train.get("best_epoch"),
        parameters=train.get("parameters"),
        wall_seconds=status.get("wall_seconds", train.get("seconds")),
        trial=trial.get("number"),
        headline=comparison.get("metric") or "",
        verdict=comparison.get("verdict") or "",
        diff_ci=_pair(comparison.get("ci")),
        ci=_pair(_own_interval(metrics, comparison)),
    )


def _own_interval(metrics: dict[str, Any], comparison: dict[str, Any]) -> Any:
    """The job's 95% interval on its headline metric: the bootstrap's, or k-fold's cv."""
    if "model_ci" in comparison:
        return comparison["model_ci"]
    return (metrics.get("cv", {}).get(comparison.get("metric")) or {}).get("ci")


def collect(sweep_dir: Path) -> list[Job]:
    """Every job under ``sweep_dir`` (job dirs are its direct subdirectories)."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep dir not found: {sweep_dir}")
    jobs = [read_job(p) for p in sorted(sweep_dir.iterdir()) if p.is_dir()]
    return [j for j in jobs if j is not None]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs (all of them for a single job)."""
    keys = sorted({k for j in jobs for k in j.overrides})
    if len(jobs) <= 1:
        return keys
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def rank(jobs: list[Job]) -> list[Job]:
    """Completed jobs best first by their monitored metric; the others after them."""
    monitors = {j.monitor for j in jobs if j.monitor}
    mode = metric_mode(next(iter(monitors))) if len(monitors) == 1 else "max"

    def key(job: Job) -> tuple[int, float]:
        if job.best_value is None or not _is_number(job.best_value):
            return (1, 0.0)
        return (0, -job.best_value if mode == "max" else job.best_value)

    return sorted(jobs, key=key)


def tracker_summary(jobs: list[Job]) -> dict[str, Any]:
    """What a sweep's parent run in the trackers gets: how many jobs ended how, and the
    leader's monitored value and test metrics (``logger=mlflow``, ...)."""
    values = {
        "jobs": float(len(jobs)),
        "jobs_completed": float(sum(j.status == "completed" for j in jobs)),
        "jobs_failed": float(sum(j.status == "failed" for j in jobs)),
    }
    tags: dict[str, str] = {}
    leaders = [j for j in rank(jobs) if j.status == "completed" and _is_number(j.best_value)]
    if leaders:
        leader = leaders[0]
        values[f"best_{leader.monitor or 'value'}"] = float(leader.best_value)  # type: ignore[arg-type]
        values.update({f"best_job_test_{k}": float(v) for k, v in leader.test.items()})
        tags["best_job"] = leader.name
    return {"values": values, "tags": tags}


def table_rows(jobs: list[Job]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows, one per job, in rank order, as values (numbers stay numbers).

    ``vs_baseline`` and ``diff_ci_low/high`` are each job's verdict and the interval of
    model minus baseline; ``ci_low/high`` the job's own interval on its headline metric.
    """
    swept = swept_keys(jobs)
    metrics = [c for c in TEST_COLUMNS if any(c in j.test for j in jobs)]
    monitor = next((j.monitor for j in jobs if j.monitor), "best")
    header = [
        "rank", "job", *(["trial"] if any(j.trial is not None for j in jobs) else []),
        *swept, *(f"test_{m}" for m in metrics), "headline", "ci_low", "ci_high",
        "vs_baseline", "diff_ci_low", "diff_ci_high", f"best_{monitor}", "best_epoch",
        "params", "seconds", "status", "reason",
    ]  # fmt: skip
    rows = []
    for position, job in enumerate(rank(jobs), start=1):
        done = job.status == "completed"
        row: list[Any] = [position if done else "-", job.name]
        if "trial" in header:
            row.append(job.trial)
        row += [job.overrides.get(k, "") for k in swept]
        row += [job.test.get(m) for m in metrics]
        row += [job.headline or None, *(job.ci or (None, None)), job.verdict or None]
        row += [*(job.diff_ci or (None, None))]
        row += [job.best_value, job.best_epoch, job.parameters]
        row += [job.wall_seconds, job.status, job.reason]
        rows.append(row)
    return header, rows


def overlap_note(jobs: list[Job]) -> str:
    """A sentence when the leader's 95% interval overlaps the next jobs' (else empty).

    Overlapping intervals do not prove a tie, but a ranking inside them is not evidence
    either: the note says which rows the data cannot separate.
    """
    ranked = [j for j in rank(jobs) if j.status == "completed" and j.ci and j.headline]
    if len(ranked) < 2:
        return ""
    leader, rest = ranked[0], ranked[1:]
    tied = [j for j in rest if j.headline == leader.headline and _overlaps(j.ci, leader.ci)]
    if not tied:
        return (
            f"The leader's 95% interval on {leader.headline} {interval(leader.ci)} "
            "overlaps no other job's."
        )
    names = ", ".join(j.name for j in tied[:5]) + (" …" if len(tied) > 5 else "")
    return (
        f"The 95% intervals on {leader.headline} of the leader ({leader.name} "
        f"{interval(leader.ci)}) and of {len(tied)} more job(s) overlap ({names}): "
        "the ranking among them may be noise."
    )


def seed_groups(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    """Mean ± std and a 95% t-interval over jobs that differ only by seed (or nothing)."""
    swept = [k for k in swept_keys(jobs) if k not in SEED_KEYS]
    if len(swept) == len(swept_keys(jobs)):
        return [], []
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        if job.status == "completed":
            groups.setdefault(tuple(job.overrides.get(k, "") for k in swept), []).append(job)
    metrics = [c for c in TEST_COLUMNS if any(c in j.test for j in jobs)]
    header = [*swept, "seeds", *(f"test_{m}" for m in metrics), "vs baseline", "best_value"]
    monitors = {j.monitor for j in jobs if j.monitor}
    larger_first = len(monitors) != 1 or metric_mode(next(iter(monitors))) == "max"
    scored = []
    for values, members in groups.items():
        row = [*values, str(len(members))]
        row += [_spread([j.test.get(m) for j in members]) for m in metrics]
        row.append(_verdict_counts(members))
        row.append(_spread([j.best_value for j in members]))
        best = [j.best_value for j in members if _is_number(j.best_value)]
        scored.append((statistics.mean(best) if best else math.nan, row))
    scored.sort(key=lambda pair: pair[0], reverse=larger_first)
    return header, [row for _, row in scored]


def write(sweep_dir: Path) -> tuple[list[Job], Path, Path]:
    """Write ``leaderboard.csv``, ``.md`` and ``.html``; returns the jobs, CSV and MD paths.

    The Markdown and the HTML page are two renderings of one document
    (:func:`leaderboard_document`); the page adds sorting and the scatter view.
    """
    jobs = collect(sweep_dir)
    header, rows = table_rows(jobs)
    csv_path = sweep_dir / "leaderboard.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    doc = leaderboard_document(sweep_dir, jobs)
    md_path = sweep_dir / "leaderboard.md"
    md_path.write_text(to_markdown(doc), encoding="utf-8")
    write_page(doc, sweep_dir / "leaderboard.html")
    return jobs, csv_path, md_path


def leaderboard_document(sweep_dir: Path, jobs: list[Job]) -> Document:
    """The ranked table (each job linked to its report), the overlap note, the seed
    groups, and a scatter of the swept values against the monitored metric."""
    header, rows = table_rows(jobs)
    shown_header, shown = _display_cells(header, rows)
    job_column = header.index("job")
    for row in shown:
        report = sweep_dir / row[job_column].text / "report.md"
        if report.is_file():
            row[job_column] = Cell(
                row[job_column].text, row[job_column].text, href=_rel(report, sweep_dir)
            )
    doc = Document(
        f"Leaderboard: {sweep_dir.name}", [Table(shown_header, shown, name="leaderboard")]
    )
    note = overlap_note(jobs)
    if note:
        doc.add(Paragraph(note))
    g_header, g_rows = seed_groups(jobs)
    if g_rows:
        doc.add(
            Heading("Mean ± std over seeds [95% t-interval]"),
            Table(g_header, [[Cell(c) for c in row] for row in g_rows], name="seed-groups"),
        )
    failed = [j for j in jobs if j.status not in ("completed", "pruned")]
    doc.add(Paragraph(f"{len(jobs)} jobs, {len(failed)} not completed."))
    scatter = _scatter(sweep_dir, jobs)
    if scatter is not None:
        doc.add(scatter)
    return doc


def _scatter(sweep_dir: Path, jobs: list[Job]) -> Scatter | None:
    """Each job's swept values against its best monitored value (HTML only)."""
    params = [k for k in swept_keys(jobs) if not k.startswith("trial.")]
    if not params or len(jobs) < 2:
        return None
    monitor = next((j.monitor for j in jobs if j.monitor), "best value")
    points = []
    for job in jobs:
        page = next(
            (n for n in ("report.html", "report.md") if (sweep_dir / job.name / n).is_file()), None
        )
        points.append(
            {
                "job": job.name,
                "href": f"{job.name}/{page}" if page else None,
                "status": job.status,
                "value": job.best_value if _is_number(job.best_value) else None,
                "params": {k: _param_value(job.overrides.get(k, "")) for k in params},
            }
        )
    return Scatter(points, f"best {monitor}", params)


def _param_value(text: str) -> float | str:
    """A swept value as a number where it is one (so the scatter can place it on an axis)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def print_tables(sweep_dir: Path, jobs: list[Job]) -> None:
    """The leaderboard on the terminal, narrowed to what fits: the swept values, three
    headline test metrics, the verdict against the baseline, the monitored best and the
    status (the files have it all)."""
    from rich.table import Table

    from dlrun.display import make_console

    console = make_console()
    header, rows = _display(*table_rows(jobs))
    keep = {"rank", *swept_keys(jobs), "status", "vs baseline"}
    keep |= {h for h in header if h.startswith("95% CI")}
    keep |= {h for h in header if h.startswith("best_") and h != "best_epoch"}
    keep.update([h for h in header if h.startswith("test_")][:3])
    if any(row[-2] != "completed" for row in rows):
        keep.add("reason")
    shown = [i for i, h in enumerate(header) if h in keep]
    table = Table(title=f"leaderboard: {sweep_dir}")
    for i in shown:
        table.add_column(header[i].removeprefix("test_"))
    for row in rows:
        style = None if row[-2] == "completed" else "red"
        cells = [row[i] for i in shown]
        if "reason" in keep and len(cells[-1]) > 60:
            cells[-1] = cells[-1][:59] + "…"
        table.add_row(*cells, style=style)
    console.print(table)
    note = overlap_note(jobs)
    if note:
        console.print(note, highlight=False, markup=False)
    g_header, g_rows = seed_groups(jobs)
    if g_rows:
        grouped = Table(title="mean ± std [95% t-interval] over seeds (test)")
        columns = [i for i, h in enumerate(g_header) if not h.startswith("test_")]
        columns[-2:-2] = [i for i, h in enumerate(g_header) if h.startswith("test_")][:3]
        for i in columns:
            grouped.add_column(g_header[i].removeprefix("test_"), overflow="fold")
        for row in g_rows:
            grouped.add_row(*(row[i] for i in columns))
        console.print(grouped)


def _display(header: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows for people: numbers rounded, each interval in one cell, verdict with its CI."""
    shown_header, shown = _display_cells(header, rows)
    return shown_header, [[cell.text for cell in row] for row in shown]


def _display_cells(header: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Cell]]]:
    """:func:`_display`'s rows as cells that keep each value to sort by (HTML tables)."""
    headlines = {row[header.index("headline")] for row in rows} - {None}
    own = "95% CI" + (f" ({next(iter(headlines))})" if len(headlines) == 1 else "")
    pairs = {"ci_low": own, "diff_ci_low": "vs baseline"}
    skip = {"ci_high", "diff_ci_high", "vs_baseline", "headline"}
    shown_header: list[str] = []
    shown: list[list[Cell]] = [[] for _ in rows]
    for i, name in enumerate(header):
        if name in skip:
            continue
        shown_header.append(pairs.get(name, name))
        for row, out in zip(rows, shown, strict=True):
            if name == "ci_low":
                out.append(Cell(_interval_cell(row[i], row[i + 1]), _midpoint(row[i], row[i + 1])))
            elif name == "diff_ci_low":
                verdict = row[header.index("vs_baseline")] or ""
                cell = _interval_cell(row[i], row[i + 1], signed=True)
                out.append(Cell(f"{verdict} {cell}" if verdict else "", row[i]))
            else:
                value = row[i]
                sort = _param_value(value) if isinstance(value, str) else value
                out.append(Cell(_fmt(value), sort if _is_number(sort) else None))
    return shown_header, shown


def _midpoint(low: Any, high: Any) -> float | None:
    return (low + high) / 2 if _is_number(low) and _is_number(high) else None


def main() -> None:
    """``dlrun-leaderboard <sweep_dir>``: rebuild a sweep's tables from disk."""
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: dlrun-leaderboard <sweep_dir>   (e.g. outputs/multirun/<timestamp>)")
        sys.exit(0 if len(sys.argv) == 2 else 2)
    sweep_dir = Path(sys.argv[1])
    try:
        jobs, csv_path, md_path = write(sweep_dir)
    except FileNotFoundError as exc:
        print(f"dlrun-leaderboard: error: {exc}", file=sys.stderr)
        sys.exit(1)
    if not jobs:
        print(f"dlrun-leaderboard: error: no jobs found in {sweep_dir}", file=sys.stderr)
        sys.exit(1)
    print_tables(sweep_dir, jobs)
    print(f"written: {csv_path} {md_path}")
    sys.exit(1 if any(j.status == "failed" for j in jobs) else 0)


def _split_override(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    return key.lstrip("+~"), value


def _yaml_list(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(item) for item in OmegaConf.load(path)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return number(value) if isinstance(value, int | float) else str(value)


def _interval_cell(low: Any, high: Any, signed: bool = False) -> str:
    return "" if low is None or high is None else interval((low, high), signed=signed)


def _verdict_counts(members: list[Job]) -> str:
    """e.g. ``better 2/3, indistinguishable 1/3`` over a seed group."""
    verdicts = [j.verdict for j in members]
    counts = [f"{v} {verdicts.count(v)}/{len(members)}" for v in VERDICTS if v in verdicts]
    return ", ".join(counts)


def _pair(value: Any) -> list[float] | None:
    ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
    return [float(v) for v in value] if ok else None


def _overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _spread(values: list[Any]) -> str:
    """``mean ± std [t-interval]`` over seeds; the value alone for one seed."""
    numbers = [v for v in values if _is_number(v)]
    if not numbers:
        return ""
    if len(numbers) == 1:
        return number(numbers[0])
    spread = f"{number(statistics.mean(numbers))} ± {number(statistics.stdev(numbers), 2)}"
    return f"{spread} {interval(t_interval(numbers))}"


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
