"""``key=value`` arguments for the small companion commands (dlrun-eval, -generate).

They take the same ``key=value`` form as ``dlrun`` itself but need no config
composition, so they parse their few keys directly and answer ``--help`` instantly.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlrun.errors import UserError

# The arguments of every command that reads a saved run's model and scores or predicts
# with it (dlrun-eval, dlrun-predict): one place, so they keep one meaning and default.
SAVED_RUN_DEFAULTS: dict[str, Any] = {
    "run": "",
    "out": "",
    "ckpt": "best",
    "threshold": None,  # None: the run's own eval.threshold
    "device": "auto",
    "batch_size": 256,
}
SAVED_RUN_KINDS: dict[str, type] = {"threshold": float}


def parse_key_values(
    argv: list[str],
    defaults: dict[str, Any],
    usage: str,
    required: tuple[str, ...] = (),
    kinds: dict[str, type] | None = None,
    prog: str = "dlrun",
) -> dict[str, Any]:
    """Parse ``key=value`` pairs into ``defaults``' keys, converting to their types.

    A key's type is ``kinds[key]``, else the type of its default (``str`` for None).
    Unknown keys (with the closest known one), a value of the wrong type and missing
    required keys end the program with one line on stderr and exit code 2.
    """
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    values = dict(defaults)
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f": did you mean {close[0]}={raw}?" if close and sep else ""
            _usage_error(prog, f"unknown argument {arg!r}{hint}")
        kind = (kinds or {}).get(key) or (type(defaults[key]) if defaults[key] is not None else str)
        try:
            values[key] = None if raw.lower() in ("null", "none") else kind(raw)
        except ValueError:
            _usage_error(prog, f"{key}={raw} is not a valid {kind.__name__}")
    for key in required:
        if values.get(key) in (None, ""):
            _usage_error(prog, f"{key}= is required")
    return values


def boolean(text: str) -> bool:
    """``true``/``false`` (also ``yes``/``no``, ``1``/``0``) as a bool; a ``kinds`` type."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in value:
        raise ValueError(text)
    return value[text.lower()]


boolean.__name__ = "boolean (true or false)"


def _usage_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message} ({prog} --help shows the usage)", file=sys.stderr)
    sys.exit(2)


@contextmanager
def errors_reported(prog: str) -> Iterator[None]:
    """A :class:`UserError` as one line on stderr and its ``exit_code`` (2 unless it
    says otherwise: usage and refused input); Ctrl-C as one line and 130; a write the
    machine refused (read-only folder, full disk) as one line and 1."""
    try:
        yield
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a write the machine refused (read-only, full): 1, one line
        from dlrun.errors import os_error_line, write_error

        refused = write_error(exc)
        if refused is None:
            raise  # anything else is a bug: keep its traceback
        print(f"{prog}: error: {os_error_line(refused, elsewhere='out=<dir>')}", file=sys.stderr)
        sys.exit(1)
