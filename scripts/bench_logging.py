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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(logger: str, workdir: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dlrun.cli", f"logger={logger}", "trainer.progress=none", *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"logger={logger} failed:\n{done.stderr[-2000:]}")
    return elapsed


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
        for i in range(args.repeats):
            for logger in args.loggers:
                times[logger].append(run(logger, workdir, extra))
                print(f"repeat {i + 1}: logger={logger} {times[logger][-1]:.2f} s", flush=True)
    base = statistics.median(times[args.loggers[0]])
    print(f"\n| logger | median wall s | overhead vs {args.loggers[0]} | runs |")
    print("| --- | --- | --- | --- |")
    for logger, values in times.items():
        median = statistics.median(values)
        print(
            f"| {logger} | {median:.2f} | {100 * (median - base) / base:+.1f}% | "
            f"{', '.join(f'{v:.1f}' for v in values)} |"
        )


if __name__ == "__main__":
    main()
