"""Report each epoch's validation value to the job's Optuna trial; stop if it is pruned.

The job runs in its own process (or at least its own stack frame) under any Hydra
launcher, so it cannot share the sweeper's ``Trial`` object: it reopens its trial from
the storage URL, study name and trial number the sweeper passed as overrides, and
rebuilds the study's pruner from the spec the sweeper stored on the study.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dlrun.engine.trainer import Callback
from dlrun.errors import UserError
from dlrun.sweep.protocol import (
    PRUNED_AT_ATTR,
    PRUNER_ATTR,
    TrialPrunedByOptuna,
    build_pruner,
    open_storage,
    shown_storage,
    storage_problem,
)

if TYPE_CHECKING:
    import optuna

    from dlrun.engine.trainer import FitState, Trainer

__all__ = ["OptunaPruning", "TrialPrunedByOptuna"]

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Reports ``row[monitor]`` at step=epoch and raises when the pruner says stop.

    Before raising it records the epoch in the trial's user attributes, so the sweeper
    can tell a pruned trial from a failed one whatever the job's return value is.
    A trial that is already finished (a pruned run resumed by hand) is left alone.
    """

    main_process_only = True

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = int(trial_number)
        self.monitor = monitor
        self.pruner_name = "none"
        self._trial: optuna.trial.Trial | None = None

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        self._trial = self._open_trial()

    def _open_trial(self) -> optuna.trial.Trial | None:
        import optuna

        try:
            storage = open_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage)
        except Exception as exc:  # KeyError (no such study), SQLAlchemy errors, ...
            raise UserError(
                f"trial.storage={shown_storage(self.storage)} trial.study_name={self.study_name}: "
                f"cannot open the Optuna study ({storage_problem(exc, self.storage)})"
            ) from None
        spec = study.user_attrs.get(PRUNER_ATTR) or {"name": "none", "args": {}}
        self.pruner_name = spec["name"]
        study.pruner = build_pruner(spec["name"], spec.get("args"))
        study_id = storage.get_study_id_from_name(self.study_name)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        except KeyError:
            raise UserError(
                f"trial.number={self.trial_number}: no such trial in study {self.study_name}"
            ) from None
        if storage.get_trial(trial_id).state.is_finished():
            log.warning("trial %d already finished; not reporting to it", self.trial_number)
            return None
        return optuna.trial.Trial(study, trial_id)

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        if self._trial is None:
            return
        if self.monitor not in row:
            raise UserError(
                f"cannot report {self.monitor} to Optuna: the epoch recorded {', '.join(row)}"
            )
        value, epoch = float(row[self.monitor]), int(row["epoch"])
        self._trial.report(value, step=epoch)  # NaN is reported too: pruners prune it
        if self._trial.should_prune():
            self._trial.set_user_attr(PRUNED_AT_ATTR, epoch)
            raise TrialPrunedByOptuna(
                self.trial_number, epoch, self.monitor, value, self.pruner_name
            )

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        self._trial = None  # let the storage's connections go with the trial
