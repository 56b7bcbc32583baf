"""A sweeper's sign of life on the trials it runs, for sweepers on other machines.

When several sweepers share a study, one that starts finds trials RUNNING: are they
another live sweeper's, or orphans of one that was killed? On the same machine the
owner's process id answers it. Across machines only time can: every ``HEARTBEAT_S``
this thread stamps the trials its sweeper runs, and a trial whose stamp is older than
``dlrun.rundir.STALE_AFTER_S`` is taken for an orphan (:func:`dlrun.sweep.study.
orphaned`), as a run's status.json heartbeat is.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from dlrun.rundir import HEARTBEAT_S, now_iso
from dlrun.sweep.protocol import HEARTBEAT_ATTR

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class Heartbeat:
    """Stamps the running trials of one sweeper from a daemon thread."""

    def __init__(self, study: optuna.Study, every_s: float = HEARTBEAT_S) -> None:
        self.study = study
        self.every_s = every_s
        self.trials: dict[int, int] = {}  # trial number -> trial id
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="dlrun-heartbeat")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()

    def running(self, trial: optuna.trial.Trial) -> None:
        with self.lock:
            self.trials[trial.number] = trial._trial_id

    def done(self, trial: optuna.trial.Trial) -> None:
        with self.lock:
            self.trials.pop(trial.number, None)

    def _beat(self) -> None:
        while not self.stop.wait(self.every_s):
            with self.lock:
                ids = list(self.trials.values())
            for trial_id in ids:
                try:
                    self.study._storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, now_iso())
                except Exception as exc:  # finished meanwhile, or the database blinked
                    log.debug("heartbeat of trial %d skipped: %s", trial_id, exc)
