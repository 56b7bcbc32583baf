"""How much of the run's CPU cores other work took while it trained, and what to say then.

torch's OpenMP threads meet at a barrier after every parallel op and spin while they
wait, so a run whose threads share their cores with other work slows down far more than
its share: two default runs started together on 2 cores took 51 s each, 5.4 s alone, 7.0 s
each on one thread (README, "Two CPU runs on the same cores"). dlrun never changes the
thread count by itself, since the count changes the order of floating-point sums and a
run must give the same numbers for the same seed whatever else the machine does. So it
measures and says: the busy time of the cores the process may run on (``/proc/stat``,
Linux), minus the process's own CPU time, over the training's wall time, is the number
of cores other work kept busy (``metrics.json``: ``train.other_cores_busy``); a streamed
run's DataLoader workers are processes of their own and count as other work, which
they are for the cores. When that is
half a core or more while torch used several threads, the run ends with one line that
names the fix. Elsewhere, or for training shorter than a second (the counters tick every
10 ms), nothing is measured.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

MIN_SECONDS = 1.0  # shorter training: too few clock ticks to tell
NOTE_AT = 0.5  # cores kept busy by other work, on average, that make the run say so
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal


@dataclass(frozen=True)
class CoreUse:
    """A reading: the run's cores' busy seconds (everyone's), this process's, the clock."""

    busy: float
    own: float
    clock: float

    @classmethod
    def now(cls) -> CoreUse | None:
        """The counters now; None where ``/proc/stat`` or CPU affinity is not available."""
        try:
            cpus = {f"cpu{n}" for n in os.sched_getaffinity(0)}
            with open("/proc/stat", encoding="ascii") as stat:
                rows = [line.split() for line in stat if line.startswith("cpu")]
            ticks = sum(int(row[1 + i]) for row in rows if row[0] in cpus for i in _BUSY_FIELDS)
        except (AttributeError, OSError, ValueError, IndexError):
            return None
        return cls(ticks / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter())

    def others_since(self, start: CoreUse | None) -> float | None:
        """Cores other work kept busy on average since ``start`` (None: not measured)."""
        if start is None or self.clock - start.clock < MIN_SECONDS:
            return None
        others = (self.busy - start.busy) - (self.own - start.own)
        return round(max(others, 0.0) / (self.clock - start.clock), 2)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_note(others: float | None, threads: int, cores: int) -> str | None:
    """The line a run ends with when other work shared its cores with several threads."""
    if others is None or others < NOTE_AT or threads < 2:
        return None
    return (
        f"note: other work kept {others:.1f} of the {cores} cores busy while this trained "
        f"(other programs, or this run's data-loading workers), and torch's {threads} threads "
        "wait on each other there: trainer.num_threads=1 (or fewer threads than free "
        "cores) is often several times faster on a busy machine"
    )
