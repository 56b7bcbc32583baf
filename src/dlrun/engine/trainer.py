"""The one training loop.

It is deliberately close to a hand-written PyTorch loop (``scripts/bench_overhead.py``
measures the difference): batches are slices of tensors already on the device, the loss
and metric are accumulated as device tensors and read once per epoch, and everything
optional (progress, files, checkpoints, early stopping) lives in callbacks.

In a process group (``trainer.devices>1`` or torchrun) the model arrives wrapped in
DDP; each rank trains on its shard of every epoch, and the epoch sums and validation
sums are added over ranks, so every rank sees the same global numbers and takes the
same decisions (best epoch, early stopping, plateau schedules).

What is reported is what is true: every loss in a row is the task's true loss (label
smoothing changes only what is minimised), and regression/forecast rmse is in the data's
own units. The best epoch is tracked once, here, with :class:`dlrun.monitor.Monitor`;
callbacks read it from :class:`FitState`. Checkpoints are written in a phase of their own
after every callback has updated its state for the epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional
from torch.nn.parallel import DistributedDataParallel

from dlrun import tasks
from dlrun.config import TrainerSettings
from dlrun.data.batches import Shard, iterate, n_batches
from dlrun.data.spec import DataBundle, Split
from dlrun.engine import distributed
from dlrun.engine.augment import BatchAugment
from dlrun.engine.device import check_precision
from dlrun.engine.interrupts import RunInterrupted, StopFlag
from dlrun.engine.schedules import Schedule
from dlrun.errors import UserError
from dlrun.monitor import Monitor, resolve


class ValMetrics(Protocol):
    """Extra validation metrics per epoch (``trainer.monitor=val_f1_macro``).

    The trainer feeds one collector per pass with each validation batch's outputs
    (``collector().add(outputs, targets)``) and calls the object with every process's
    collector and the validation loss; it returns ``{"val_<name>": value}`` for the row.
    :class:`dlrun.evaluation.epoch.EpochMetrics` is the implementation the runner passes.
    """

    def collector(self) -> Any: ...

    def __call__(self, parts: Sequence[Any], loss: float) -> dict[str, float]: ...


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops and says what to try."""


