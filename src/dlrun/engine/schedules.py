"""Learning-rate schedules that torch doesn't ship in the form the seeds describe,
and the one place that builds any scheduler.

A scheduler config is ``_target_`` + ``_partial_: true`` + ``interval`` (``epoch`` or
``step``) + its own parameters; the runner instantiates it into a factory (this module
never sees Hydra). Facts only the run knows (how many times the scheduler will be
stepped, whether the monitored metric is minimised) are passed to the factory only when
its signature asks for them, so torch's classes and ours are built alike.

``total_steps`` counts optimizer steps (``ceil(batches / trainer.accumulate)`` per epoch
of this process's shard), which is how often a per-step schedule is stepped; counted in
batches, a cosine schedule with ``accumulate=4`` would end at 92% of its peak.
A plateau schedule watches ``scheduler.monitor`` (null: ``trainer.monitor``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from dlrun.errors import UserError
from dlrun.monitor import metric_mode

AnyScheduler = LRScheduler | ReduceLROnPlateau


@dataclass
class Schedule:
    """A scheduler (None: a constant lr), how often the trainer steps it (``epoch`` or
    ``step``) and, for a plateau schedule, the metric it watches (None: the trainer's)."""

    scheduler: AnyScheduler | None
    interval: str = "epoch"
    monitor: str | None = None


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup: float = 0.05, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up for ``warmup`` of the schedule (a fraction, or a count if >= 1),
    then cosine decay to ``min_lr_ratio`` times the base learning rate."""
    warm = int(warmup if warmup >= 1 else round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def inverse_time(optimizer: Optimizer, decay: float = 1e-3) -> LambdaLR:
    """Keras' classic ``decay``: lr_t = lr / (1 + decay * t)."""
    return LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))


def plateau(
    optimizer: Optimizer,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 5,
    min_lr: float = 0.0,
) -> ReduceLROnPlateau:
    """Cut the lr by ``factor`` when the monitored metric stalls for ``patience`` epochs."""
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr)


def build_scheduler(
    factory: Callable[..., AnyScheduler] | None,
    optimizer: Optimizer,
    *,
    interval: str = "epoch",
    epochs: int,
    steps_per_epoch: int,
    monitor: str,
) -> Schedule:
    """The :class:`Schedule` of ``factory`` (a partial scheduler class; None for a
    constant lr) stepped every ``interval``.

    ``steps_per_epoch`` is optimizer steps, not batches; ``monitor`` is what a plateau
    schedule watches (already resolved against the trainer's metric).
    """
    if interval not in ("epoch", "step"):
        raise UserError(f"scheduler.interval={interval} is invalid: use epoch or step")
    if factory is None:
        return Schedule(None, interval, monitor)
    target = getattr(factory, "func", factory)
    given = getattr(factory, "keywords", {})
    accepted = inspect.signature(target).parameters
    context: dict[str, Any] = {}
    if "total_steps" in accepted and "total_steps" not in given:
        context["total_steps"] = epochs * steps_per_epoch if interval == "step" else epochs
    if "mode" in accepted and "mode" not in given:
        context["mode"] = metric_mode(monitor)
    if interval == "epoch" and target is torch.optim.lr_scheduler.OneCycleLR:
        raise UserError("scheduler=onecycle must step every batch: keep scheduler.interval=step")
    try:
        return Schedule(factory(optimizer, **context), interval, monitor)
    except (TypeError, ValueError) as exc:
        raise UserError(f"scheduler config is invalid: {exc}") from exc
