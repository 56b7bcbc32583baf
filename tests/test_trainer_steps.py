"""The trainer's arithmetic, pinned in fast tests: the step sizes L1 divides by, the batch
and step counts, and what one epoch of the loop does (accumulation, clipping, the best
epoch, the order of the hooks, early exits).

These are the tests ``scripts/mutation.py trainer`` runs against every mutant of
``src/dlrun/engine/trainer.py``: each trains at most a few batches of iris in-process.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch._dynamo  # the first optimizer step imports it: see below

from dlrun import tasks
from dlrun.data.batches import Shard, iterate
from dlrun.data.sklearn_sets import load_iris
from dlrun.data.spec import DataBundle, Split
from dlrun.engine import distributed
from dlrun.engine.interrupts import RunInterrupted, StopFlag
from dlrun.engine.schedules import Schedule
from dlrun.engine.trainer import (
    Callback,
    FitState,
    Trainer,
    TrainerSettings,
    TrainingDiverged,
    _l1_groups,
    _plain_objective,
    batches_per_epoch,
    sparsity,
    step_scale,
)
from dlrun.errors import UserError
from dlrun.models.mlp import MLP

# The first optimizer step imports torch._dynamo (~4 s). Imported here, it is loaded when
# mutmut's fork server collects these tests, not again in each mutant's fork.

_IRIS: DataBundle | None = None


def _iris() -> DataBundle:
    """Iris, loaded once (104 training, 23 validation samples)."""
    global _IRIS
    if _IRIS is None:
        _IRIS = load_iris(seed=0)
    return _IRIS


def _trainer(settings: TrainerSettings, lr: float = 0.1, **kwargs: Any) -> Trainer:
    """A seeded MLP on iris with SGD; ``kwargs`` go to :class:`Trainer`."""
    bundle = _iris()
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, bundle, optimizer, tasks.loss_fn(bundle.spec.task), settings, **kwargs)


class Recorder(Callback):
    """Writes down every hook call with its arguments, and what the model looked like."""

    def __init__(self, name: str = "cb", log: list | None = None) -> None:
        self.name, self.log = name, [] if log is None else log
        self.losses: list[float] = []
        self.grads_at_step: list[float] = []
        self.training: list[bool] = []

    def on_fit_start(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "fit_start", state.epoch))
        self.trainers = [trainer]

    def on_epoch_start(self, trainer, state, n_batches) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "epoch_start", state.epoch, n_batches))

    def on_batch_end(self, trainer, state, batch, loss) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "batch_end", batch, state.step))
        self.losses.append(float(loss.detach()))
        self.training.append(trainer.model.training)

    def on_before_optimizer_step(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "before_step", state.step))
        grads = [p.grad for p in trainer.model.parameters()]
        self.grads_at_step.append(float(torch.cat([g.flatten() for g in grads]).norm()))

    def on_epoch_end(self, trainer, state, row) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "epoch_end", state.epoch, row["epoch"]))

    def on_checkpoint(self, trainer, state, row) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "checkpoint", state.epoch, state.best_epoch, row["epoch"]))
        self.trainers.append(trainer)

    def on_fit_end(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "fit_end", state.outcome))
        self.trainers.append(trainer)


# -- step_scale: the denominator each optimizer really divides its step by ------------


def _one_param_steps(optimizer: torch.optim.Optimizer, p: torch.nn.Parameter, n: int):
    """``n`` steps on a fixed quadratic; the gradient and the change of the last one."""
    for step in range(n):
        optimizer.zero_grad()
        (p * torch.arange(1.0, 4.0, dtype=p.dtype) * (step + 1)).pow(2).sum().backward()
        before = p.detach().clone()
        optimizer.step()
    return p.grad.detach().clone(), p.detach() - before


@pytest.mark.parametrize(
    ("make", "numerator"),
    [
        # Adam past step 1 (the bias correction is 1 - beta2**t, not 1 - beta2*t), amsgrad
        # (the running maximum of v, not v), a non-default eps
        (
            lambda p: torch.optim.Adam([p], lr=0.1, betas=(0.5, 0.9), eps=0.1, amsgrad=True),
            lambda opt, p, g: opt.state[p]["exp_avg"] / (1 - 0.5 ** opt.state[p]["step"]),
        ),
        (
            lambda p: torch.optim.AdamW([p], lr=0.1, betas=(0.5, 0.9), eps=0.1),
            None,  # AdamW also decays the weights: compared through Adam's formula below
        ),
        (lambda p: torch.optim.RMSprop([p], lr=0.1, eps=0.1), lambda opt, p, g: g),
        (lambda p: torch.optim.Adagrad([p], lr=0.1, eps=0.1), lambda opt, p, g: g),
    ],
    ids=["adam-amsgrad", "adamw", "rmsprop", "adagrad"],
)
def test_step_scale_is_the_denominator_the_optimizer_divides_by(make, numerator) -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    optimizer = make(p)
    grad, change = _one_param_steps(optimizer, p, 3)
    group, state = optimizer.param_groups[0], optimizer.state[p]
    scale = step_scale(state, group)
    assert scale is not None
    if numerator is None:  # AdamW: sqrt(v / (1 - beta2^t)) + eps, checked by hand
        v_hat = state["exp_avg_sq"] / (1 - 0.9 ** state["step"])
        torch.testing.assert_close(scale, v_hat.sqrt() + 0.1)
        return
    # p <- p - lr * numerator / scale: the step the optimizer took, exactly
    torch.testing.assert_close(change, -0.1 * numerator(optimizer, p, grad) / scale)


def test_step_scale_amsgrad_reads_the_running_maximum() -> None:
    state = {
        "exp_avg_sq": torch.tensor([1.0], dtype=torch.float64),
        "max_exp_avg_sq": torch.tensor([4.0], dtype=torch.float64),
        "step": torch.tensor(2.0),
    }
    group = {"betas": (0.9, 0.5), "eps": 0.0}
    # v / (1 - 0.5^2) = v / 0.75
    torch.testing.assert_close(step_scale(state, group), torch.tensor([(1 / 0.75) ** 0.5]).double())
    amsgrad = step_scale(state, {**group, "amsgrad": True})
    torch.testing.assert_close(amsgrad, torch.tensor([(4 / 0.75) ** 0.5]).double())


def test_step_scale_keys_and_defaults() -> None:
    zeros = torch.zeros(2, dtype=torch.float64)
    # a group without eps (an optimizer of one's own) gets Adam's 1e-8
    assert step_scale({"sum": zeros.clone()}, {}).tolist() == [1e-8, 1e-8]
    assert step_scale({"square_avg": zeros.clone()}, {}).tolist() == [1e-8, 1e-8]
    # the group's own eps when it has one
    assert step_scale({"square_avg": zeros.clone()}, {"eps": 0.5}).tolist() == [0.5, 0.5]
    # before Adam's first step its state is empty: no scale, a plain soft-threshold
    assert step_scale({}, {"betas": (0.9, 0.999), "eps": 1e-8}) is None
    # SGD (momentum or not) steps in gradient units
    assert step_scale({"momentum_buffer": zeros}, {"lr": 0.1, "momentum": 0.9}) is None


# -- counts -------------------------------------------------------------------------


def test_batches_per_epoch_of_one_process_and_of_a_shard() -> None:
    settings = TrainerSettings(batch_size=8)
    assert batches_per_epoch(105, settings) == 14  # one process by default: all of it
    assert batches_per_epoch(105, settings, 1) == 14
    assert batches_per_epoch(105, settings, 2) == 7  # 53 samples each (padded)
    assert batches_per_epoch(105, settings, 4) == 4  # 27 each
    assert batches_per_epoch(105, TrainerSettings(batch_size=8, limit_batches=3)) == 3


def test_sparsity_of_a_single_weight_and_at_the_tolerance() -> None:
    one = torch.nn.Linear(1, 1)
    with torch.no_grad():
        one.weight.zero_()
    assert sparsity(one) == (1.0, 1.0)  # one entry, and it is zero
    with torch.no_grad():
        one.weight.fill_(0.5)
    assert sparsity(one, tolerance=0.5) == (0.0, 0.0)  # strictly below the tolerance
    assert sparsity(one, tolerance=0.75) == (0.0, 1.0)


# -- one epoch of the loop against a hand-written PyTorch loop -------------------------


def _reference_epoch(
    trainer: Trainer, settings: TrainerSettings, *, l2: float = 0.0, shard: Shard | None = None
) -> tuple[float, float, list[float]]:
    """One epoch of ``trainer``'s model as a plain loop: the mean loss, the accuracy and
    each batch's loss. A step every ``accumulate`` batches and after the last one."""
    bundle, model, optimizer = trainer.bundle, trainer.model, trainer.optimizer
    loss_fn = tasks.loss_fn(bundle.spec.task)
    generator = torch.Generator().manual_seed(0)
    batches = list(
        iterate(
            bundle.train,
            settings.batch_size,
            shuffle=True,
            generator=generator,
            limit=settings.limit_batches,
            shard=shard,
        )
    )
    loss_sum, correct, seen, losses = 0.0, 0.0, 0, []
    for index, batch in enumerate(batches):
        outputs = model(batch.x)
        loss = loss_fn(outputs, batch.y)
        penalty = sum(p.pow(2).sum() for p in model.parameters() if p.dim() > 1)
        ((loss + l2 * penalty) / settings.accumulate).backward()
        if (index + 1) % settings.accumulate == 0 or index + 1 == len(batches):
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
        loss_sum += loss.item() * len(batch)
        correct += float((outputs.argmax(1) == batch.y).sum())
        seen += len(batch)
    return loss_sum / seen, correct / seen, losses


