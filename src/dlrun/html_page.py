"""A :class:`dlrun.document.Document` as one self-contained HTML page.

Self-contained means the file can be mailed, attached to an issue or opened from a
laptop's disk with no network: images are embedded as data URIs, the style sheet and
the script (``assets/page.css``, ``assets/page.js``, small vanilla code for sortable
tables, learning curves and the scatter view) are inlined, nothing is fetched from a
CDN. A viewport meta tag and tables that scroll sideways keep it readable on a phone.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from dlrun.document import (
    Block,
    Bullets,
    Cell,
    Curves,
    Document,
    Heading,
    Paragraph,
    Pictures,
    Scatter,
    Table,
    picture_title,
)

ASSETS = Path(__file__).resolve().parent / "assets"
_NUM = ' class="num"'
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}


@functools.cache
def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def to_html(doc: Document, base_dir: Path) -> str:
    """The page; pictures are read from ``base_dir`` (the folder the page is written to)."""
    body = "\n".join(_block(block, base_dir) for block in doc.blocks)
    title = html.escape(doc.title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>\n{asset('page.css')}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{_inline(doc.title)}</h1>\n{body}\n</main>\n"
        f"<script>\n{asset('page.js')}</script>\n</body>\n</html>\n"
    )


def write_page(doc: Document, path: Path) -> None:
    """Write the page next to its pictures, atomically (a reader never sees half)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_html(doc, path.parent), encoding="utf-8")
    tmp.replace(path)


def _block(block: Block, base: Path) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 2), 6)
        return f"<h{level}>{_inline(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        text = _inline(block.text)
        return f'<p class="lead"><strong>{text}</strong></p>' if block.strong else f"<p>{text}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block, base)
    if isinstance(block, Pictures):
        return "\n".join(_picture(base, p) for p in block.files)
    if isinstance(block, Curves):
        data = {"history": block.history, "monitor": block.monitor, "mode": block.mode}
        return f"<h2>{_inline(block.title)}</h2>\n" + _data_figure("curves", data)
    if isinstance(block, Scatter):
        data = {"points": block.points, "metric": block.metric, "params": block.params}
        return f"<h2>{_inline(block.title)}</h2>\n" + _data_figure("scatter", data)
    raise TypeError(f"unknown block {block!r}")


def _table(table: Table, base: Path) -> str:
    name = f' id="{html.escape(table.name)}"' if table.name else ""
    numeric = [
        any(_is_number(_sort_value(row[i])) for row in table.rows) for i in range(len(table.header))
    ]
    head = "".join(
        f'<th scope="col"{_NUM if num else ""}><button type="button">{html.escape(h)}</button></th>'
        for h, num in zip(table.header, numeric, strict=True)
    )
    rows = "\n".join(
        "<tr>" + "".join(_cell(c, base, n) for c, n in zip(row, numeric, strict=True)) + "</tr>"
        for row in table.rows
    )
    return (
        f'<div class="table-wrap"><table class="sortable"{name}>\n<thead><tr>{head}</tr>'
        f"</thead>\n<tbody>\n{rows}\n</tbody></table></div>"
    )


def _cell(cell: Cell | str, base: Path, numeric: bool) -> str:
    if isinstance(cell, str):
        cell = Cell(cell)
    text = html.escape(cell.text)
    if cell.href:
        text = f'<a href="{html.escape(page_link(cell.href, base))}">{text}</a>'
    align = _NUM if numeric else ""
    if cell.sort is None:
        return f"<td{align}>{text}</td>"
    if _is_number(cell.sort):
        return f'<td{align} data-sort="{cell.sort!r}" data-kind="num">{text}</td>'
    return f'<td{align} data-sort="{html.escape(str(cell.sort))}" data-kind="text">{text}</td>'


def _sort_value(cell: Cell | str) -> Any:
    return cell.sort if isinstance(cell, Cell) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def page_link(href: str, base: Path) -> str:
    """A link to another page: its HTML rendering where that exists beside the Markdown.

    Documents link to ``.md`` pages (the rendering every run has); the HTML page follows
    the link to the ``.html`` twin when it is there, so a reader stays in the browser.
    """
    if href.endswith(".md") and "://" not in href:
        twin = href[: -len(".md")] + ".html"
        if (base / twin).is_file():
            return twin
    return href


def _picture(base: Path, name: str) -> str:
    path = base / name
    alt = html.escape(picture_title(name))
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="missing">({alt}: {html.escape(name)} is missing)</p>'
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def _data_figure(kind: str, data: dict[str, Any]) -> str:
    """A placeholder the script fills in, with its data as JSON beside it.

    ``</`` is escaped so no value can close the script element early.
    """
    payload = json.dumps(_finite(data), allow_nan=False, default=str).replace("</", "<\\/")
    return (
        f'<figure class="{kind}" data-kind="{kind}">'
        f'<script type="application/json">{payload}</script>'
        f"<noscript>(the {kind} view needs JavaScript)</noscript></figure>"
    )


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no token for them."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _inline(text: str) -> str:
    """Escape ``text``, then turn ```code``` and ``**bold**`` into their elements."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
