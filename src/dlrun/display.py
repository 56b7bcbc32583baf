"""How numbers and tables look: one formatter and one console for every printed table.

Kept free of heavy imports (rich is imported when a console is made), so report.md,
the leaderboard and the CLI can share it at no start-up cost.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# Wide enough for any table dlrun prints; a log or a pipe has no width to respect.
UNWRAPPED_WIDTH = 1000


def make_console(**kwargs: Any) -> Console:
    """A rich Console for stdout that never wraps when stdout is not a terminal.

    rich falls back to 80 columns for a pipe or a CI log, which folds table rows and
    long lines; a file has no width, so lines are kept whole (rich still keeps colours
    out of non-terminals). An explicit ``width=`` wins.
    """
    from rich.console import Console

    console = Console(**kwargs)
    if not console.is_terminal and "width" not in kwargs and not os.environ.get("COLUMNS"):
        console = Console(width=UNWRAPPED_WIDTH, soft_wrap=True, **kwargs)
    return console


def number(value: Any, digits: int = 4, signed: bool = False) -> str:
    """A number for people: ``digits`` significant digits, fixed-point, no padding zeros.

    0.0125 -> ``0.0125`` (a learning rate), 0.98517 -> ``0.9852``, 60.1412 -> ``60.14``,
    61706 -> ``61706``, 61706.3 -> ``61706``, 3.2e-06 -> ``3.2e-06``. Integers are
    written whole, without thousands separators (CSV readers take them as numbers).
    ``None`` and NaN are ``n/a``; ``signed`` writes a ``+`` on positive values.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    plus = "+" if signed else ""
    if isinstance(value, int):
        return f"{value:{plus}d}"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value) or value == 0:
        return f"{value:{plus}g}"
    size = abs(value)
    if size >= 1e12 or size < 1e-4:
        return f"{value:{plus}.{digits}g}"
    decimals = max(digits - 1 - math.floor(math.log10(size)), 0)
    text = f"{value:{plus}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def interval(bounds: Any, digits: int = 4, signed: bool = False) -> str:
    """``[low, high]`` with :func:`number`; ``n/a`` when there is no interval."""
    if not bounds or any(b is None for b in bounds):
        return "n/a"
    low, high = bounds
    return f"[{number(low, digits, signed)}, {number(high, digits, signed)}]"
