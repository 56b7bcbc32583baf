"""The run directory: claiming a fresh one, and recording what state a run is in.

Kept free of torch so the CLI can use it before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_claimed: dict[str, str] = {}


def claim_unique_dir(path: str) -> str:
    """Create ``path`` (or ``path_1``, ``path_2``, ...) atomically and return its name.

    Two runs started in the same second would otherwise share a timestamped directory;
    ``os.mkdir`` fails for the loser of the race, which then takes the next suffix. The
    answer is memoised because Hydra resolves ``hydra.run.dir`` more than once per run.
    """
    if path in _claimed:
        return _claimed[path]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 0
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
            candidate = f"{path}_{n}"
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


def write_status(run_dir: Path, status: str, reason: str = "", **extra: Any) -> None:
    """Write ``status.json`` atomically: running, completed, interrupted or failed.

    ``epoch`` (epochs completed) defaults to the rows of ``history.csv``, which the
    trainer rewrites after every epoch, so a failed or interrupted run says how far it got.
    """
    extra.setdefault("epoch", _epochs_done(run_dir))
    payload = {"status": status, "reason": reason, **extra}
    tmp = run_dir / ".status.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(run_dir / "status.json")


def _epochs_done(run_dir: Path) -> int:
    history = run_dir / "history.csv"
    if not history.is_file():
        return 0
    return max(0, len(history.read_text().splitlines()) - 1)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def remove_if_unused(run_dir: Path) -> bool:
    """Delete a run dir that holds nothing but Hydra's config snapshot.

    Used when a run is refused before it starts (bad config): the directory was created
    moments ago by this process, so nothing the user had is lost.
    """
    if not run_dir.is_dir():
        return False
    if any(p.name != ".hydra" for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    return True


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Pretty JSON written via a temp file, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
