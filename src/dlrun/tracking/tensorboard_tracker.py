"""``logger=tensorboard``: event files in ``<run_dir>/tensorboard`` for TensorBoard.

Written with the ``tensorboard`` package's own writer (no torch, no TensorFlow), so the
tracking worker stays light. Per-epoch values are scalars named as in history.csv; the
final numbers (``test_accuracy``, ``baseline_accuracy``, ...) are scalars at the last
epoch, so ``tensorboard --logdir outputs/multirun/<sweep>`` compares every job of a
sweep. A sweep or a k-fold run is the folder above its jobs' or folds' event files, so
TensorBoard's run list already nests them: nothing is written for the parent itself.
The flattened config goes to the HParams dashboard (as Lightning's TensorBoard logger
does), where a sweep's jobs are a table of hyperparameters against every scalar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlrun.tracking.base import RunInfo, Tracker


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    makes_parent_runs = False

    def __init__(self, log_dir: str = "tensorboard") -> None:
        self.log_dir = log_dir
        self.path: Path | None = None
        self.writer: Any = None
        self.last_step = 0

    def where(self) -> str:
        return str(self.path or self.log_dir)

    def start(self, run: RunInfo) -> dict[str, Any]:
        from tensorboard.summary import Writer

        self.path = run.dir / self.log_dir
        self.path.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(str(self.path))
        if run.previous is None:  # a resumed run has its hyperparameters there already
            self._log_hparams(run.params)
        return {"log_dir": str(self.path)}

    def _log_hparams(self, params: dict[str, str]) -> None:
        """One HParams session-start event in its own event file beside the scalars.

        The ``tensorboard`` package's torch-free writer only writes scalars; TensorBoard
        reads every event file of a folder as one run.
        """
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        assert self.path is not None
        summary = hparams_pb({key: hparam_value(text) for key, text in params.items()})
        writer = EventFileWriter(str(self.path), filename_suffix=".hparams")
        writer.add_event(Event(wall_time=time.time(), summary=summary))
        writer.close()

    def log_metrics(self, values: dict[str, float], step: int | None) -> None:
        step = self.last_step if step is None else step
        self.last_step = max(self.last_step, step)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, state: str) -> None:
        self.writer.close()


def hparam_value(text: str) -> bool | float | str:
    """A param's string as the HParams dashboard's type: numbers plot on an axis."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text
