"""The sweeper's config node, registered as ``hydra/sweeper: dlrun_optuna``.

Hydra imports this module while it scans ``hydra_plugins``; storing the node in the
ConfigStore then is what lets a defaults list say ``override /hydra/sweeper: dlrun_optuna``.
No ``from __future__ import annotations`` here: the scanner runs this module before it is
in ``sys.modules``, where ``dataclasses`` would look to resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class DlrunOptunaSweeperConf:
    _target_: str = "hydra_plugins.dlrun_optuna_sweeper.optuna_sweeper.DlrunOptunaSweeper"
    # tpe | random | grid (grid needs choice()/range() params and caps n_trials at its size)
    sampler: str = "tpe"
    seed: int | None = 0
    # auto: minimise or maximise trainer.monitor by its name (val_loss: min, val_accuracy:
    # max); trainer.monitor=auto is val_loss (dlrun.monitor)
    direction: str = "auto"
    # the study's target number of finished trials; a resumed study only runs the rest
    n_trials: int = 20
    # trials asked for and launched together (parallel with a parallel launcher)
    n_jobs: int = 1
    # any Optuna storage URL; point it at a fixed file to resume by re-running a command
    storage: str = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: str = "dlrun"
    # none | median | hyperband, with keyword arguments for Optuna's pruner class
    pruner: str = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    # stop the sweep after this many failed trials in a row (0: never)
    max_consecutive_failures: int = 5
    # the search space, in Hydra's sweep syntax: {optimizer.lr: "tag(log, interval(1e-4, 0.1))"}
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="dlrun_optuna", node=DlrunOptunaSweeperConf, provider="dlrun"
)