@pytest.mark.parametrize(
    ("settings", "l2", "steps"),
    [
        # 104 samples in batches of 40: 40, 40, 24; a step after batch 2 and after the last
        (TrainerSettings(epochs=1, batch_size=40, accumulate=2), 0.0, 2),
        (TrainerSettings(epochs=1, batch_size=40, accumulate=3), 0.0, 1),
        (TrainerSettings(epochs=1, batch_size=16, limit_batches=3), 0.05, 3),
    ],
    ids=["accumulate-2", "accumulate-3", "l2"],
)
def test_an_epoch_is_the_hand_written_loop(settings: TrainerSettings, l2: float, steps: int):
    recorder = Recorder()
    trainer = _trainer(settings, l2=l2, callbacks=(recorder,))
    reference = _trainer(settings)
    loss, accuracy, losses = _reference_epoch(reference, settings, l2=l2)
    state = trainer.fit()
    for p, q in zip(trainer.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
        assert p.grad is None  # cleared to None after each step, not to zeros
    row = state.history[0]
    assert row["loss"] == pytest.approx(loss, rel=1e-5)  # weighted by batch size
    assert row["accuracy"] == pytest.approx(accuracy)
    assert recorder.losses == pytest.approx(losses, rel=1e-5)  # each batch's true loss
    assert state.step == steps == len(recorder.grads_at_step)
    assert recorder.training == [True] * len(losses)
    assert row["val_loss"] == pytest.approx(trainer.evaluate(trainer.bundle.val)[0])
    assert row["val_accuracy"] == trainer.evaluate(trainer.bundle.val)[1]


def test_the_hooks_run_in_order_with_their_arguments() -> None:
    log: list = []
    first, second = Recorder("a", log), Recorder("b", log)
    settings = TrainerSettings(epochs=2, batch_size=40, limit_batches=3, accumulate=2)
    trainer = _trainer(settings, callbacks=(first, second))
    state = trainer.fit()
    assert first.trainers == [trainer] * 4  # on_fit_start, on_checkpoint (2), on_fit_end
    epoch = [
        *[(n, "epoch_start", e, 3) for e in (0,) for n in "ab"],
        *[(n, "batch_end", 0, 0) for n in "ab"],
        *[(n, "before_step", 0) for n in "ab"],
        *[(n, "batch_end", 1, 1) for n in "ab"],
        *[(n, "before_step", 1) for n in "ab"],
        *[(n, "batch_end", 2, 2) for n in "ab"],
        *[(n, "epoch_end", 1, 1) for n in "ab"],  # every on_epoch_end, then every on_checkpoint
        *[(n, "checkpoint", 1, 1, 1) for n in "ab"],
    ]
    second_epoch = [
        (n, what, *((a + 1,) if what == "epoch_start" else ()), *rest)
        for n, what, a, *rest in epoch
    ]
    assert log[:2] == [("a", "fit_start", 0), ("b", "fit_start", 0)]
    assert log[2:18] == epoch
    assert [entry[:2] for entry in log[18:34]] == [entry[:2] for entry in second_epoch]
    assert log[-2:] == [("a", "fit_end", "completed"), ("b", "fit_end", "completed")]
    assert (state.epoch, state.step, state.outcome, state.failure) == (2, 4, "completed", "")
    assert [row["epoch"] for row in state.history] == [1, 2]


def test_the_row_holds_the_epochs_numbers_in_order() -> None:
    class Extra:
        """A ValMetrics: one collector, fed every validation batch."""

        def __init__(self) -> None:
            self.seen: list[int] = []
            self.calls: list[tuple] = []

        def collector(self) -> Any:
            seen = self.seen

            class Collect:
                def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
                    assert outputs.shape[0] == targets.shape[0]
                    seen.append(len(targets))

            self.made = Collect()
            return self.made

        def __call__(self, parts, loss: float) -> dict[str, float]:
            assert parts == [self.made]  # the collector that saw the batches, from every rank
            self.calls.append((len(parts), loss))
            return {"val_extra": 2 * loss}

    extra = Extra()
    trainer = _trainer(TrainerSettings(epochs=1, batch_size=16), lr=0.0, val_metrics=extra)
    before = time.perf_counter()
    row = trainer.fit().history[0]
    took = time.perf_counter() - before
    keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_extra", "lr", "seconds"]
    assert list(row) == keys
    val_loss, val_accuracy = trainer.evaluate(trainer.bundle.val)
    assert (row["val_loss"], row["val_accuracy"]) == (val_loss, val_accuracy)
    assert row["val_extra"] == 2 * val_loss and extra.calls == [(1, val_loss)]
    assert sum(extra.seen) == len(trainer.bundle.val)  # every validation sample, once
    assert row["lr"] == 0.0 and row["epoch"] == 1
    assert 0 < row["seconds"] <= took
    # lr=0: the model never changes, so the epoch's loss is the training split's
    assert row["loss"] == pytest.approx(trainer.evaluate(trainer.bundle.train)[0], rel=1e-5)


def _by_hand(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``, in eval mode."""
    model.eval()
    with torch.no_grad():
        outputs = model(split.x)
    loss = torch.nn.functional.cross_entropy(outputs, split.y)
    return float(loss), float((outputs.argmax(1) == split.y).double().mean())


def test_evaluate_scores_the_split_in_eval_mode_and_restores_the_mode() -> None:
    bundle = _iris()
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(8,), dropout=0.5)  # train mode would drop units
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = tasks.loss_fn(bundle.spec.task)
    settings = TrainerSettings(batch_size=2)  # evaluation batches of 8: 8, 8, 7
    trainer = Trainer(model, bundle, optimizer, loss_fn, settings)
    seen: list[torch.Tensor] = []

    class Collect:
        def add(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
            assert not outputs.requires_grad and not model.training
            seen.append(targets)

    model.train()
    loss, accuracy = trainer.evaluate(bundle.val, Collect())
    assert model.training  # as it was
    assert [len(t) for t in seen] == [8, 8, 7] and torch.equal(torch.cat(seen), bundle.val.y)
    expected_loss, expected_accuracy = _by_hand(model, bundle.val)
    assert loss == pytest.approx(expected_loss, rel=1e-6)  # weighted by batch size
    assert accuracy == pytest.approx(expected_accuracy)
    assert trainer.evaluate(bundle.val) == (loss, accuracy)  # no collector: the same
    assert not model.training  # left in eval mode when it was
    trainer.settings = replace(settings, limit_batches=2)  # the first 16 samples only
    first = Split(bundle.val.x[:16], bundle.val.y[:16])
    assert trainer.evaluate(bundle.val)[0] == pytest.approx(_by_hand(model, first)[0], rel=1e-6)
    trainer.settings = settings
    trainer.world_size, trainer.rank = 2, 1  # rank 1 of 2 scores every second sample
    odd = Split(bundle.val.x[1::2], bundle.val.y[1::2])
    assert trainer.evaluate(bundle.val)[0] == pytest.approx(_by_hand(model, odd)[0], rel=1e-6)


def test_evaluate_of_an_empty_split_divides_by_one() -> None:
    trainer = _trainer(TrainerSettings())
    empty = Split(trainer.bundle.val.x[:0], trainer.bundle.val.y[:0])
    assert trainer.evaluate(empty)[0] == 0.0


def test_without_val_metrics_the_row_has_no_extra_columns() -> None:
    trainer = _trainer(TrainerSettings(epochs=1, limit_batches=1))
    assert trainer._validate() == (*trainer.evaluate(trainer.bundle.val), {})


def test_the_augmentation_is_what_the_model_trains_on() -> None:
    calls: list[int] = []

    def blank(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.zeros_like(x)

    recorder = Recorder()
    settings = TrainerSettings(epochs=1, batch_size=40)
    trainer = _trainer(settings, lr=0.0, augment=blank, callbacks=(recorder,))
    row = trainer.fit().history[0]
    train = trainer.bundle.train
    assert calls == [40, 40, len(train) - 80]  # every training batch, once; never validation
    on_blanks = trainer.evaluate(Split(torch.zeros_like(train.x), train.y))
    assert row["loss"] == pytest.approx(on_blanks[0], rel=1e-5)
    assert row["accuracy"] == on_blanks[1]


def test_a_state_passed_in_is_continued() -> None:
    trainer = _trainer(TrainerSettings(epochs=3, limit_batches=1))
    start = FitState(epoch=2, step=7, history=[{"epoch": 1.0}, {"epoch": 2.0}])
    state = trainer.fit(start)
    assert state is start
    assert (state.epoch, state.step, len(state.history)) == (3, 8, 3)


def test_a_callback_asking_to_stop_ends_the_loop_after_that_epoch() -> None:
    class Stop(Callback):
        def on_epoch_end(self, trainer, state, row) -> None:  # type: ignore[no-untyped-def]
            state.should_stop = True

    state = _trainer(TrainerSettings(epochs=5, limit_batches=1), callbacks=(Stop(),)).fit()
    assert (state.epoch, state.outcome) == (1, "completed")
    already = _trainer(TrainerSettings(epochs=5, limit_batches=1)).fit(FitState(should_stop=True))
    assert already.epoch == 0 and already.outcome == "completed"


class _Raise(Callback):
    def __init__(self, error: BaseException, log: list) -> None:
        self.error, self.log = error, log

    def on_epoch_start(self, trainer, state, n_batches) -> None:  # type: ignore[no-untyped-def]
        raise self.error

    def on_fit_end(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.log.append((state.outcome, state.failure))


class _Pruned(Exception):
    status = "pruned"


@pytest.mark.parametrize(
    ("error", "outcome", "failure"),
    [
        (RunInterrupted("stopped by SIGTERM"), "interrupted", "stopped by SIGTERM"),
        (RunInterrupted(""), "interrupted", "interrupted"),
        (KeyboardInterrupt(), "interrupted", "interrupted"),
        (OSError("No space left on device"), "failed", "No space left on device"),
        (ValueError(), "failed", "ValueError"),
        (_Pruned("trial 3 pruned"), "pruned", "trial 3 pruned"),
    ],
)
def test_how_fit_ended_is_recorded_before_on_fit_end(
    error: BaseException, outcome: str, failure: str
) -> None:
    log: list = []
    trainer = _trainer(TrainerSettings(epochs=2), callbacks=(_Raise(error, log),))
    with pytest.raises(type(error)):
        trainer.fit()
    assert log == [(outcome, failure)]


def test_a_nan_loss_names_the_epoch_and_the_step() -> None:
    class Poison(Callback):
        def on_epoch_start(self, trainer, state, n_batches) -> None:  # type: ignore[no-untyped-def]
            if state.epoch == 1:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("inf"))

    trainer = _trainer(TrainerSettings(epochs=3, limit_batches=2), callbacks=(Poison(),))
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    assert str(caught.value) == (
        "the loss became nan at epoch 2, step 3; last.pt keeps the last good epoch. "
        "Try a lower optimizer.lr or trainer.grad_clip=1.0"
    )


def test_a_stop_request_ends_the_epoch_after_the_batch_that_saw_it() -> None:
    class Signal(Callback):
        def __init__(self, flag: StopFlag) -> None:
            self.flag, self.batches = flag, 0

        def on_batch_end(self, trainer, state, batch, loss) -> None:  # type: ignore[no-untyped-def]
            self.batches, self.step = self.batches + 1, state.step
            if state.epoch == 1:
                self.flag.signal_name = "SIGTERM"

    flag = StopFlag()
    signal = Signal(flag)
    settings = TrainerSettings(epochs=3, batch_size=40)
    trainer = _trainer(settings, stop_flag=flag, callbacks=(signal,))
    with pytest.raises(RunInterrupted) as caught:
        trainer.fit()
    assert str(caught.value) == (
        "stopped by SIGTERM during epoch 2; that epoch was abandoned and checkpoints/last.pt "
        "holds epoch 1"
    )
    assert signal.batches == 4  # 3 in epoch 1, then the first batch of epoch 2, stepped
    assert signal.step == 4  # that batch's step was taken: the flag is read after it


def test_an_interruption_without_a_flag_names_another_process() -> None:
    trainer = _trainer(TrainerSettings())
    message = str(trainer._interrupted(FitState(epoch=4)))
    assert message == (
        "stopped by a signal to another process during epoch 5; that epoch was abandoned "
        "and checkpoints/last.pt holds epoch 4"
    )
    trainer.stop_flag = StopFlag()  # a flag that was never raised
    assert str(trainer._interrupted(FitState())).startswith("stopped by a signal to another")


# -- clipping, the lr of the step, schedules -------------------------------------------


def _one_step(settings: TrainerSettings, lr: float = 1.0) -> tuple[Trainer, list[torch.Tensor]]:
    trainer = _trainer(replace(settings, epochs=1, limit_batches=1), lr=lr)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    recorder = Recorder()
    trainer.callbacks.append(recorder)
    trainer.fit()
    changes = [p.detach() - b for p, b in zip(trainer.model.parameters(), before, strict=True)]
    assert recorder.grads_at_step[0] > 0.01  # the hook saw the unclipped gradients
    return trainer, changes


def test_clipping_by_norm_bounds_the_global_norm_of_the_step() -> None:
    _, changes = _one_step(TrainerSettings(grad_clip=0.01))  # grad_clip_mode="norm"
    norm = torch.cat([c.flatten() for c in changes]).norm()
    assert float(norm) == pytest.approx(0.01, rel=1e-4)  # lr=1: the step is the gradient
    assert len({round(float(c.abs().max()), 6) for c in changes}) > 1  # not clipped entrywise


def test_clipping_by_value_bounds_each_entry() -> None:
    _, changes = _one_step(TrainerSettings(grad_clip=1e-3, grad_clip_mode="value"))
    largest = max(float(c.abs().max()) for c in changes)
    assert largest == pytest.approx(1e-3, rel=1e-4)
    norm = float(torch.cat([c.flatten() for c in changes]).norm())
    assert norm > 2e-3  # many entries at the bound: not a clip of the norm


def test_no_clipping_by_default() -> None:
    _, changes = _one_step(TrainerSettings())
    assert max(float(c.abs().max()) for c in changes) > 0.01


def test_history_lr_is_the_lr_of_the_epochs_last_step() -> None:
    bundle = _iris()
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    halve = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    trainer = Trainer(
        model,
        bundle,
        optimizer,
        tasks.loss_fn(bundle.spec.task),
        TrainerSettings(epochs=2, batch_size=40, limit_batches=3),
        Schedule(halve, "step"),
    )
    state = trainer.fit()
    assert [row["lr"] for row in state.history] == [0.25, 2**-5]  # steps 3 and 6
    assert optimizer.param_groups[0]["lr"] == 2**-6


def test_an_epoch_schedule_steps_once_an_epoch() -> None:
    bundle = _iris()
    model = MLP(bundle.spec, hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    halve = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    settings = TrainerSettings(epochs=3, batch_size=40, limit_batches=3)
    loss = tasks.loss_fn(bundle.spec.task)
    state = Trainer(model, bundle, optimizer, loss, settings, Schedule(halve)).fit()
    assert [row["lr"] for row in state.history] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(("watch", "expected"), [(None, "val_loss"), ("loss", "loss")])
def test_a_plateau_schedule_reads_its_own_metric_or_the_monitor(watch, expected) -> None:
    class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics: float, epoch: Any = None) -> None:  # type: ignore[override]
            self.seen.append(metrics)

    trainer = _trainer(TrainerSettings(epochs=1, limit_batches=1))
    plateau = Plateau(trainer.optimizer)
    plateau.seen = []
    trainer.schedule = Schedule(plateau, "epoch", watch)
    trainer.scheduler = plateau
    row = trainer.fit().history[0]
    assert plateau.seen == [row[expected]]


def test_a_step_schedule_is_not_stepped_at_the_epochs_end() -> None:
    trainer = _trainer(TrainerSettings())
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, 1, gamma=0.5)
    trainer.schedule, trainer.scheduler = Schedule(scheduler, "step"), scheduler
    trainer._step_epoch_scheduler({"val_loss": 1.0})
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1


# -- the best epoch -------------------------------------------------------------------


def _track(trainer: Trainer, values: list[tuple[float, float]], key: str) -> FitState:
    state = FitState()
    for epoch, (value, val_loss) in enumerate(values, 1):
        state.epoch = epoch
        row = {"epoch": epoch, key: value, "val_loss": val_loss}
        trainer._track_best(state, row)
        state.history.append(row)
    return state


def test_the_best_epoch_follows_the_monitor_and_its_direction() -> None:
    trainer = _trainer(TrainerSettings())  # monitor auto: val_loss, lower is better
    state = _track(trainer, [(0.5, 0.5), (0.4, 0.4), (0.45, 0.45), (0.4, 0.4)], "val_loss")
    assert (state.best_epoch, state.best_value) == (2, 0.4)  # a tie is no improvement
    assert state.best_row() == state.history[1]
    accuracy = _trainer(TrainerSettings(monitor="val_accuracy"))
    values = [(0.5, 0.9), (0.7, 0.8), (0.7, 0.6), (0.6, 0.1)]
    state = _track(accuracy, values, "val_accuracy")
    assert (state.best_epoch, state.best_value) == (3, 0.7)  # tie broken by val_loss


def test_best_row_is_none_without_a_best_epoch_or_its_row() -> None:
    assert FitState().best_row() is None
    assert FitState(history=[{"epoch": 1}], best_epoch=2).best_row() is None
    rows = [{"epoch": 1, "v": 1.0}, {"epoch": 2, "v": 2.0}, {"epoch": 2, "v": 3.0}]
    assert FitState(history=rows, best_epoch=2).best_row() == rows[2]  # the latest of an epoch
    assert FitState(history=rows, best_epoch=1).best_row() == rows[0]


# -- small parts ------------------------------------------------------------------------


def test_l2_penalises_weight_matrices_only() -> None:
    trainer = _trainer(TrainerSettings(), l2=0.5)
    weights = [p for p in trainer.model.parameters() if p.dim() > 1]
    expected = 0.5 * sum(float(w.detach().pow(2).sum()) for w in weights)
    assert trainer._penalty().item() == pytest.approx(expected, rel=1e-6)
    assert len(weights) < len(list(trainer.model.parameters()))


def test_l1_shrinks_by_lr_times_l1() -> None:
    settings = TrainerSettings(epochs=1, limit_batches=1)
    plain, shrunk = _trainer(settings, lr=0.1), _trainer(settings, lr=0.1, l1=0.25)
    plain.fit()
    shrunk.fit()
    for p, q in zip(plain.model.parameters(), shrunk.model.parameters(), strict=True):
        expected = torch.nn.functional.softshrink(p, 0.1 * 0.25) if p.dim() > 1 else p
        torch.testing.assert_close(q, expected)


def test_l2_of_a_model_with_one_weight_matrix() -> None:
    bundle = _iris()
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = tasks.loss_fn(bundle.spec.task)
    trainer = Trainer(model, bundle, optimizer, loss, TrainerSettings(), l2=0.5)
    expected = 0.5 * float(model.weight.detach().pow(2).sum())
    assert trainer._penalty().item() == pytest.approx(expected, rel=1e-6)


def test_an_epoch_of_one_sample_reports_that_samples_loss() -> None:
    iris = _iris()
    one = replace(iris, train=iris.train.subset(torch.tensor([0])))
    torch.manual_seed(0)
    model = MLP(one.spec, hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = tasks.loss_fn(one.spec.task)
    trainer = Trainer(model, one, optimizer, loss, TrainerSettings(epochs=1))
    row = trainer.fit().history[0]
    assert row["loss"] == pytest.approx(trainer.evaluate(one.train)[0], rel=1e-6)
    assert row["accuracy"] == trainer.evaluate(one.train)[1]


def test_l1_groups_keep_each_groups_index_and_its_penalised_tensors() -> None:
    a, b, c = (torch.nn.Parameter(torch.zeros(2, 2)) for _ in range(3))
    bias, bias2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD(
        [{"params": [bias]}, {"params": [bias2, a]}, {"params": [b, c]}], 0.1
    )
    groups = _l1_groups(optimizer, [a, c])
    assert [(i, [id(p) for p in ps]) for i, ps in groups] == [(1, [id(a)]), (2, [id(c)])]


def test_a_plain_loss_is_both_the_objective_and_the_reported_loss() -> None:
    objective = _plain_objective(lambda outputs, targets: (outputs - targets).abs().sum())
    assert objective(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])) == (4.0, 4.0)


def test_forward_passes_lengths_only_to_models_that_get_them() -> None:
    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Any:
            return ("x", x) if lengths is None else ("x+lengths", x, lengths)

    trainer = _trainer(TrainerSettings())
    x, lengths = torch.zeros(2, 3), torch.tensor([1, 2])
    assert trainer._forward(Split(x, x), Echo())[0] == "x"
    assert trainer._forward(Split(x, x, lengths), Echo()) == ("x+lengths", x, lengths)
    trainer.model = Echo()
    assert trainer._forward(Split(x, x))[0] == "x"


def test_autocast_only_when_mixed_precision_is_asked_for() -> None:
    with _trainer(TrainerSettings())._autocast():
        assert not torch.is_autocast_enabled("cpu")
    with _trainer(TrainerSettings(precision="bf16"))._autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


# -- a process group, faked: this process plays rank 1 of 2 -----------------------------


def test_rank_one_of_two_trains_on_its_shard() -> None:
    settings = TrainerSettings(epochs=1, batch_size=20, accumulate=2)  # 52 each: 3 batches
    recorder = Recorder()
    trainer = _trainer(settings, callbacks=(recorder,))
    trainer.world_size, trainer.rank = 2, 1
    reference = _trainer(settings)
    loss, accuracy, _ = _reference_epoch(reference, settings, shard=Shard(1, 2))
    row = trainer.fit().history[0]
    for p, q in zip(trainer.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert row["loss"] == pytest.approx(loss, rel=1e-5)
    assert row["accuracy"] == pytest.approx(accuracy)
    assert recorder.log[1][1:] == ("epoch_start", 0, 3)


def test_in_a_group_a_stop_request_is_agreed_before_backward() -> None:
    flag = StopFlag()
    flag.signal_name = "SIGINT"
    recorder = Recorder()
    trainer = _trainer(TrainerSettings(epochs=1), stop_flag=flag, callbacks=(recorder,))
    trainer.world_size = 2
    with pytest.raises(RunInterrupted, match="stopped by SIGINT during epoch 1"):
        trainer.fit()
    assert recorder.losses == []  # stopped before the first batch's step
    trainer.stop_flag = None
    assert trainer._step_checks(torch.tensor(1.0)) == (False, False)
    assert trainer._step_checks(torch.tensor(float("nan"))) == (True, False)


@pytest.mark.parametrize("failing", ["here", "elsewhere", "nowhere"])
def test_in_a_group_a_failing_callback_stops_every_rank(failing: str, monkeypatch) -> None:
    class Fail(Callback):
        def on_checkpoint(self, trainer, state, row) -> None:  # type: ignore[no-untyped-def]
            if failing == "here":
                raise OSError("disk full")

    asked: list = []

    def any_rank(flags):  # type: ignore[no-untyped-def]
        asked.append(list(flags))
        return [flags[0] or failing == "elsewhere"]

    monkeypatch.setattr(distributed, "any_rank", any_rank)
    trainer = _trainer(TrainerSettings(), callbacks=(Fail(),))
    trainer.world_size = 2
    state = FitState(epoch=3)
    if failing == "nowhere":
        trainer._epoch_end_callbacks(state, {})
    else:
        error = OSError if failing == "here" else distributed.PeerStopped
        message = "disk full" if failing == "here" else "another process stopped after epoch 3"
        with pytest.raises(error, match=f"^{message}$"):
            trainer._epoch_end_callbacks(state, {})
    assert asked == [[failing == "here"]]
    trainer.world_size = 1
    if failing == "here":
        with pytest.raises(OSError):  # alone: raised at once, nobody to tell
            trainer._epoch_end_callbacks(state, {})
        assert len(asked) == 1


def test_under_ddp_gradients_are_all_reduced_only_on_batches_that_step() -> None:
    # A real group of one process (gloo): DDP's flag is what no_sync() would set.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    class Flags(Callback):
        def __init__(self) -> None:
            self.flags: list[bool] = []

        def on_batch_end(self, trainer, state, batch, loss) -> None:  # type: ignore[no-untyped-def]
            self.flags.append(trainer._ddp.require_backward_grad_sync)

    class Counted(DistributedDataParallel):
        calls = 0

        def forward(self, *inputs: Any, **kwargs: Any) -> Any:
            Counted.calls += 1
            return super().forward(*inputs, **kwargs)

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        flags = Flags()
        trainer = _trainer(TrainerSettings(epochs=1, batch_size=20, accumulate=2))
        ddp = Counted(trainer.model)
        trainer = Trainer(ddp, trainer.bundle, trainer.optimizer, trainer.loss_fn,
                          trainer.settings, callbacks=(flags,))  # fmt: skip
        trainer.fit()
    finally:
        dist.destroy_process_group()
    assert flags.flags == [False, True] * 3  # 6 batches, a step after every second one
    assert Counted.calls == 6  # validation bypasses DDP's forward (no buffer sync)


# -- what the constructor decides ---------------------------------------------------------


def test_a_trainer_outside_a_group_is_rank_0_of_1_with_the_optimizers_lr() -> None:
    trainer = _trainer(TrainerSettings(), lr=0.3)
    assert (trainer.rank, trainer.world_size) == (0, 1)
    assert trainer._step_lr == 0.3  # what a row reports before any step
    assert (trainer.l1, trainer.l2, trainer.seed) == (0.0, 0.0, 0)
    assert trainer._l1_groups == []  # no soft-threshold without l1


def test_a_cpu_trainer_makes_no_grad_scaler_and_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a GradScaler is built without CUDA
        for precision in ("32", "bf16"):
            assert _trainer(TrainerSettings(precision=precision)).scaler is None


def test_fp16_on_the_cpu_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(UserError) as caught:
        _trainer(TrainerSettings(precision="fp16"))
    assert str(caught.value) == "trainer.precision=fp16 needs a CUDA device; use bf16 on the CPU"


def test_regression_rmse_is_in_the_datas_units() -> None:
    from dlrun.data.sklearn_sets import load_diabetes

    bundle = load_diabetes(seed=0)
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays as it is
    loss = tasks.loss_fn(bundle.spec.task)
    trainer = Trainer(model, bundle, optimizer, loss, TrainerSettings(epochs=1))
    row = trainer.fit().history[0]
    std = torch.tensor(bundle.meta["target_scaler"]["std"])
    with torch.no_grad():
        for split, key in ((bundle.train, "rmse"), (bundle.val, "val_rmse")):
            error = (model(split.x) - split.y) * std
            assert row[key] == pytest.approx(float(error.pow(2).mean().sqrt()), rel=1e-5), key
    assert std.item() > 10  # far from 1: standardised units would not pass


def test_a_bare_loss_function_is_trained_on_as_it_is() -> None:
    settings = TrainerSettings(epochs=1, batch_size=40)
    template = _trainer(settings)  # the same seeded model and optimizer
    cross_entropy = torch.nn.functional.cross_entropy  # no ``objective`` attribute
    bare = Trainer(template.model, template.bundle, template.optimizer, cross_entropy, settings)
    reference = _trainer(settings)
    _reference_epoch(reference, settings)
    bare.fit()
    for p, q in zip(bare.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


# -- a checkpoint holds everything to continue exactly --------------------------------


class _Noise:
    """An augmentation with its own generator, as :class:`BatchAugment` has."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn(x.shape, generator=self.generator)


class _Counter(Callback):
    """A callback with state: the epochs it has seen."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_end(self, trainer, state, row) -> None:  # type: ignore[no-untyped-def]
        self.epochs += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = state["epochs"]


def _resumable(epochs: int, seed: int = 0) -> Trainer:
    """Adam, a per-step schedule, dropout (the global RNG), an augmentation, a stateful
    callback: every piece of state a resume must restore."""
    bundle = _iris()
    torch.manual_seed(seed)
    model = MLP(bundle.spec, hidden=(8,), dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    # lr / (1 + step): a schedule restarted from step 0 would give another lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    settings = TrainerSettings(epochs=epochs, batch_size=40)
    loss = tasks.loss_fn(bundle.spec.task)
    return Trainer(model, bundle, optimizer, loss, settings, Schedule(scheduler, "step"),
                   (_Counter(),), augment=_Noise(), seed=3)  # fmt: skip


def _saved(trainer: Trainer, state: FitState) -> dict[str, Any]:
    """What the checkpoint callback writes: the trainer's state and the callbacks'."""
    checkpoint = trainer.state_dict(state)
    checkpoint["callbacks"] = {type(cb).__name__: cb.state_dict() for cb in trainer.callbacks}
    return checkpoint


def test_a_resumed_fit_equals_an_uninterrupted_one() -> None:
    whole = _resumable(epochs=3)
    whole_state = whole.fit()
    first = _resumable(epochs=2)
    state = first.fit()
    state.should_stop, state.stop_reason = False, ""
    checkpoint = _saved(first, state)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 6 and checkpoint["scaler"] is None
    assert checkpoint["rng"]["cuda"] == [] or torch.cuda.is_available()
    torch.rand(5)  # the global RNG moves on after the save
    resumed = _resumable(epochs=3, seed=9)  # other weights, a fresh optimizer and generators
    restored = resumed.load_state_dict(checkpoint)
    assert (restored.epoch, restored.step, restored.history) == (2, 6, state.history)
    assert (restored.best_epoch, restored.best_value) == (state.best_epoch, state.best_value)
    assert resumed.callbacks[0].epochs == 2
    final = resumed.fit(restored)
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    drop = {"seconds"}
    rows = [{k: v for k, v in r.items() if k not in drop} for r in final.history]
    assert rows == [{k: v for k, v in r.items() if k not in drop} for r in whole_state.history]
    assert (final.step, final.best_epoch, resumed.callbacks[0].epochs) == (
        9,
        whole_state.best_epoch,
        3,
    )
    assert resumed.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"]


def test_a_stop_decision_is_kept_and_an_old_checkpoint_still_loads() -> None:
    trainer = _resumable(epochs=1)
    state = trainer.fit()
    state.should_stop, state.stop_reason = True, "early stopping: val_loss did not improve"
    checkpoint = _saved(trainer, state)
    restored = _resumable(epochs=1).load_state_dict(checkpoint)
    assert (restored.should_stop, restored.stop_reason) == (True, state.stop_reason)
    for key in ("should_stop", "stop_reason", "callbacks", "scheduler", "scaler"):
        del checkpoint[key]  # a checkpoint from before these were saved
    checkpoint["rng"]["augment"] = None
    older = _resumable(epochs=1)
    restored = older.load_state_dict(checkpoint)
    assert (restored.should_stop, restored.stop_reason, older.callbacks[0].epochs) == (False, "", 0)
    plain = _trainer(TrainerSettings(epochs=1, limit_batches=1))
    saved = plain.state_dict(plain.fit())
    assert saved["scheduler"] is None and saved["rng"]["augment"] is None
    assert sorted(saved) == sorted(
        ["model", "optimizer", "scheduler", "scaler", "epoch", "step", "history", "best_value",
         "best_epoch", "should_stop", "stop_reason", "rng"]
    )  # fmt: skip
    assert _trainer(TrainerSettings()).load_state_dict(saved).epoch == 1  # no scheduler: fine
    # a checkpoint of a CUDA fp16 run (a loss scale, CUDA generators) resumed on the CPU
    saved["scaler"] = {"scale": 1024.0, "growth_factor": 2.0}
    saved["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    on_cpu = _trainer(TrainerSettings())
    assert on_cpu.load_state_dict(saved).epoch == 1 and on_cpu.scaler is None


# -- fp16 needs CUDA: its loss scaling, checked where there is a GPU -------------------


@pytest.mark.gpu
def test_fp16_clips_the_unscaled_gradients() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    iris = _iris()
    bundle = replace(
        iris, train=iris.train.to("cuda"), val=iris.val.to("cuda"), test=iris.test.to("cuda")
    )
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(8,)).cuda()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    settings = TrainerSettings(
        epochs=1, limit_batches=1, precision="fp16", grad_clip=1e-3, grad_clip_mode="value"
    )
    loss = tasks.loss_fn(bundle.spec.task)
    trainer = Trainer(model, bundle, optimizer, loss, settings)
    assert trainer.scaler is not None and trainer.amp_dtype is torch.float16
    state = trainer.fit()
    assert state.step == 1 and math.isfinite(state.history[0]["loss"])
    # clipped after unscaling: the step is the clip value itself, not 1/65536 of it
    steps = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
    change = max(float(s.abs().max()) for s in steps)
    assert change == pytest.approx(1e-3, rel=1e-3)
    # a resume restores the loss scale and the CUDA generators
    trainer.scaler.update(new_scale=1024.0)
    checkpoint = trainer.state_dict(state)
    assert checkpoint["scaler"]["scale"] == 1024.0 and checkpoint["rng"]["cuda"]
    torch.cuda.manual_seed_all(123)
    resumed = Trainer(model, bundle, torch.optim.SGD(model.parameters(), lr=1.0), loss, settings)
    resumed.load_state_dict(checkpoint)
    assert resumed.scaler.get_scale() == 1024.0
    assert torch.equal(torch.cuda.get_rng_state(), checkpoint["rng"]["cuda"][0])
