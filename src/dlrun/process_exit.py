"""End a command's process without the interpreter's teardown.

When a command is done, Python tears down every module it imported before the process
ends: for torch, torchmetrics, SciPy and matplotlib that is ~0.5 s of CPU on 2 cores,
a sixth of a one-batch run, spent after the last line is printed, and paid again by
every ``dlrun`` a script, a sweep launcher or the test suite starts. Nothing a user
keeps depends on it: dlrun writes its files inside ``with`` blocks, and what must run
at exit is registered with :mod:`atexit` (logging's flush and close, multiprocessing's
finalizers, the trackers' own handlers). So the exit handlers run, the standard streams
are flushed, and the process ends with ``os._exit``. A thread that is not a daemon and
is still running gets the normal exit, which waits for it.

Only the console scripts (and ``python -m``) end this way; ``main()`` called as a
function keeps raising :class:`SystemExit`, so a caller's ``finally`` still runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader left


def run(main: Callable[[], Any]) -> None:
    """Call ``main`` as a console script would (its return value or ``SystemExit`` code
    is the exit status), then end the process with :func:`exit_now`."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    except BrokenPipeError:  # the reader left (``dlrun --help | head``): nothing to add
        code = BROKEN_PIPE
    if code is None or isinstance(code, int):  # a message (str) is sys.exit's to print
        exit_now(code or 0)
    sys.exit(code)


def exit_now(code: int) -> None:
    """Run the exit handlers, flush and end the process with ``code``; return instead if
    a thread that is not a daemon is still running (the normal exit waits for it)."""
    flush_streams()
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    flush_streams()
    os._exit(code)


def flush_streams() -> None:
    """Flush stdout and stderr, ignoring a closed or broken one: what a process must do
    before it forks or ends with ``os._exit`` (neither flushes Python's buffers)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed or broken (a pipe that went away)
            stream.flush()
