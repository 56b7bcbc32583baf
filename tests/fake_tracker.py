"""A tracker for tests: it writes every call it gets to a JSON-lines file.

Configured like a real one, through the logger group's escape hatch:
``++logger.fake._target_=tests.fake_tracker.FakeTracker ++logger.fake.path=<file>``
(the tracking worker imports it, so the test puts the repository on PYTHONPATH).
``fail_on`` makes one method raise, as a tracker whose server went away would;
``at_exit`` registers an exit handler as the run finishes, as MLflow and W&B do to flush.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Any

from dlrun.tracking.base import RunInfo, Tracker


class FakeTracker(Tracker):
    name = "fake"

    def __init__(
        self, path: str, fail_on: str | None = None, name: str = "fake", at_exit: bool = False
    ) -> None:
        self.path = Path(path)
        self.fail_on = fail_on
        self.at_exit = at_exit
        self.name = name
        self.dir = ""

    def _record(self, op: str, **data: Any) -> None:
        if self.fail_on == op:
            raise ConnectionRefusedError(f"{self.name} is down")
        with self.path.open("a") as fh:
            fh.write(json.dumps({"op": op, "dir": self.dir, **data}, default=str) + "\n")

    def start(self, run: RunInfo) -> dict[str, Any]:
        self.dir = str(run.dir)
        self._record("start", kind=run.kind, name=run.name, params=run.params, tags=run.tags,
                     parent=run.parent, previous=run.previous, group=run.group)  # fmt: skip
        return {"id": f"{run.kind}:{run.dir.name}", "dir": str(run.dir)}

    def log_metrics(self, values: dict[str, float], step: int | None) -> None:
        self._record("log_metrics", values=values, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._record("set_tags", tags=tags)

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        self._record("log_files", files=[f"{folder}/{p.name}".lstrip("/") for p, folder in files])

    def finish(self, state: str) -> None:
        self._record("finish", state=state)
        if self.at_exit:
            atexit.register(self._record, "exit")


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
