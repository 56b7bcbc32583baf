"""Whole-process timings: what a user waits for, from typing the command to the prompt.

`make bench` runs this after the trainer-overhead table. Each command runs as its own
process, like a user's, repeated and alternated (dlrun, peer, dlrun, peer, ...) so both
sides see the same machine state; the table gives the median wall time and the median
CPU time (user + sys of the process and its children). On a machine shared with other
work the wall times grow and the CPU times much less: compare ratios taken in the same
run, and read the CPU column when the load average is above the core count.

- ``dlrun --help``                       goal <= 0.5 s
- a one-batch run end to end             goal <= 3.0 s
- the default run (LeNet-5, digits, 20 epochs) against scripts/lightning_peer.py, the same
  experiment written by hand with Lightning            goal <= 0.8x the peer's wall time
- evaluation + plots + report of the default run (``eval_seconds`` in metrics.json)
                                         goal <= 0.5 s
- the import time of a one-batch run (``python -X importtime``), by top-level package

    python scripts/bench_startup.py [--repeats 3] [--skip-default] [--top 12]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["trainer.progress=none"]
ONE_BATCH = ["trainer.epochs=1", "trainer.limit_batches=1", *QUIET]


def timed(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one process (its children included), and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"bench_startup: {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def dlrun(*overrides: str, outputs: Path) -> list[str]:
    return [sys.executable, "-m", "dlrun.cli", *overrides, f"paths.outputs={outputs}"]


def eval_seconds(outputs: Path) -> float:
    """``eval_seconds`` of the newest run under ``outputs``."""
    newest = max((outputs / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return float(json.loads((newest / "metrics.json").read_text())["eval_seconds"])


def has_lightning() -> bool:
    probe = [sys.executable, "-c", "import lightning"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def measure(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[float, float]]]:
    """Every row's (wall, cpu) samples, commands alternated within each repeat."""
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    evals: list[float] = []
    peer = has_lightning() and not args.skip_default
    timed(dlrun(*ONE_BATCH, outputs=work / "warm"), work)  # fills the dataset cache
    for _ in range(args.repeats):
        rows["dlrun --help"].append(timed([*dlrun("--help", outputs=work)], work)[:2])
        rows["one-batch run"].append(timed(dlrun(*ONE_BATCH, outputs=work / "one"), work)[:2])
        if args.skip_default:
            continue
        rows["default run"].append(timed(dlrun(*QUIET, outputs=work / "full"), work)[:2])
        evals.append(eval_seconds(work / "full"))
        if peer:
            script = [sys.executable, str(ROOT / "scripts/lightning_peer.py")]
            rows["lightning peer"].append(timed([*script, "--out", str(work / "peer")], work)[:2])
    if evals:
        rows["eval + plots + report"] = [(s, float("nan")) for s in evals]
    if not peer and not args.skip_default:
        print("lightning is not installed: the peer row is left out (pip install lightning)")
    return rows


GOALS = {
    "dlrun --help": "<= 0.5 s",
    "one-batch run": "<= 3.0 s",
    "default run": "<= 0.8x peer",
    "eval + plots + report": "<= 0.5 s",
}


def report(rows: dict[str, list[tuple[float, float]]]) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':24} {'wall s':>8} {'cpu s':>8}  goal")
    medians = {}
    for name, samples in rows.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        medians[name] = (wall, cpu)
        print(f"{name:24} {wall:8.2f} {cpu:8.2f}  {GOALS.get(name, '')}")
    if "default run" in medians and "lightning peer" in medians:
        wall = medians["default run"][0] / medians["lightning peer"][0]
        cpu = medians["default run"][1] / medians["lightning peer"][1]
        print(f"{'default / peer':24} {wall:7.2f}x {cpu:7.2f}x  <= 0.8x")


def import_profile(work: Path, top: int) -> None:
    """The one-batch run's import time by top-level package (each module's own time)."""
    argv = [sys.executable, "-X", "importtime", *dlrun(*ONE_BATCH, outputs=work / "prof")[1:]]
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    totals: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        totals[parts[2].strip().split(".")[0]] += int(parts[0]) / 1e6
    print(f"\nimports of a one-batch run: {sum(totals.values()):.2f} s; by package (top {top}):")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:28} {seconds:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-default", action="store_true", help="no default run, no peer")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        work = Path(tmp)
        report(measure(args, work))
        import_profile(work, args.top)


if __name__ == "__main__":
    main()
