"""The run directory: claiming it, recording what state a run is in, and cleaning up.

Two promises live here. *Nothing a user had is touched*: this process remembers every
directory it created and what an existing directory held before the run, so a refused
run removes exactly what it wrote and nothing else. *A run says whether it is alive*:
``status.json`` carries the pid, host and start time of the process and a heartbeat, so
a reader can tell a run that is still training from one killed with ``kill -9``.

Kept free of torch (and of Hydra) so the CLI can use it before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# A run on another host counts as dead when its heartbeat is older than this. Training
# beats every epoch and at least every HEARTBEAT_S; evaluation of a large test split does
# not beat, hence the wide margin.
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
# Files of a run dir that belong to the run as a whole rather than to one evaluation.
_RUN_FILES = frozenset({"status.json", "history.csv", "train.log"})

_claimed: dict[str, str] = {}
_created: set[Path] = set()  # directories this process created (absolute)
_run_dirs: list[Path] = []  # run dirs this process claimed or was pointed at


@dataclass
class _Before:
    """What an existing directory held before this process used it."""

    names: set[str]
    hydra_files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # bytes, mtime


_before: dict[Path, _Before] = {}


# ------------------------------------------------------------------ creating dirs
def make_dirs(path: Path) -> None:
    """``mkdir -p`` that remembers each directory it created (see :func:`discard`)."""
    path = Path(os.path.abspath(path))
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # a concurrent run made it: not ours
        _created.add(directory)


def claim_unique_dir(path: str) -> str:
    """Create ``path`` (or ``path_1``, ``path_2``, ...) atomically and return its name.

    Two runs started in the same second would otherwise share a timestamped directory;
    ``os.mkdir`` fails for the loser of the race, which then takes the next suffix. The
    answer is memoised because Hydra resolves ``hydra.run.dir`` more than once per run.
    An unwritable output folder ends the program with one line (Hydra would print a
    traceback for an error raised inside a config resolver).
    """
    if path in _claimed:
        return _claimed[path]
    try:
        make_dirs(Path(path).parent)
        candidate, n = path, 0
        while True:
            try:
                os.mkdir(candidate)
                break
            except FileExistsError:
                n += 1
                candidate = f"{path}_{n}"
    except OSError as exc:
        from dlrun.errors import os_error_line

        print(f"dlrun: error: {os_error_line(exc, Path(path).parent)}", file=sys.stderr)
        raise SystemExit(1) from None
    _created.add(Path(os.path.abspath(candidate)))
    note_run_dir(Path(candidate))
    _claimed[path] = candidate
    return candidate


def claim_new_dir(out: str | Path, parent: Path, label: str) -> Path:
    """A new, empty folder for a command's results, so nothing earlier is overwritten:
    ``out`` (a folder that does not exist yet, or is empty) when given, else
    ``parent/label``, then ``label_2``, ``label_3``... when taken."""
    from dlrun.errors import UserError

    if out:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"out={path} already holds files; choose a new folder")
        path.mkdir(parents=True, exist_ok=True)
        return path
    n = 1
    while True:
        path = parent / (label if n == 1 else f"{label}_{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1


@contextmanager
def new_output_dir(out: str | Path, parent: Path, label: str) -> Iterator[Path]:
    """:func:`claim_new_dir`, removed again if the command fails inside: a refused
    export or ensemble leaves nothing half-written (an empty ``out`` folder the user
    gave stays, emptied)."""
    given = bool(out) and Path(out).is_dir()
    path = claim_new_dir(out, parent, label)
    try:
        yield path
    except BaseException:
        children = list(path.iterdir()) if given else [path]
        for child in children:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise


def note_run_dir(run_dir: Path) -> None:
    """Remember the run dir of this process (see :func:`mark_unfinished_runs`)."""
    _run_dirs.append(Path(os.path.abspath(run_dir)))


def mark_unfinished_runs(reason: str) -> None:
    """Write status ``interrupted`` into this process's run dirs that have no status yet:
    a Ctrl-C after Hydra made the run dir but before the run itself began."""
    for run_dir in _run_dirs:
        if run_dir.is_dir() and read_status(run_dir) is None:
            with contextlib.suppress(OSError):
                write_status(run_dir, "interrupted", reason=reason, **process_identity())


def note_missing(path: Path) -> None:
    """Record ``path`` and its missing parents as this process's, before another part of
    the program (Hydra's sweeper) creates them, so :func:`discard` may remove them."""
    path = Path(os.path.abspath(path))
    _created.update(p for p in [path, *path.parents] if not p.exists())


def created_here(path: Path) -> bool:
    """Whether this process created ``path`` (so it may remove it)."""
    return Path(os.path.abspath(path)) in _created


def note_existing(run_dir: Path) -> None:
    """Remember what an existing directory holds before this run writes into it."""
    run_dir = Path(os.path.abspath(run_dir))
    if not run_dir.is_dir() or run_dir in _created:
        return
    hydra = run_dir / ".hydra"
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in hydra.glob("*") if p.is_file()}
    _before[run_dir] = _Before({p.name for p in run_dir.iterdir()}, files)


