"""``key=value`` arguments for the small companion commands (dlrun-eval, -generate).

They take the same ``key=value`` form as ``dlrun`` itself but need no config
composition, so they parse their few keys directly and answer ``--help`` instantly.
"""

from __future__ import annotations

import sys
from typing import Any


def parse_key_values(
    argv: list[str], defaults: dict[str, Any], usage: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Parse ``key=value`` pairs into ``defaults``' keys, converting to their types.

    Unknown keys, a value of the wrong type and missing required keys end the program
    with one message and the usage text (exit code 2).
    """
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    values = dict(defaults)
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or key not in defaults:
            _usage_error(f"unknown argument {arg!r}", usage)
        kind = type(defaults[key]) if defaults[key] is not None else str
        try:
            values[key] = None if raw.lower() in ("null", "none") else kind(raw)
        except ValueError:
            _usage_error(f"{key}={raw} is not a valid {kind.__name__}", usage)
    for key in required:
        if values.get(key) in (None, ""):
            _usage_error(f"{key}= is required", usage)
    return values


def _usage_error(message: str, usage: str) -> None:
    print(f"error: {message}\n\n{usage}", file=sys.stderr)
    sys.exit(2)
