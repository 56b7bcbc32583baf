"""Draw a run's pictures on two cores: part of them in a forked child, the rest here.

Drawing is most of a small run's evaluation (0.1-0.3 s a picture on matplotlib's Agg
canvas, about 1 s for the default run's six), and the user waits for all of it.
matplotlib holds the GIL while it draws, so threads would not help; a forked child
does: it starts in milliseconds with everything already in memory (the arrays,
matplotlib and its font cache), so nothing is pickled or imported again. PyTorch's
DataLoader forks its workers from the same kind of process.

The child runs torch on one thread only (the parent's OpenMP pool is not usable after a
fork, as in DataLoader workers), resets the signal handlers the run installed (an
interrupt must not make it write the run's status), leaves with ``os._exit`` (no
atexit handlers, no second flush of the parent's buffers) and reports a failure
through a pipe, so a picture that cannot be drawn fails the run as it would have here.
Where fork is not available or only one core is free, everything is drawn here in turn.

While a child draws, this process runs torch on the cores left over (:func:`_share_cores`):
OpenMP's threads wait for each other at the end of every parallel region, so a thread
that shares its core with a drawing child makes each op as slow as itself. Measured on 2
cores: a LeNet-5 forward pass over 256 digits takes 10 ms alone, 75-90 ms on two threads
beside a busy core, 11-17 ms on one thread. The evaluation computes every number before
it draws anything, though: a forward pass on fewer threads sums in another order, and a
run's metrics must be what ``dlrun-eval`` computes again.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dlrun.process_exit import flush_streams

Job = Callable[[], None]

_drawing = 0  # forked children drawing now
_threads = 0  # torch's threads in this process before the first of them started


@dataclass
class Pending:
    """Jobs running in a forked child; :meth:`wait` before reading what they write."""

    pid: int
    reader: int

    def wait(self, *, raise_failure: bool = True) -> None:
        """Block until the child is done; raise what failed there, if anything did (not
        with ``raise_failure`` off: the caller is already raising its own error)."""
        with os.fdopen(self.reader, "rb") as pipe:
            failure = pipe.read().decode(errors="replace").strip()
        _, status = os.waitpid(self.pid, 0)
        _share_cores(-1)
        code = os.waitstatus_to_exitcode(status)
        if raise_failure and (failure or code != 0):
            raise RuntimeError(f"drawing the pictures failed: {failure or f'exit code {code}'}")


def can_fork() -> bool:
    """Whether jobs can run in a forked child on a core of their own (Linux, 2+ cores)."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        return False
    return len(os.sched_getaffinity(0)) >= 2


def start(jobs: Sequence[Job]) -> Pending | None:
    """Run ``jobs`` in a forked child; None (and the jobs run here, now) if it can't fork."""
    if not jobs:
        return None
    if not can_fork():
        _run(jobs)
        return None
    flush_streams()  # else the child would write the parent's buffered output again
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(reader)
        _child(jobs, writer)
    os.close(writer)
    _share_cores(+1)
    return Pending(pid, reader)


def _share_cores(change: int) -> None:
    """Count a drawing child in (+1) or out (-1); run torch here on the cores it leaves.

    torch keeps the thread count it had (the user's ``trainer.num_threads``) where that
    many cores are free, and gets it back when the last child is done.
    """
    global _drawing, _threads
    torch = sys.modules.get("torch")
    if torch is not None and _drawing == 0:
        _threads = torch.get_num_threads()
    _drawing += change
    if torch is None:
        return
    free = len(os.sched_getaffinity(0)) - _drawing
    torch.set_num_threads(max(1, min(_threads, free)) if _drawing else _threads)


def draw(jobs: Sequence[tuple[float, Job]]) -> None:
    """Run the ``(cost, job)`` pairs split in two shares of about equal cost: one in a
    forked child, one here; return when both are done."""
    here: list[Job] = []
    there: list[Job] = []
    loads = [0.0, 0.0]
    for cost, job in sorted(jobs, key=lambda pair: -pair[0]):  # longest first, to the lighter
        side = 0 if loads[0] <= loads[1] else 1
        loads[side] += cost
        (here if side == 0 else there).append(job)
    pending = start(there)
    try:
        _run(here)
    except BaseException:  # Ctrl-C or a failure here: reap the child, raise this one
        if pending is not None:
            pending.wait(raise_failure=False)
        raise
    if pending is not None:
        pending.wait()


def _run(jobs: Sequence[Job]) -> None:
    for job in jobs:
        job()


def _child(jobs: Sequence[Job], writer: int) -> None:
    """Run ``jobs`` and leave; never return into the parent's code."""
    code = 0
    try:
        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        torch = sys.modules.get("torch")
        if torch is not None:  # the parent's OpenMP pool did not survive the fork
            torch.set_num_threads(1)
        _run(jobs)
    except BaseException:  # everything goes back to the parent, which raises it
        code = 1
        os.write(writer, traceback.format_exc(limit=-3).encode())
    finally:
        os.close(writer)
        os._exit(code)