def discard(run_dir: Path) -> None:
    """Undo what this process wrote into ``run_dir`` for a run that never started.

    A directory this process created goes entirely, with any empty parents it created.
    An existing one (the user's empty folder, a run being resumed) loses only the entries
    that appeared since :func:`note_existing`, and gets its previous ``.hydra/`` back.
    A directory this process knows nothing about is left alone.
    """
    run_dir = Path(os.path.abspath(run_dir))
    if run_dir in _created:
        shutil.rmtree(run_dir, ignore_errors=True)
        _created.discard(run_dir)
        for parent in run_dir.parents:
            if parent not in _created or (parent.is_dir() and any(parent.iterdir())):
                break
            with contextlib.suppress(FileNotFoundError):
                parent.rmdir()
            _created.discard(parent)
        return
    before = _before.get(run_dir)
    if before is None or not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if entry.name not in before.names:
            _remove(entry)
    if before.hydra_files:
        hydra = run_dir / ".hydra"
        for entry in hydra.iterdir():
            if entry.name not in before.hydra_files:
                _remove(entry)
        for name, (data, mtime) in before.hydra_files.items():
            (hydra / name).write_bytes(data)
            os.utime(hydra / name, ns=(mtime, mtime))


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


# ------------------------------------------------------------------ status.json
def now_iso() -> str:
    """Local time with its UTC offset, to the second: readable and comparable."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def process_identity() -> dict[str, Any]:
    """``pid``, ``hostname`` and ``started_at`` of this process's attempt at a run."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(), "started_at": now_iso()}


def write_status(run_dir: Path, status: str, reason: str = "", **extra: Any) -> None:
    """Write ``status.json`` atomically; every write is also a heartbeat.

    Fields: ``status`` (running, completed, interrupted, failed, pruned), ``reason``,
    ``epoch`` (epochs completed *and checkpointed*), ``pid``, ``hostname``,
    ``started_at`` (this attempt), ``heartbeat`` (this write), plus ``extra``.
    ``epoch`` and the process fields default to the previous ``status.json``, which the
    training process rewrites after every checkpoint; so a run that fails while writing
    an epoch reports the last epoch that ``last.pt`` really holds. Without a previous
    status, ``epoch`` counts the rows of ``history.csv``.
    """
    carried = ("epoch", "pid", "hostname", "started_at")
    previous = {} if all(k in extra for k in carried) else read_status(run_dir) or {}
    payload: dict[str, Any] = {"status": status, "reason": reason}
    epoch = extra.pop("epoch", previous.get("epoch"))
    payload["epoch"] = _epochs_done(run_dir) if epoch is None else epoch
    for key in ("pid", "hostname", "started_at"):
        value = extra.pop(key, previous.get(key))
        if value is not None:
            payload[key] = value
    payload["heartbeat"] = now_iso()
    payload.update(extra)
    write_json(run_dir / "status.json", payload)


