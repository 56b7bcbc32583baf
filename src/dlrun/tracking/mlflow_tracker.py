"""``logger=mlflow``: a run in MLflow, nested under its sweep or k-fold run.

Uses ``MlflowClient`` with an explicit run id, not MLflow's fluent API: several runs are
open at once in the tracking worker (a sweep's parent, a k-fold run and its folds),
which the fluent API's one active run per thread cannot express. Nesting is MLflow's
own: a child run carries the ``mlflow.parentRunId`` tag, and the UI shows it under its
parent.

``tracking_uri: null`` uses MLflow's default (``MLFLOW_TRACKING_URI``, else MLflow's
local store in the working directory: ``sqlite:///mlflow.db`` with MLflow 3), which is
what ``mlflow ui`` opens when started in the same folder. A remote server gets at most
one retry per request (MLflow's default waits minutes on a server that is down); set
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` to change that.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dlrun.tracking.base import RunInfo, Tracker

_STATUS = {
    "completed": "FINISHED",
    "pruned": "FINISHED",
    "failed": "FAILED",
    "interrupted": "KILLED",
    "running": "KILLED",
}
_BATCH = 100  # MLflow takes at most 100 params / 1000 metrics per log_batch call


class MLflowTracker(Tracker):
    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "dlrun",
        run_name: str | None = None,
        log_checkpoints: bool = False,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or None
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_checkpoints = log_checkpoints
        self.extra_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.client: Any = None
        self.run_id: str | None = None

    def where(self) -> str:
        if self.client is not None:
            return str(self.client.tracking_uri)
        return self.tracking_uri or "MLflow's default tracking URI"

    def start(self, run: RunInfo) -> dict[str, Any]:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        previous = run.previous or {}
        if previous.get("run_id") and previous.get("tracking_uri") == self.client.tracking_uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.set_tags({**run.tags, "resumed": "true"})
            return previous
        experiment_id = self._experiment()
        tags = {**run.tags, **self.extra_tags, "dlrun.kind": run.kind}
        tags["dlrun.run_dir"] = str(run.dir.resolve())
        if tags.get("git_commit"):
            tags["mlflow.source.git.commit"] = tags["git_commit"].removesuffix("+dirty")
        parent = (run.parent or {}).get("run_id")
        if parent:
            tags["mlflow.parentRunId"] = parent
        name = self.run_name if self.run_name and run.kind != "fold" else run.name
        created = self.client.create_run(experiment_id, tags=tags, run_name=name)
        self.run_id = created.info.run_id
        self._log_params(run.params)
        return {
            "run_id": self.run_id,
            "experiment_id": experiment_id,
            "experiment_name": self.experiment_name,
            "tracking_uri": self.client.tracking_uri,
            "artifact_uri": created.info.artifact_uri,
        }

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment_name))
        except Exception:  # created meanwhile by a parallel job
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def log_metrics(self, values: dict[str, float], step: int | None) -> None:
        self.log_rows([(step or 0, values)])

    def log_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """One ``log_batch`` for all of them: each call is a transaction (a request)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for step, values in rows for k, v in values.items()]
        for i in range(0, len(items), 10 * _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + 10 * _BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        for path, folder in files:
            if folder == "checkpoints" and not self.log_checkpoints:
                continue
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder or None)

    def finish(self, state: str) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS.get(state, "FINISHED"))
