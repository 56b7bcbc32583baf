"""One content model for the pages dlrun writes, rendered as Markdown and as HTML.

report.md and report.html (and leaderboard.md / .html, dlrun-compare's page) are two
renderings of the same :class:`Document`, built once from the run's data, so the two
can never drift apart: a number or a sentence added to the model appears in both. The
HTML rendering adds only what Markdown cannot show: sortable tables, interactive
learning curves and a scatter of hyperparameters against the monitored metric
(:class:`Curves` and :class:`Scatter` are skipped in Markdown; the pictures they
duplicate are there as PNGs).

Inline text may hold ```code``` and ``**bold**``, the only Markdown the HTML renderer
translates. Torch-free and light, like everything that writes reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown, the value a click on its column sorts by, a link."""

    text: str
    sort: float | str | None = None
    href: str | None = None


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    strong: bool = False


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    """A table; HTML makes every column sortable by a click on its header."""

    header: list[str]
    rows: list[list[Cell]]
    name: str = ""  # an id for the HTML table (tests and links find it by this)


@dataclass(frozen=True)
class Pictures:
    """Image files, relative to the page (embedded in the HTML, linked in Markdown)."""

    files: list[str]


@dataclass(frozen=True)
class Curves:
    """Interactive learning curves from history.csv's rows (HTML only)."""

    history: list[dict[str, float]]
    monitor: str | None = None
    mode: str = "min"  # whether the monitored metric's best epoch is its min or its max
    title: str = "Learning curves"


@dataclass(frozen=True)
class Scatter:
    """Each job's hyperparameters against the monitored metric (HTML only).

    ``points``: ``{"job", "href", "status", "value", "params": {key: value}}``.
    """

    points: list[dict[str, Any]]
    metric: str
    params: list[str]
    title: str = "Hyperparameters against the monitored metric"


Block = Heading | Paragraph | Bullets | Table | Pictures | Curves | Scatter


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self


def cells(*texts: Any) -> list[Cell]:
    """A row of plain cells (numbers are kept as their sort value)."""
    return [
        Cell(str(t), sort=t if isinstance(t, int | float) and not isinstance(t, bool) else None)
        for t in texts
    ]


def to_markdown(doc: Document) -> str:
    """The document as Markdown: blocks separated by blank lines."""
    parts = [f"# {doc.title}"]
    for block in doc.blocks:
        text = _markdown_block(block)
        if text is not None:
            parts.append(text)
    return "\n\n".join(parts) + "\n"


def _markdown_block(block: Block) -> str | None:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return f"**{block.text}**" if block.strong else block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return markdown_table(block.header, block.rows)
    if isinstance(block, Pictures):
        return "\n".join(f"![{picture_title(p)}]({p})" for p in block.files)
    return None  # interactive blocks: HTML only


def markdown_table(header: list[str], rows: list[list[Cell]]) -> str:
    """A pipe table; ``|`` inside a cell is escaped, a linked cell becomes a link."""

    def text(cell: Cell | str) -> str:
        if isinstance(cell, str):
            return cell.replace("|", "\\|")
        shown = cell.text.replace("|", "\\|")
        return f"[{shown}]({cell.href})" if cell.href else shown

    def line(items: list[Any]) -> str:
        return "| " + " | ".join(text(c) for c in items) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def picture_title(path: str) -> str:
    """``confusion_matrix.png`` -> ``confusion matrix``."""
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("_", " ")