def _epochs_done(run_dir: Path) -> int:
    history = run_dir / "history.csv"
    if not history.is_file():
        return 0
    return max(0, len(history.read_text().splitlines()) - 1)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is none, it is unreadable or it
    holds something else: files in a run dir may be half-written or not dlrun's."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_json_dict(path: Path) -> dict[str, Any]:
    """:func:`read_json_object`, with ``{}`` for none: what every reader of a run's
    metrics.json, trial.json or status.json that can do without it wants."""
    return read_json_object(path) or {}


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """``status.json`` as written, or None when there is none (or it is unreadable)."""
    return read_json_object(run_dir / "status.json")


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    """A run's metrics when it completed (its metrics.json has the training summary):
    what resuming a k-fold run or an ensemble reuses instead of training it again."""
    metrics = read_json_object(run_dir / "metrics.json")
    return metrics if metrics is not None and "train" in metrics else None


def run_is_alive(run_dir: Path) -> bool:
    """Whether the process that wrote ``status.json`` "running" is still at work.

    On this host: its pid exists and that process is not a newer one that reused the
    pid. On another host: its heartbeat is younger than ``STALE_AFTER_S``.
    """
    status = read_status(run_dir)
    return status is not None and status.get("status") == "running" and _alive(status)


def _alive(status: dict[str, Any]) -> bool:
    pid, started = status.get("pid"), _parse_time(status.get("started_at"))
    if pid is None and status.get("heartbeat") is None:
        return True  # written without an identity (by hand, an older dlrun): no evidence
    if status.get("hostname") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        began = _process_start(pid)
        return began is None or started is None or began <= started + 1
    beat = _parse_time(status.get("heartbeat"))
    return beat is not None and time.time() - beat < STALE_AFTER_S


def process_alive(record: dict[str, Any]) -> bool:
    """Whether the process a record names (``pid``, ``hostname``, ``started_at``,
    ``heartbeat``, as :func:`process_identity` and :func:`now_iso` write them) may still
    be at work: the test status.json's readers use, shared with the Optuna sweepers."""
    return _alive(record)


def run_status(run_dir: Path) -> dict[str, Any] | None:
    """``status.json`` as a reader should take it: a "running" run whose process is gone
    (``kill -9``, out of memory, a reboot) is reported ``interrupted``, and resumable."""
    status = read_status(run_dir)
    if status is None or status.get("status") != "running" or _alive(status):
        return status
    where = f"pid {status.get('pid')} on {status.get('hostname')}"
    return {
        **status,
        "status": "interrupted",
        "reason": f"its process ({where}) is gone without a word (killed? out of memory?); "
        f"last heartbeat {status.get('heartbeat')}",
    }


def _parse_time(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Linux ``/proc``), or None where that is unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


# ------------------------------------------------------------ results of a run
def archive_results(run_dir: Path, epoch: int) -> Path | None:
    """Move the evaluation files of a completed run into ``previous/epoch_<N>/``.

    Used when a completed run trains further: its report, metrics, predictions and plots
    describe the model after ``epoch`` epochs and stay readable beside the new ones.
    Files of the run as a whole (history, log, status) and directories stay in place.
    """
    files = [
        p
        for p in run_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in _RUN_FILES
    ]
    if not files:
        return None
    target, n = run_dir / "previous" / f"epoch_{epoch}", 0
    while target.exists():
        n += 1
        target = run_dir / "previous" / f"epoch_{epoch}_{n}"
    target.mkdir(parents=True)
    for path in files:
        path.rename(target / path.name)
    return target


def restore_results(archive: Path, run_dir: Path) -> None:
    """Undo :func:`archive_results` (the continued run was refused before training)."""
    for path in archive.iterdir():
        path.rename(run_dir / path.name)
    archive.rmdir()
    if not any(archive.parent.iterdir()):
        archive.parent.rmdir()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Pretty JSON written via a temp file, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # on a read-only disk this fails too
            tmp.unlink(missing_ok=True)
        raise
