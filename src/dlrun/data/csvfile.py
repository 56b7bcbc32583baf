"""A user's CSV file as named string columns, with errors that say what to fix.

Read with the standard library's ``csv`` module: pandas is not a dependency, and a
column of strings is all the tabular and series loaders need before they decide what
is numeric. Cells such as ``""``, ``NA`` or ``?`` count as missing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun.errors import UserError

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


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

    def column(self, name: str, param: str) -> list[str]:
        """The cells of column ``name``; ``param`` is the config key that named it."""
        if name not in self.columns:
            raise UserError(
                f"Column {name!r} (data.{param}) is not in {self.path}; its "
                f"columns are: {', '.join(self.header)}."
            )
        return self.columns[name]

    def numeric(self, name: str, param: str) -> np.ndarray:
        """Column ``name`` as float64 with NaN for missing cells; UserError if not numbers."""
        cells = self.column(name, param)
        values = to_numbers(cells)
        if values is None:
            row, cell = next((i, c) for i, c in enumerate(cells) if _number(c) is None)
            raise UserError(
                f"Column {name!r} of {self.path} must hold numbers, but data "
                f"row {row + 1} has {cell!r}."
            )
        return values


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


def read_csv(path: str | None, delimiter: str = ",") -> CsvTable:
    """Read ``path`` (with a header row); ``None`` or a missing file raises UserError."""
    if path is None:
        raise UserError("This dataset reads a CSV file: set data.path=/path/to/file.csv.")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"CSV file not found: {file} (set data.path to an existing file).")
    with file.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
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
    return CsvTable(file, header, columns)
