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

``--stages RUN_DIR`` replays a finished run's messages (open, one log per history row,
gathered as the worker gathers a fast run's epochs, finish) into the worker's code in
this process, twice per logger (the first creates the store), and prints the CPU
seconds of each stage: warm-up imports (the first pass; while the run starts up), open
(at the first epoch), the epochs, finish (the wait at the end).
CPU seconds move far less with the machine's load than wall seconds (a loaded 2-core
machine still inflated them up to 3x), so this is the number to compare.

    python scripts/bench_logging.py [--repeats 5] [--loggers none mlflow tensorboard] [ARGS]
    python scripts/bench_logging.py --stages outputs/runs/<run> [--loggers mlflow tensorboard]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
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


def stages(run_dir: Path, logger: str, workdir: Path) -> dict[str, float]:
    """CPU seconds of the worker's stages for ``run_dir``'s messages, replayed in-process."""
    import yaml

    from dlrun.tracking import worker
    from dlrun.tracking.session import Session

    copy = workdir / run_dir.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tracking.json", "tensorboard"))
    config = yaml.safe_load((copy / ".hydra" / "config.yaml").read_text())
    times, last = {}, time.process_time()

    def mark(stage: str) -> None:
        nonlocal last
        times[stage], last = time.process_time() - last, time.process_time()

    worker.warm_up([logger])
    mark("warm-up")
    session = Session(cwd=workdir)
    session.open({"dir": str(copy), "kind": "run", "name": copy.name, "config": config,
                  "loggers": {logger: {"_target_": TRACKERS[logger]}}, "tags": {},
                  "parent": None})  # fmt: skip
    mark("open")
    epochs = worker.Epochs(session)  # as a fast run's: the first alone, the rest gathered
    with (copy / "history.csv").open() as fh:
        for row in csv.DictReader(fh):
            values = {k: float(v) for k, v in row.items() if v}
            epochs.add({"dir": str(copy), "step": int(row["epoch"]), "row": values})
    epochs.flush()
    mark("epochs")
    session.finish({"dir": str(copy)})
    mark("finish")
    return times


TRACKERS = {
    "mlflow": "dlrun.tracking.mlflow_tracker.MLflowTracker",
    "tensorboard": "dlrun.tracking.tensorboard_tracker.TensorBoardTracker",
    "wandb": "dlrun.tracking.wandb_tracker.WandbTracker",
}


def print_stages(run_dir: Path, loggers: list[str]) -> None:
    print("| logger | warm-up imports | open | epochs | finish | beside training + end |")
    print("| --- | --- | --- | --- | --- | --- |")
    for logger in [name for name in loggers if name in TRACKERS]:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)  # MLflow's default store is ./mlflow.db
            first = stages(run_dir, logger, Path(tmp))  # imports, and creates the store
            cpu = {**stages(run_dir, logger, Path(tmp)), "warm-up": first["warm-up"]}
        late = cpu["open"] + cpu["epochs"] + cpu["finish"]
        cells = " | ".join(f"{cpu[k]:.2f} s" for k in ("warm-up", "open", "epochs", "finish"))
        print(f"| {logger} | {cells} | {late:.2f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loggers", nargs="+", default=["none", "mlflow", "tensorboard"])
    parser.add_argument("--stages", type=Path, help="a finished run dir: CPU by stage")
    args, extra = parser.parse_known_args()
    if args.stages:
        print_stages(args.stages.resolve(), args.loggers)
        return
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
