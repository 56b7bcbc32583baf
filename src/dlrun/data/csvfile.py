"""A user's CSV file as named string columns, with errors that say what to fix.

Read with the standard library's ``csv`` module: pandas is not a dependency, and a
column of strings is all the tabular and series loaders need before they decide what
is numeric. Cells such as ``""``, ``NA`` or ``?`` count as missing.

The delimiter is detected (``data.delimiter=auto``): of comma, semicolon, tab and
pipe, the one that cuts the header and the first rows into the same number of cells,
the most cells winning. Files that use semicolons or tabs often write decimals with a
comma (``3,14``, spreadsheets in many locales); such a column is read as numbers when
every value in it has that shape. Column names are text, so ``data.target=2010`` (which
Hydra reads as the number 2010) finds the column named ``2010``. An infinite value
(``inf``, ``1e999``) is refused with its column and row: no statistic or model can use it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import UserError

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
DELIMITERS = (",", ";", "\t", "|")
ALIASES = {"auto": "auto", "tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
SNIFF_CHARS = 65536  # the part of the file the delimiter is detected from
_DECIMAL_COMMA = re.compile(r"[+-]?\d+(,\d+)?([eE][+-]?\d+)?")


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING


@dataclass(frozen=True)
class CsvTable:
    """The header and the cells of a CSV file, column by column."""

    path: Path
    header: tuple[str, ...]
    columns: dict[str, list[str]]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: Any, param: str) -> list[str]:
        """The cells of column ``name``; ``param`` is the config key that named it.

        A name Hydra parsed as a number (``data.target=2010``) is looked up as text.
        """
        if str(name) not in self.columns:
            raise UserError(
                f"Column {str(name)!r} (data.{param}) is not in {self.path}; its "
                f"columns are: {', '.join(self.header)}."
            )
        return self.columns[str(name)]

    def numeric(self, name: Any, param: str) -> np.ndarray:
        """Column ``name`` as float64 with NaN for missing cells; UserError if not numbers."""
        cells = self.column(name, param)
        values = to_numbers(cells)
        if values is None:
            row, cell = next((i, c) for i, c in enumerate(cells) if _number(c) is None)
            raise UserError(
                f"Column {str(name)!r} of {self.path} must hold numbers, but data "
                f"row {row + 1} has {cell!r}."
            )
        self.check_finite(name, values)
        return values

    def check_finite(self, name: Any, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Refuse an infinite value, naming its column and data row (1 = first data row).

        ``rows`` maps ``values`` back to data rows when they are a subset of the column.
        """
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            row = int(bad[0] if rows is None else rows[bad[0]])
            cell = self.columns[str(name)][row]
            raise UserError(
                f"Column {str(name)!r} of {self.path} has an infinite value {cell!r} in "
                f"data row {row + 1} (line {row + 2}); use a finite number, or leave "
                "the cell empty to mark it missing."
            )


def to_numbers(cells: list[str]) -> np.ndarray | None:
    """The cells as float64 (NaN where missing), or None if any cell is not a number."""
    values = [_number(cell) for cell in cells]
    return None if any(v is None for v in values) else np.array(values, dtype=np.float64)


def _number(cell: str) -> float | None:
    if is_missing(cell):
        return float("nan")
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv(path: str | None, delimiter: str = "auto") -> CsvTable:
    """Read ``path`` (with a header row); ``None`` or a missing file raises UserError.

    ``delimiter`` is one character, ``auto`` (detect), or ``tab``/``\\t``, ``comma``,
    ``semicolon``, ``pipe``.
    """
    if path is None:
        raise UserError("This dataset reads a CSV file: set data.path=/path/to/file.csv.")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"CSV file not found: {file} (set data.path to an existing file).")
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as err:
        raise UserError(f"{file} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    delimiter = ALIASES.get(str(delimiter), str(delimiter))
    if delimiter == "auto":
        delimiter = detect_delimiter(text[:SNIFF_CHARS], truncated=len(text) > SNIFF_CHARS)
    rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]
    if len(rows) < 2:
        raise UserError(f"{file} needs a header row and at least one data row.")
    header = tuple(name.strip() for name in rows[0])
    if len(set(header)) != len(header):
        duplicates = sorted({h for h in header if header.count(h) > 1})
        raise UserError(f"{file} has duplicate column names: {', '.join(duplicates)}.")
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise UserError(
                f"{file} data row {number} has {len(row)} cells but the header has "
                f"{len(header)} (is data.delimiter={delimiter!r} right?)."
            )
    columns = {name: [row[i] for row in rows[1:]] for i, name in enumerate(header)}
    if delimiter != ",":
        columns = {name: _decimal_points(cells) for name, cells in columns.items()}
    return CsvTable(file, header, columns)


def detect_delimiter(sample: str, truncated: bool = False) -> str:
    """The delimiter that splits the header and every sampled row alike, into most cells.

    A comma when none splits the header into more than one cell consistently (a
    one-column file, or a ragged one: the row-length error then names the problem).
    """
    best, widest = ",", 1
    for candidate in DELIMITERS:
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=candidate)
        rows = [row for row in reader if row]
        if truncated:
            rows = rows[:-1]  # the last row may be cut off mid-way
        width = len(rows[0]) if rows else 0
        if width > widest and all(len(row) == width for row in rows):
            best, widest = candidate, width
    return best


def _decimal_points(cells: list[str]) -> list[str]:
    """``3,14`` -> ``3.14`` when every value of the column is a decimal-comma number."""
    values = [c.strip() for c in cells if not is_missing(c)]
    if not any("," in v for v in values) or not all(_DECIMAL_COMMA.fullmatch(v) for v in values):
        return cells
    return [c.replace(",", ".") for c in cells]