@dataclass
class FitState:
    """What the loop knows between epochs; all of it goes into checkpoints."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    should_stop: bool = False
    stop_reason: str = ""
    # How fit() ended ("completed", "interrupted", "failed", ...) and why; not saved.
    outcome: str = "running"
    failure: str = ""

    def best_row(self) -> dict[str, float] | None:
        """The history row of the best epoch so far (ties are broken with its values)."""
        if self.best_epoch is None:
            return None
        return next((r for r in reversed(self.history) if r["epoch"] == self.best_epoch), None)


class Callback:
    """Base class of the trainer's hooks: each does nothing unless a subclass overrides it.

    No string dispatch: each hook is a real method with a signature, so a typo is an
    AttributeError, not a silently ignored hook. At the end of an epoch the trainer calls
    ``on_epoch_end`` of every callback, then ``on_checkpoint`` of every callback: whatever
    a callback updates in ``on_epoch_end`` (early stopping's patience) is in the
    checkpoint of that epoch, in any callback order. A callback that prints or writes
    files sets ``main_process_only``: in a process group only rank 0 builds it.
    """

    main_process_only: bool = False

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        return None

    def on_epoch_start(self, trainer: Trainer, state: FitState, n_batches: int) -> None:
        return None

    def on_batch_end(
        self, trainer: Trainer, state: FitState, batch: int, loss: torch.Tensor
    ) -> None:
        return None

    def on_before_optimizer_step(self, trainer: Trainer, state: FitState) -> None:
        """After backward, before clipping and the optimizer step: ``p.grad`` holds this
        step's gradients (unscaled under fp16), as Lightning's hook of the same name.

        Runs on every optimizer step: keep it to a few operations queued on the device,
        never a host sync (``.item()``, ``float()``), or the loop slows down.
        """
        return None

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        return None

    def on_checkpoint(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        """After every callback's ``on_epoch_end``: the place to save the epoch's state."""
        return None

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints so a resumed run behaves as if never stopped."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Trainer:
    """Fits a model on a :class:`DataBundle` whose splits are already on ``device``."""

    def __init__(
        self,
        model: nn.Module,
        bundle: DataBundle,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        settings: TrainerSettings,
        schedule: Schedule | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        monitor: Monitor | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        seed: int = 0,
        augment: BatchAugment | None = None,
        stop_flag: StopFlag | None = None,
        val_metrics: ValMetrics | None = None,
    ) -> None:
        """``settings`` is the ``trainer:`` config as it stands; ``monitor`` (default:
        ``settings.monitor`` resolved, no ``min_delta``) picks the best epoch; ``l1`` is
        a soft-threshold after each optimizer step (exact zeros), ``l2`` a penalty added
        to the loss; ``seed`` seeds the batch order."""
        self.model = model
        self.bundle = bundle
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.settings = settings
        self.schedule = schedule or Schedule(None)
        self.scheduler = self.schedule.scheduler
        self.callbacks = list(callbacks)
        self.stop_flag = stop_flag
        self.augment = augment
        self.l1, self.l2, self.seed = l1, l2, seed
        self.val_metrics = val_metrics
        self.task = bundle.spec.task
        self.metric_name, _ = tasks.TRAIN_METRIC[self.task]
        self.monitor = monitor or Monitor(resolve(settings.monitor))
        self._objective = getattr(loss_fn, "objective", None) or _plain_objective(loss_fn)
        self.generator = torch.Generator().manual_seed(seed)
        self._penalised = [p for p in model.parameters() if p.dim() > 1]
        self._l1_groups = _l1_groups(optimizer, self._penalised) if l1 else []
        self.device_type = bundle.train.device.type
        std = tasks.target_std(bundle.meta, self.task)
        device = bundle.train.device
        self.target_std = None if std is None else torch.tensor(std, device=device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
        check_precision(settings.precision, device)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if settings.precision == "fp16" else None
        self.world_size = distributed.world_size()
        self.rank = distributed.rank()
        # The lr the latest optimizer step used: history's `lr` (a per-step schedule has
        # already moved on to the next step's value when the epoch ends).
        self._step_lr: float = optimizer.param_groups[0]["lr"]

    # ----------------------------------------------------------------- the loop
    def fit(self, state: FitState | None = None) -> FitState:
        """Train until ``settings.epochs`` or a callback asks to stop."""
        state = state or FitState()
        for cb in self.callbacks:
            cb.on_fit_start(self, state)
        try:
            while state.epoch < self.settings.epochs and not state.should_stop:
                self._epoch(state)
            state.outcome = "completed"
        except (RunInterrupted, KeyboardInterrupt) as exc:
            state.outcome, state.failure = "interrupted", str(exc) or "interrupted"
            raise
        except BaseException as exc:
            state.outcome = getattr(exc, "status", "failed")
            state.failure = str(exc) or type(exc).__name__
            raise
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self, state)
        return state

    def _epoch(self, state: FitState) -> None:
        """Train one epoch, validate, update the best epoch, then run the callbacks."""
        started = time.perf_counter()
        loss, metric = self._train_epoch(state)
        val_loss, val_metric, extra = self._validate()
        state.epoch += 1
        row = {
            "epoch": state.epoch,
            "loss": loss,
            self.metric_name: metric,
            "val_loss": val_loss,
            f"val_{self.metric_name}": val_metric,
            **extra,
            "lr": float(self._step_lr),
            "seconds": time.perf_counter() - started,
        }
        self._step_epoch_scheduler(row)
        self._track_best(state, row)
        state.history.append(row)
        self._epoch_end_callbacks(state, row)

    def _epoch_end_callbacks(self, state: FitState, row: dict[str, float]) -> None:
        """``on_epoch_end`` of every callback, then ``on_checkpoint`` of every callback.

        Two phases, so a checkpoint holds every callback's state for this epoch whatever
        order the callbacks are listed in (early stopping's patience, for one).
        In a group, a failure on one rank stops every rank: file writers and the Optuna
        pruner run on rank 0 only, so only rank 0 can fail there (disk full, trial
        pruned); the others must stop at the same epoch instead of waiting for rank 0 in
        the next all-reduce.
        """
        error: Exception | None = None
        try:
            for cb in self.callbacks:
                cb.on_epoch_end(self, state, row)
            for cb in self.callbacks:
                cb.on_checkpoint(self, state, row)
        except Exception as exc:
            if self.world_size == 1:
                raise
            error = exc
        if self.world_size > 1 and distributed.any_rank([error is not None])[0]:
            if error is not None:
                raise error
            raise distributed.PeerStopped(f"another process stopped after epoch {state.epoch}")

    def _train_epoch(self, state: FitState) -> tuple[float, float]:
        s = self.settings
        split = self.bundle.train
        shard = Shard(self.rank, self.world_size) if self.world_size > 1 else None
        count = batches_per_epoch(len(split), s, self.world_size)
        for cb in self.callbacks:
            cb.on_epoch_start(self, state, count)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=split.device)
        metric_sum = torch.zeros((), device=split.device)
        seen = 0
        batches = iterate(
            split,
            s.batch_size,
            shuffle=True,
            generator=self.generator,
            limit=s.limit_batches,
            shard=shard,
        )
        for index, batch in enumerate(batches):
            if self.augment is not None:
                batch = Split(self.augment(batch.x), batch.y, batch.lengths)
            stepping = (index + 1) % s.accumulate == 0 or index + 1 == count
            self._sync_gradients(stepping)
            with self._autocast():
                outputs = self._forward(batch)
                objective, loss = self._objective(outputs, batch.y)
            if self.l2:
                objective = objective + self._penalty()
            diverged, stopping = self._step_checks(objective)
            if diverged:
                raise TrainingDiverged(
                    f"the loss became {objective.item()} at epoch {state.epoch + 1}, "
                    f"step {state.step + 1}; last.pt keeps the last good epoch. "
                    "Try a lower optimizer.lr or trainer.grad_clip=1.0"
                )
            if stopping:
                raise self._interrupted(state)
            if s.accumulate > 1:
                objective = objective / s.accumulate
            if self.scaler is not None:
                objective = self.scaler.scale(objective)
            objective.backward()
            if stepping:
                self._optimizer_step(state)
            n = len(batch)
            seen += n
            loss_sum.add_(loss.detach(), alpha=n)
            metric_sum += tasks.batch_metric(self.task, outputs.detach(), batch.y, self.target_std)
            for cb in self.callbacks:
                cb.on_batch_end(self, state, index, loss)
            if self.world_size == 1 and self.stop_flag is not None and self.stop_flag.requested:
                raise self._interrupted(state)
        loss_total, metric_total, seen_total = distributed.sum_across_ranks(
            [loss_sum, metric_sum, seen]
        )
        return loss_total / max(seen_total, 1), tasks.finish_metric(
            self.task, metric_total, int(seen_total)
        )

    def _step_checks(self, objective: torch.Tensor) -> tuple[bool, bool]:
        """(loss not finite, stop requested), agreed by all ranks in a process group.

        One process checks the stop flag after the step instead (see the loop); in a
        group both answers are OR-ed over ranks before backward, because a rank that
        raised alone would leave the others waiting in the gradient all-reduce.
        """
        if self.world_size == 1:  # one scalar read is the cheapest finite check
            return not math.isfinite(objective.detach().item()), False
        not_finite = ~torch.isfinite(objective.detach())
        stop = self.stop_flag is not None and self.stop_flag.requested
        diverged, stopping = distributed.any_rank([not_finite, stop])
        return diverged, stopping

    def _interrupted(self, state: FitState) -> RunInterrupted:
        name = self.stop_flag.signal_name if self.stop_flag is not None else None
        return RunInterrupted(
            f"stopped by {name or 'a signal to another process'} during epoch "
            f"{state.epoch + 1}; that epoch was abandoned and checkpoints/last.pt holds "
            f"epoch {state.epoch}"
        )

    def _sync_gradients(self, stepping: bool) -> None:
        """All-reduce gradients only on a batch that steps (DDP's ``no_sync`` otherwise).

        Setting the flag before forward is what ``no_sync()`` does; a context manager
        would have to span forward and backward of every accumulation micro-batch.
        """
        ddp = self._ddp
        if ddp is not None:
            ddp.require_backward_grad_sync = stepping

    def _optimizer_step(self, state: FitState) -> None:
        """Clip (by norm or value), step, clear the gradients, step a per-step schedule."""
        s = self.settings
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip true gradients, not scaled ones
        for cb in self.callbacks:
            cb.on_before_optimizer_step(self, state)
        if s.grad_clip is not None:
            if s.grad_clip_mode == "value":
                nn.utils.clip_grad_value_(self.model.parameters(), s.grad_clip)
            else:
                nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self._l1_groups:
            self._soft_threshold()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self._step_lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and self.schedule.interval == "step":
            self.scheduler.step()

    def _validate(self) -> tuple[float, float, dict[str, float]]:
        """Validation loss and metric, and the extra monitored metrics (one pass)."""
        if self.val_metrics is None:
            return (*self.evaluate(self.bundle.val), {})
        collector = self.val_metrics.collector()
        loss, metric = self.evaluate(self.bundle.val, collector)
        return loss, metric, self.val_metrics(distributed.gather_objects(collector), loss)

    def evaluate(self, split: Split, collector: Any = None) -> tuple[float, float]:
        """Mean loss and training metric of the model on ``split`` (no penalty terms).

        ``collector`` (see :class:`ValMetrics`) also receives every batch's outputs.
        ``no_grad`` is a block, not a decorator: mutmut mutates no decorated function.
        """
        was_training = self.model.training
        self.model.eval()
        # In a group each rank scores a disjoint part and the sums are added; the forward
        # bypasses DDP, whose forward may sync buffers and ranks may run unequal batches.
        model = self.model if self._ddp is None else self._ddp.module
        shard = Shard(self.rank, self.world_size, pad=False) if self.world_size > 1 else None
        loss_sum, metric_sum, seen = 0.0, 0.0, 0
        with torch.no_grad():
            for batch in iterate(
                split, self.settings.batch_size * 4, limit=self.settings.limit_batches, shard=shard
            ):
                with self._autocast():
                    outputs = self._forward(batch, model)
                n = len(batch)
                loss_sum += float(self.loss_fn(outputs, batch.y)) * n
                metric_sum += float(
                    tasks.batch_metric(self.task, outputs, batch.y, self.target_std)
                )
                seen += n
                if collector is not None:
                    collector.add(outputs, batch.y)
        self.model.train(was_training)
        loss_sum, metric_sum, total = distributed.sum_across_ranks([loss_sum, metric_sum, seen])
        return loss_sum / max(total, 1), tasks.finish_metric(self.task, metric_sum, int(total))

    def _autocast(self) -> AbstractContextManager:
        """Mixed precision when asked; otherwise a no-op that costs nothing per step
        (a disabled ``torch.autocast`` still pays for entering and leaving)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def _forward(self, batch: Split, model: nn.Module | None = None) -> torch.Tensor:
        model = self.model if model is None else model
        if batch.lengths is None:
            return model(batch.x)
        return model(batch.x, batch.lengths)

    def _penalty(self) -> torch.Tensor:
        """The explicit L2 term on weight matrices and kernels, not biases or norms."""
        total = torch.zeros((), device=self._penalised[0].device)
        for p in self._penalised:
            total = total + self.l2 * p.pow(2).sum()
        return total

    def _soft_threshold(self) -> None:
        """L1 as a proximal step after each optimizer step: ``w <- sign(w) * max(|w| - t, 0)``.

        A subgradient ``l1 * sign(w)`` in the loss only makes small weights oscillate
        around zero; the proximal step of the same penalty sets them to exactly zero, with
        any optimizer (ISTA for SGD). ``t = lr * l1 / d`` with ``d`` the optimizer's own
        per-weight step scale (:func:`step_scale`: Adam's ``sqrt(v) + eps``, 1 for SGD), so
        ``l1`` means the same objective, loss + l1 * sum|w|, whichever optimizer runs.
        """
        with torch.no_grad():  # a block, not a decorator: mutmut mutates no decorated function
            for index, params in self._l1_groups:
                group = self.optimizer.param_groups[index]  # fresh: load_state_dict makes new ones
                lr_l1 = float(group["lr"]) * self.l1
                for p in params:
                    scale = step_scale(self.optimizer.state.get(p, {}), group)
                    if scale is None:
                        p.copy_(functional.softshrink(p, lr_l1))
                    else:
                        p.copy_(p.sign() * (p.abs() - lr_l1 / scale).clamp_min_(0))

    # ------------------------------------------------------- schedule and best
    def _step_epoch_scheduler(self, row: dict[str, float]) -> None:
        if self.scheduler is None or self.schedule.interval != "epoch":
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row[self.schedule.monitor or self.monitor.name])
        else:
            self.scheduler.step()

    def _track_best(self, state: FitState, row: dict[str, float]) -> None:
        """The one record of the best epoch: ``best.pt``, early stopping and the summary
        all read ``state.best_epoch``."""
        if self.monitor.improved(row, state.best_row()):
            state.best_value, state.best_epoch = row[self.monitor.name], state.epoch

    # ------------------------------------------------------------- checkpoint
    @property
    def _ddp(self) -> DistributedDataParallel | None:
        """The DDP wrapper (possibly inside torch.compile's), if the model has one."""
        model = getattr(self.model, "_orig_mod", self.model)
        return model if isinstance(model, DistributedDataParallel) else None

    @property
    def base_model(self) -> nn.Module:
        """The model without torch.compile or DDP wrappers (whose keys carry a prefix)."""
        ddp = self._ddp
        model = getattr(self.model, "_orig_mod", self.model) if ddp is None else ddp.module
        return getattr(model, "_orig_mod", model)

    def state_dict(self, state: FitState) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended."""
        return {
            "model": self.base_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "history": state.history,
            "best_value": state.best_value,
            "best_epoch": state.best_epoch,
            "should_stop": state.should_stop,
            "stop_reason": state.stop_reason,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": self.generator.get_state(),
                "augment": None if self.augment is None else self.augment.generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> FitState:
        """Restore everything :meth:`state_dict` saved; returns the state to continue."""
        self.base_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["shuffle"])
        if self.augment is not None and rng.get("augment") is not None:
            self.augment.generator.set_state(rng["augment"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        saved = ckpt.get("callbacks", {})
        for cb in self.callbacks:
            if type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])
        return FitState(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            history=list(ckpt["history"]),
            best_value=ckpt["best_value"],
            best_epoch=ckpt["best_epoch"],
            should_stop=ckpt.get("should_stop", False),
            stop_reason=ckpt.get("stop_reason", ""),
        )


def batches_per_epoch(n_train: int, settings: TrainerSettings, world_size: int = 1) -> int:
    """Training batches one process runs per epoch (its DDP shard, ``limit_batches``)."""
    per_process = Shard(0, world_size).length(n_train) if world_size > 1 else n_train
    return n_batches(per_process, settings.batch_size, settings.limit_batches)


def optimizer_steps_per_epoch(n_train: int, settings: TrainerSettings, world_size: int = 1) -> int:
    """Optimizer steps per epoch: a step every ``accumulate`` batches and after the last.

    A per-step schedule counts these, not batches, or it ends early under accumulation.
    """
    return -(-batches_per_epoch(n_train, settings, world_size) // settings.accumulate)


def _plain_objective(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``objective`` for a bare loss function: it trains on exactly what it reports."""

    def objective(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = loss_fn(outputs, targets)
        return loss, loss

    return objective  # type: ignore[return-value]


def _l1_groups(
    optimizer: torch.optim.Optimizer, penalised: list[nn.Parameter]
) -> list[tuple[int, list[nn.Parameter]]]:
    """Each optimizer group's index with its penalised tensors (each has its own lr).

    Indices, not the group dicts: ``optimizer.load_state_dict`` (resume) makes new ones.
    """
    wanted = {id(p) for p in penalised}
    groups = [[p for p in g["params"] if id(p) in wanted] for g in optimizer.param_groups]
    return [(i, params) for i, params in enumerate(groups) if params]


def step_scale(state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor | None:
    """The per-weight denominator an adaptive optimizer divides its step by, or None.

    Adam/AdamW: ``sqrt(v / (1 - beta2^t)) + eps`` (``max_exp_avg_sq`` with amsgrad);
    RMSprop: ``sqrt(square_avg) + eps``; Adagrad: ``sqrt(sum) + eps``. SGD and others
    step in plain gradient units (None). Kept on the device: no host sync per step.
    """
    eps = group.get("eps", 1e-8)
    if "exp_avg_sq" in state and "betas" in group:
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        correction = 1 - group["betas"][1] ** state["step"]
        return (v / correction).sqrt_().add_(eps)
    for key in ("square_avg", "sum"):  # RMSprop, Adagrad
        if key in state:
            return state[key].sqrt().add_(eps)
    return None


def sparsity(model: nn.Module, tolerance: float = 1e-3) -> tuple[float, float]:
    """Shares of weight entries (matrices and kernels) that are exactly 0 and ``< tolerance``.

    The seeds' point about L1: it drives many weights to zero, giving a sparse model; L2
    only shrinks them. Exact zeros are what a sparse format or pruning can drop.
    """
    weights = [p.detach() for p in model.parameters() if p.dim() > 1]
    total = max(sum(w.numel() for w in weights), 1)
    zero = sum(int((w == 0).sum()) for w in weights)
    small = sum(int((w.abs() < tolerance).sum()) for w in weights)
    return zero / total, small / total
