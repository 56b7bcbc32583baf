"""What a tracker adds to a default run's wall time (README, "Experiment tracking").

Runs the default experiment (``dlrun``: LeNet-5 on digits, 20 epochs) as a user would,
alternating the loggers so a slow spell of a shared machine hits them alike, and prints
the median of each logger's

* wall time of the whole command;
* training time (the run's own "trained N epochs in X s"): what the tracking worker's
  CPU use, beside training, costs it;
* tail: from the run's last line ("run directory: ...") to the end of the command, which
  is where dlrun waits for the trackers to finish logging;
* CPU: the CPU seconds of the command and its tracking worker together. This is the
  number a busy machine does not blur: what the tracker costs in CPU is an upper bound
  on what it can add to the wall time of a run on a single free core.

On a shared machine the wall times of identical runs spread widely; the training time,
the tail and the CPU time say where a difference comes from. MLflow logs to its local store (a
SQLite file made once, before the timed runs, as after a user's first run).

    python scripts/bench_logging.py [--repeats 5] [--loggers none mlflow tensorboard] [ARGS]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINED = re.compile(r"trained \d+ epochs in ([\d.]+)s")


def run(logger: str, workdir: Path, extra: list[str]) -> tuple[float, float, float, float]:
    """Wall seconds, training seconds, the tail after the run's last line, CPU seconds."""
    command = [sys.executable, "-m", "dlrun.cli", f"logger={logger}", "trainer.progress=none"]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, *extra], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    train, last_line, lines = float("nan"), started, []
    for line in proc.stdout:
        lines.append(line)
        found = TRAINED.search(line)
        if found:
            train = float(found[1])
        if line.startswith("run directory:"):
            last_line = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)  # the worker's CPU is in the run's (it reaps it)
    ended = time.perf_counter()
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"logger={logger} failed:\n{''.join(lines[-30:])}")
    return ended - started, train, ended - last_line, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loggers", nargs="+", default=["none", "mlflow", "tensorboard"])
    args, extra = parser.parse_known_args()
    results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in args.loggers}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for logger in args.loggers:  # warm-up: caches, and MLflow's store created once
            run(logger, workdir, [*extra, "trainer.epochs=1", "trainer.limit_batches=1"])
        for i in range(args.repeats):
            for logger in args.loggers:
                results[logger].append(run(logger, workdir, extra))
                wall, train, tail, cpu = results[logger][-1]
                print(f"repeat {i + 1}: logger={logger} wall {wall:.1f} s, training "
                      f"{train:.1f} s, tail {tail:.2f} s, CPU {cpu:.1f} s", flush=True)  # fmt: skip
    base = [statistics.median(v) for v in zip(*results[args.loggers[0]], strict=True)]
    first = args.loggers[0]
    print(f"\n| logger | wall s (median) | training s | tail s | CPU s | wall vs {first} "
          f"| CPU vs {first} |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for logger, values in results.items():
        wall, train, tail, cpu = (statistics.median(v) for v in zip(*values, strict=True))
        print(f"| {logger} | {wall:.1f} | {train:.1f} | {tail:.2f} | {cpu:.1f} | "
              f"{100 * (wall - base[0]) / base[0]:+.1f}% | "
              f"{100 * (cpu - base[3]) / base[3]:+.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
