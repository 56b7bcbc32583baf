"""The training loop's side of tracking: a callback that sends each epoch to the worker.

A run's trackers start when training starts (the dataset and task are known then) and
get every history row as it is written; the end of the run is :func:`dlrun.tracking.
job_ended`'s, after the run's files are final.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.engine.callbacks import Callback
from dlrun.tracking import client

if TYPE_CHECKING:
    from dlrun.engine.trainer import FitState, Trainer


class TrackerFeed(Callback):
    """Opens the run in the tracking worker, then sends every epoch's row."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, specs: dict[str, Any]) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.specs = specs
        client.worker(sorted(specs))  # start it now: its imports overlap the data loading

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        spec = trainer.bundle.spec
        msg = run_message(self.cfg, self.run_dir, self.specs)
        msg["tags"].update({"task": str(spec.task), "dataset": spec.name})
        client.open_run(msg)

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        client.log(self.run_dir, state.epoch, row)


def run_message(cfg: dict[str, Any], run_dir: Path, specs: dict[str, Any]) -> dict[str, Any]:
    """The worker's ``open`` message for ``run_dir``: config, trackers, tags, parents."""
    sweep = _sweep_dir()
    fold = cfg.get("eval", {}).get("protocol", "holdout") != "holdout"
    parent: dict[str, Any] | None = {"dir": str(sweep), "kind": "sweep"} if sweep else None
    if fold:  # a fold of a k-fold run: the k-fold run is its parent
        parent = {"dir": str(run_dir.parent), "kind": "kfold", "parent": parent}
    choices = _choices()
    tags = {
        "model": choices.get("model") or cfg.get("model_name"),
        "data": choices.get("data"),
        "sweep_id": sweep.name if sweep else None,
    }
    return {
        "dir": str(run_dir),
        "kind": "fold" if fold else "run",
        "name": run_dir.name,
        "config": cfg,
        "loggers": specs,
        "tags": tags,
        "parent": parent,
        "group": Path(parent["dir"]).name if parent else None,
    }


def reopen_message(run_dir: Path, specs: dict[str, Any]) -> dict[str, Any]:
    """What the worker needs to finish a run that another process opened."""
    return {"kind": "run", "name": run_dir.name, "config": {}, "loggers": specs, "tags": {}}


def _hydra() -> Any:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:  # not inside a Hydra app (tests, the benchmark, a DDP worker)
        return None


def _choices() -> dict[str, Any]:
    hydra_cfg = _hydra()
    return dict(hydra_cfg.runtime.choices) if hydra_cfg is not None else {}


def _sweep_dir() -> Path | None:
    from hydra.types import RunMode

    hydra_cfg = _hydra()
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir).resolve()
