"""What a tracker adds to a default run's wall time (README, "Experiment tracking").

Runs the default experiment (``dlrun``: LeNet-5 on digits, 20 epochs) as a user would,
alternating the loggers so a slow spell of a shared machine hits them alike, and prints
the median wall time of each and its overhead over ``logger=none``. MLflow logs to its
local store (a SQLite file made once, before the timed runs, as a user's would exist
after their first run).

    python scripts/bench_logging.py [--repeats 5] [--loggers none mlflow tensorboard] [ARGS]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(logger: str, workdir: Path, extra: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the run and its tracking worker together."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dlrun.cli", f"logger={logger}", "trainer.progress=none", *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"logger={logger} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loggers", nargs="+", default=["none", "mlflow", "tensorboard"])
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for logger in args.loggers:  # warm-up: caches, and MLflow's store created once
            run(logger, workdir, [*extra, "trainer.epochs=1", "trainer.limit_batches=1"])
        times: dict[str, list[float]] = {name: [] for name in args.loggers}
        cpus: dict[str, list[float]] = {name: [] for name in args.loggers}
        for i in range(args.repeats):
            for logger in args.loggers:
                wall, cpu = run(logger, workdir, extra)
                times[logger].append(wall)
                cpus[logger].append(cpu)
                print(f"repeat {i + 1}: logger={logger} {wall:.2f} s ({cpu:.1f} s CPU)", flush=True)
    base = statistics.median(times[args.loggers[0]])
    base_cpu = statistics.median(cpus[args.loggers[0]])
    print(
        f"\n| logger | median wall s | vs {args.loggers[0]} | median CPU s | vs "
        f"{args.loggers[0]} | wall of each run |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for logger, values in times.items():
        median, cpu = statistics.median(values), statistics.median(cpus[logger])
        print(
            f"| {logger} | {median:.2f} | {100 * (median - base) / base:+.1f}% | {cpu:.1f} | "
            f"{cpu - base_cpu:+.1f} s | {', '.join(f'{v:.1f}' for v in values)} |"
        )


if __name__ == "__main__":
    main()
