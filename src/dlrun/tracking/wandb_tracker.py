"""``logger=wandb``: a Weights & Biases run, offline by default.

``mode: offline`` writes the run under ``<run_dir>/wandb/`` and needs no account or
network; ``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later. ``mode: online``
logs live (after ``wandb login``). W&B has no nested runs: the jobs of a sweep and the
folds of a k-fold run share a ``group`` (the sweep's or the k-fold run's name), which
is how W&B shows runs that belong together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.tracking.base import RunInfo, Tracker


class WandbTracker(Tracker):
    name = "wandb"
    makes_parent_runs = False

    def __init__(
        self,
        project: str = "dlrun",
        entity: str | None = None,
        mode: str = "offline",
        tags: list[str] | None = None,
        log_checkpoints: bool = False,
    ) -> None:
        self.project = project
        self.entity = entity
        self.mode = mode
        self.tags = [str(t) for t in tags or []]
        self.log_checkpoints = log_checkpoints
        self.run: Any = None
        self.dir: Path | None = None

    def where(self) -> str:
        return f"{self.mode}, project {self.project}"

    def start(self, run: RunInfo) -> dict[str, Any]:
        import wandb

        previous = run.previous or {}
        self.dir = run.dir
        config = {k: v for k, v in run.params.items()}
        tags = [*self.tags, *(f"{k}:{v}" for k, v in run.tags.items() if k in ("model", "data"))]
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run.dir),
            name=run.name,
            group=run.group,
            job_type=run.kind,
            config=config,
            tags=tags[:20],
            id=previous.get("id"),
            resume="allow" if previous.get("id") else None,
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.run.summary.update({k: v for k, v in run.tags.items()})
        return {"id": self.run.id, "project": self.project, "mode": self.mode, "dir": str(run.dir)}

    def log_metrics(self, values: dict[str, float], step: int | None) -> None:
        if step is None:
            self.run.summary.update(values)
        else:
            self.run.log(values, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.summary.update(tags)

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        for path, folder in files:
            if folder == "checkpoints" and not self.log_checkpoints:
                continue
            self.run.save(str(path), base_path=str(self.dir), policy="now")

    def finish(self, state: str) -> None:
        self.run.finish(exit_code=0 if state in ("completed", "pruned") else 1)
