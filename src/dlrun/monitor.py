"""The one place that knows which way a metric improves and whether an epoch improved.

Everything that ranks epochs or runs asks here: the trainer's best epoch (``best.pt``),
early stopping, the plateau scheduler's mode, Optuna's study direction, the leaderboard,
the report's "better/worse than the baseline" and the learning-curve marker. Keras keeps
this in one ``MonitorCallback`` base for the same reason: two tables drift apart.

Torch-free on purpose: config validation and ``dlrun --help`` import it.

- Direction comes from the metric registry (:mod:`dlrun.metric_registry`), where each
  metric is defined once with its direction; ``val_``/``train_`` prefixes name the split.
  A name the registry does not list (a column of an older run, a tracker's key) falls
  back to its ending: one of :data:`LOWER_IS_BETTER` (``..._loss``, ``..._error``) is
  minimised, anything else maximised.
- ``trainer.monitor=auto`` means ``val_loss`` for every task, as in Keras: it is defined
  for every task, never saturates the way accuracy does on small data, and is what the
  model is trained to lower.
- Ties on a monitor other than ``val_loss`` are broken by ``val_loss``: a validation
  accuracy stuck at 1.0 from epoch 3 would otherwise freeze the best epoch there, and
  runs with different regularization would be judged on the same early weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dlrun import metric_registry

# Name endings of metrics where smaller is better, for names the registry doesn't list.
LOWER_IS_BETTER: tuple[str, ...] = (
    "loss",  # loss, val_loss, hamming_loss
    "rmse",
    "mse",
    "mae",
    "mape",
    "error",
    "perplexity",
    "bits_per_token",
)
AUTO = "auto"
DEFAULT_MONITOR = "val_loss"  # what trainer.monitor=auto means
TIE_BREAK = "val_loss"  # decides between epochs with equal monitored values


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (``val_``/``train_`` prefixes allowed)."""
    known = metric_registry.direction(metric)
    if known is not None:
        return known == "min"
    return metric.endswith(LOWER_IS_BETTER)


def metric_mode(metric: str, mode: str = AUTO) -> str:
    """``"min"`` or ``"max"`` for ``metric``; an explicit ``mode`` wins over the name."""
    if mode in ("min", "max"):
        return mode
    if mode != AUTO:
        raise ValueError(f"mode must be auto, min or max, not {mode!r}")
    return "min" if lower_is_better(metric) else "max"


def optuna_direction(metric: str) -> str:
    """``"minimize"`` or ``"maximize"``: the same fact in Optuna's words."""
    return "minimize" if metric_mode(resolve(metric)) == "min" else "maximize"


def resolve(monitor: str | None, default: str = DEFAULT_MONITOR) -> str:
    """The metric a monitor setting names: ``auto`` or null mean ``default``."""
    return default if monitor in (None, AUTO) else monitor


@dataclass(frozen=True)
class Monitor:
    """A watched metric with its direction and the smallest change that counts.

    ``improved`` compares a history row with the best one so far. A change smaller than
    ``min_delta`` is no improvement; an exact tie is decided by ``val_loss`` (lower wins)
    unless ``val_loss`` is the monitor itself.
    """

    name: str
    mode: str = AUTO
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", metric_mode(self.name, self.mode))
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, not {self.min_delta}")

    @property
    def tie_break(self) -> str | None:
        return None if self.name == TIE_BREAK else TIE_BREAK

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never does)."""
        if math.isnan(value):
            return False
        if best is None or math.isnan(best):
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def improved(self, row: Mapping[str, float], best: Mapping[str, float] | None) -> bool:
        """Whether epoch ``row`` is better than the ``best`` row so far (None: no best yet)."""
        value = float(row[self.name])
        # a best row without this metric (a resumed run that watches a new one): no best yet
        best_value = None if best is None or self.name not in best else float(best[self.name])
        if self.better(value, best_value):
            return True
        tie = self.tie_break
        if best is None or tie is None or value != best_value:
            return False
        mine, theirs = row.get(tie), best.get(tie)
        return mine is not None and theirs is not None and float(mine) < float(theirs)
