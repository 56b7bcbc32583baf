"""The training engine: schedules, regularization, accumulation, faults and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dlrun import tasks
from dlrun.config import AugmentSettings
from dlrun.data.sklearn_sets import load_breast_cancer, load_iris
from dlrun.data.spec import DataBundle, Task
from dlrun.engine.augment import BatchAugment
from dlrun.engine.callbacks import Callback, EarlyStopping, TrainLog
from dlrun.engine.checkpoint import load_checkpoint, save_checkpoint
from dlrun.engine.interrupts import RunInterrupted
from dlrun.engine.trainer import (
    Trainer,
    TrainerSettings,
    TrainingDiverged,
    optimizer_steps_per_epoch,
    sparsity,
)
from dlrun.errors import UserError
from dlrun.models.mlp import MLP
from dlrun.rundir import run_status
from dlrun.runner import make_schedule
from tests.conftest import (
    compose_cfg,
    group_options,
    read_history,
    run_cli,
    run_in_process,
    sigterm_after_first_epoch,
)


def _trainer(
    settings: TrainerSettings,
    lr: float = 0.1,
    bundle: DataBundle | None = None,
    optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
    label_smoothing: float = 0.0,
    callbacks: tuple[Callback, ...] = (),
    l1: float = 0.0,
) -> Trainer:
    bundle = bundle or load_iris(seed=0)
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(16,))
    opt = optimizer(model.parameters(), lr=lr)
    loss = tasks.loss_fn(bundle.spec.task, label_smoothing)
    return Trainer(model, bundle, opt, loss, settings, callbacks=callbacks, l1=l1)


def _run(tmp: Path, *overrides: str) -> dict:
    return run_in_process(tmp, "model=mlp", *overrides)


@pytest.mark.parametrize("name", group_options("scheduler"))
def test_every_scheduler_builds_and_changes_lr_as_configured(name: str) -> None:
    cfg = compose_cfg(f"scheduler={name}").scheduler
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = make_schedule(cfg, opt, epochs=5, steps_per_epoch=4, monitor="val_accuracy")
    scheduler, interval = schedule.scheduler, schedule.interval
    if name == "none":
        assert scheduler is None
        return
    assert interval == cfg["interval"]
    lrs = []
    for _ in range(20 if interval == "step" else 5):
        opt.step()
        if name == "plateau":
            scheduler.step(0.5)  # a metric that never improves
        else:
            scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert len(set(lrs)) > 1 or name in ("step", "multistep"), lrs
    if name == "plateau":
        assert scheduler.mode == "max"  # follows the monitored metric's direction


def test_cosine_warms_up_then_decays() -> None:
    cfg = {**compose_cfg("scheduler=cosine").scheduler, "warmup": 5}
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler = make_schedule(cfg, opt, epochs=5, steps_per_epoch=10, monitor="val_loss").scheduler
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(49):
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < lrs[4] == pytest.approx(1.0)
    assert lrs[-1] < 0.01


def test_onecycle_per_epoch_is_refused() -> None:
    cfg = {**compose_cfg("scheduler=onecycle").scheduler, "interval": "epoch"}
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(UserError, match="every batch"):
        make_schedule(cfg, opt, epochs=2, steps_per_epoch=3, monitor="val_loss")


def test_nan_loss_stops_within_the_step_with_advice() -> None:
    trainer = _trainer(TrainerSettings(epochs=2))
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1.*optimizer\.lr"):
        trainer.fit()


def test_gradient_accumulation_equals_one_big_batch() -> None:
    # No shuffling differences: both see the same first 64 samples in the same order.
    big = _trainer(TrainerSettings(epochs=1, batch_size=64, limit_batches=1))
    small = _trainer(TrainerSettings(epochs=1, batch_size=32, limit_batches=2, accumulate=2))
    big.fit()
    small.fit()
    for a, b in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_gradient_clipping_by_value_bounds_every_entry() -> None:
    trainer = _trainer(TrainerSettings(grad_clip=1e-4, grad_clip_mode="value"), lr=1.0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.settings = TrainerSettings(
        epochs=1, limit_batches=1, grad_clip=1e-4, grad_clip_mode="value"
    )
    trainer.fit()
    for old, new in zip(before, trainer.model.parameters(), strict=True):
        assert (new.detach() - old).abs().max() <= 1e-4 + 1e-7


def test_l1_makes_weights_exactly_zero_and_says_how_many(tmp_path: Path) -> None:
    # The issue: with regularization=l1, 2% of weights were below 1e-3 and none was zero.
    common = ["data=breast_cancer", "trainer.epochs=10"]
    plain = _run(tmp_path / "a", *common, "regularization=none")
    sparse = _run(tmp_path / "b", *common, "regularization=l1")
    assert plain["train"]["zero_weights"] == 0.0
    assert sparse["train"]["zero_weights"] > 0.3  # measured: ~0.6 at 10 epochs
    assert sparse["train"]["near_zero_weights"] >= sparse["train"]["zero_weights"]
    assert sparse["test"]["f1_macro"] > 0.85  # sparse, and still a good model


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_l1_is_a_soft_threshold_in_the_optimizers_own_step_size(optimizer: type) -> None:
    # One step with l1 equals the same step without it, then w <- sign(w)max(|w|-t, 0),
    # t = lr * l1 (SGD) or lr * l1 / (sqrt(v_hat) + eps) (Adam): the L1 term is not in
    # the gradient any more, and small weights land on exactly 0.
    lr, l1 = 0.01, 1.0
    settings = TrainerSettings(epochs=1, limit_batches=1, batch_size=32)
    plain = _trainer(settings, lr=lr, optimizer=optimizer)
    plain.fit()
    shrunk = _trainer(settings, lr=lr, optimizer=optimizer, l1=l1)
    shrunk.fit()
    for p, q in zip(plain.model.parameters(), shrunk.model.parameters(), strict=True):
        if p.dim() < 2:  # biases are not penalised
            torch.testing.assert_close(q, p)
            continue
        t = lr * l1
        if optimizer is torch.optim.Adam:
            v = plain.optimizer.state[p]["exp_avg_sq"] / (1 - 0.999)
            t = t / (v.sqrt() + 1e-8)
        torch.testing.assert_close(q, p.sign() * (p.abs() - t).clamp(min=0))
        assert (q == 0).any()


def test_augmentation_is_seeded_and_keeps_shape() -> None:
    x = torch.randn(8, 1, 16, 16)
    settings = AugmentSettings(crop_padding=2, hflip=True, rotate_degrees=10, translate=0.1)
    a, b = BatchAugment(settings, seed=1), BatchAugment(settings, seed=1)
    out = a(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    torch.testing.assert_close(out, b(x))
    identity = BatchAugment(AugmentSettings(), seed=1)
    torch.testing.assert_close(identity(x), x, atol=1e-5, rtol=1e-5)


def test_checkpoints_are_atomic_and_safe(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp files left
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


KILL_AFTER_EPOCH = """
import os, signal, sys
from dlrun.engine import callbacks
original = callbacks.Checkpointer.on_checkpoint
def on_checkpoint(self, trainer, state, row):
    original(self, trainer, state, row)
    if state.epoch == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # as hard as a crash gets
callbacks.Checkpointer.on_checkpoint = on_checkpoint
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""

RUN = [
    "model=mlp",
    "data=digits_flat",
    "trainer.epochs=4",
    "trainer.batch_size=128",
    "regularization.dropout=0.3",
    "scheduler=cosine",
    "seed=5",
]


def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert run_cli(*RUN, f"hydra.run.dir={whole}", cwd=tmp_path).returncode == 0
    killed = tmp_path / "killed"
    crashed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_EPOCH, *RUN, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "KILL_AT": "2"},
    )
    assert crashed.returncode == -signal.SIGKILL
    assert json.loads((killed / "status.json").read_text())["status"] == "running"
    assert run_status(killed)["status"] == "interrupted"  # its process is gone
    resumed = run_cli(f"resume={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["test"] == b["test"]
    assert len((killed / "history.csv").read_text().splitlines()) == 5
    assert json.loads((killed / "status.json").read_text())["status"] == "completed"
    again = run_cli(f"resume={killed}", cwd=tmp_path)
    assert again.returncode != 0 and "already completed" in again.stderr


def test_sigterm_saves_and_marks_the_run_interrupted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, err = sigterm_after_first_epoch(
        "model=mlp", "data=digits_flat", "trainer.batch_size=16", run_dir=run_dir, cwd=tmp_path
    )
    assert code != 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and "SIGTERM" in status["reason"]
    assert "resume with: dlrun resume=" in err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] >= 1


def test_bad_resume_target_is_one_message(tmp_path: Path) -> None:
    result = run_cli(f"resume={tmp_path / 'nope'}", cwd=tmp_path)
    assert result.returncode != 0 and "not a dlrun run dir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_cuda_training_with_mixed_precision(precision: str, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from rich.console import Console

    from dlrun.runner import train_and_evaluate

    cfg = compose_cfg(
        "trainer.device=cuda",
        f"trainer.precision={precision}",
        "trainer.epochs=2",
        "trainer.compile=false",
    )
    metrics = train_and_evaluate(cfg, _mk(tmp_path / "run"), Console(quiet=True))
    assert metrics["test"]["accuracy"] > 0.5


def test_fp16_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    bundle = load_iris(seed=0)
    model = MLP(bundle.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        Trainer(
            model, bundle, opt, tasks.loss_fn(bundle.spec.task), TrainerSettings(precision="fp16")
        )


def test_bf16_autocast_trains_on_cpu() -> None:
    bf16 = _trainer(TrainerSettings(epochs=1, precision="bf16")).fit().history[0]
    fp32 = _trainer(TrainerSettings(epochs=1)).fit().history[0]
    for key in ("loss", "val_loss"):
        assert bf16[key] != fp32[key]  # the steps really ran in bfloat16
        assert bf16[key] == pytest.approx(fp32[key], rel=0.02)  # and computed the same thing


def test_best_checkpoint_keeps_its_epoch_when_last_moves_on(tmp_path: Path) -> None:
    from dlrun.engine.checkpoint import copy_checkpoint

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint({"model": {}, "epoch": 1}, last)
    copy_checkpoint(last, best)
    save_checkpoint({"model": {}, "epoch": 2}, last)
    assert load_checkpoint(best)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_status_of_an_interrupted_run_says_how_far_it_got(tmp_path: Path) -> None:
    from dlrun.rundir import write_status

    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n2,0.4\n")
    write_status(tmp_path, "interrupted", reason="SIGTERM")
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["status"], status["reason"], status["epoch"]) == ("interrupted", "SIGTERM", 2)


# -- schedules count optimizer steps -------------------------------------------------

# iris: 105 training samples, batches of 8 -> 14 batches, accumulate=4 -> 4 optimizer
# steps an epoch, 8 in 2 epochs. history's lr is the lr of each epoch's last step. Counted
# in batches (28), every schedule stopped about a quarter of the way through.
SCHEDULE_CASES = {
    "cosine": (["scheduler=cosine"], lambda lrs: lrs[-1] < 0.05 * BASE_LR),  # step 7 of 8
    "onecycle": (  # the last step is the schedule's last: max_lr / 25 / 1e4
        ["scheduler=onecycle", "scheduler.max_lr=0.01"],
        lambda lrs: lrs[-1] == pytest.approx(0.01 / 25 / 1e4),
    ),
    "warm-up": (  # half of the 8 steps warm up: the last step of epoch 1 is at the peak
        ["scheduler=cosine", "scheduler.warmup=0.5"],
        lambda lrs: lrs[0] == pytest.approx(BASE_LR),
    ),
    "inverse_time": (  # Keras' decay counts optimizer steps: step 7 uses lr / (1 + 7 d)
        ["scheduler=inverse_time", "scheduler.decay=0.1"],
        lambda lrs: lrs[-1] == pytest.approx(BASE_LR / (1 + 0.1 * 7)),
    ),
}
BASE_LR = 0.001


@pytest.mark.parametrize("name", list(SCHEDULE_CASES))
def test_schedules_count_optimizer_steps_under_accumulation(name: str, tmp_path: Path) -> None:
    overrides, holds = SCHEDULE_CASES[name]
    _run(
        tmp_path / "run",
        "data=iris",
        *overrides,
        "trainer.epochs=2",
        "trainer.batch_size=8",
        "trainer.accumulate=4",
        f"optimizer.lr={BASE_LR}",
    )
    lrs = [row["lr"] for row in read_history(tmp_path / "run")]
    assert holds(lrs), lrs


def test_sparsity_counts_exact_and_near_zeros_of_weight_matrices_only() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.0005], [1.0, -0.002]]))
        model[1].weight.copy_(torch.tensor([[0.0, 5.0]]))
        model[0].bias.fill_(0.0)  # biases are not weights: never counted
        model[1].bias.fill_(0.0)
    assert sparsity(model) == (2 / 6, 3 / 6)  # |w| < 1e-3 by default
    assert sparsity(model, tolerance=0.01) == (2 / 6, 4 / 6)
    assert sparsity(torch.nn.BatchNorm1d(3)) == (0.0, 0.0)  # no matrix at all: no division


def test_optimizer_steps_per_epoch_counts_shards_limits_and_accumulation() -> None:
    settings = TrainerSettings(batch_size=8, accumulate=4)
    assert optimizer_steps_per_epoch(105, settings) == 4  # 14 batches
    assert optimizer_steps_per_epoch(105, settings, world_size=2) == 2  # 53 -> 7 batches
    assert optimizer_steps_per_epoch(105, replace(settings, limit_batches=5)) == 2
    assert optimizer_steps_per_epoch(105, replace(settings, accumulate=1)) == 14


# -- reported numbers are true numbers -----------------------------------------------

LOSSES = {
    "multiclass": (torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])),
    "language_model": (torch.randn(2, 3, 5), torch.tensor([[0, 1, 2], [3, 4, 0]])),
    "binary": (torch.randn(6, 1), torch.tensor([0.0, 1, 1, 0, 1, 0])),
    "multilabel": (torch.randn(4, 3), torch.tensor([[0.0, 1, 1], [1, 0, 0]] * 2)),
}


@pytest.mark.parametrize("task", list(LOSSES))
def test_label_smoothing_changes_the_objective_not_the_reported_loss(task: str) -> None:
    outputs, targets = LOSSES[task]
    objective, loss = tasks.loss_fn(Task(task), 0.2).objective(outputs, targets)
    torch.testing.assert_close(loss, tasks.loss_fn(Task(task))(outputs, targets))
    if task in ("multiclass", "language_model"):  # torch's own smoothing, same numbers
        flat = outputs.reshape(-1, outputs.shape[-1])
        smoothed = torch.nn.CrossEntropyLoss(label_smoothing=0.2)(flat, targets.reshape(-1))
    else:  # Keras' BinaryCrossentropy(label_smoothing=0.2): y * 0.8 + 0.1
        bce = torch.nn.BCEWithLogitsLoss()
        smoothed = bce(outputs.reshape(targets.shape), targets * 0.8 + 0.1)
    torch.testing.assert_close(objective, smoothed)
    assert not torch.equal(objective, loss)


def test_label_smoothing_trains_binary_models_too() -> None:
    # It used to be ignored for sigmoid outputs: the same weights with and without it.
    settings = TrainerSettings(epochs=1, limit_batches=3)
    bundle = load_breast_cancer(seed=0)
    plain = _trainer(settings, bundle=bundle)
    smooth = _trainer(settings, bundle=bundle, label_smoothing=0.2)
    plain_state, smooth_state = plain.fit(), smooth.fit()
    first = next(plain.model.parameters())
    assert not torch.equal(first, next(smooth.model.parameters()))
    # each reports its true loss: the same formula as the unsmoothed run
    assert smooth_state.history[0]["val_loss"] == pytest.approx(smooth.evaluate(bundle.val)[0])
    assert plain_state.history[0]["loss"] != smooth_state.history[0]["loss"]


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        (["data=iris", "regularization.label_smoothing=0.2"], ["loss", "accuracy"]),
        (["data=breast_cancer", "regularization.label_smoothing=0.2"], ["loss", "accuracy"]),
        (["data=diabetes"], ["loss", "rmse"]),  # rmse in the data's units, loss standardised
    ],
    ids=["multiclass-smoothed", "binary-smoothed", "regression"],
)
def test_history_at_the_best_epoch_equals_metrics_json(
    overrides: list[str], keys: list[str], tmp_path: Path
) -> None:
    # The same weights (best.pt) scored by the trainer each epoch and by the evaluator
    # at the end must give the same numbers in the same units.
    metrics = _run(tmp_path / "run", *overrides, "trainer.epochs=3", "eval.splits=[test,val]")
    rows = read_history(tmp_path / "run")
    best = rows[metrics["train"]["best_epoch"] - 1]
    for key in keys:
        assert best[f"val_{key}"] == pytest.approx(metrics["val"][key], rel=1e-5), key
    assert best["val_loss"] == pytest.approx(metrics["train"]["best_value"])


# -- messages -------------------------------------------------------------------------


class _FailIn(Callback):
    """Raises ``error`` when epoch ``epoch`` starts."""

    def __init__(self, epoch: int, error: BaseException) -> None:
        self.epoch, self.error = epoch, error

    def on_epoch_start(self, trainer: Trainer, state, n_batches: int) -> None:  # type: ignore[no-untyped-def]
        if state.epoch + 1 == self.epoch:
            raise self.error


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (RunInterrupted("stopped by SIGTERM during epoch 2"), "interrupted with 1 epoch completed"),
        (OSError("No space left on device"), "failed with 1 epoch completed: No space left"),
    ],
)
def test_train_log_never_calls_a_stopped_run_finished(
    error: BaseException, line: str, tmp_path: Path
) -> None:
    log = tmp_path / "train.log"
    trainer = _trainer(
        TrainerSettings(epochs=3, limit_batches=1),
        callbacks=(TrainLog(tmp_path), _FailIn(2, error)),
    )
    with pytest.raises(type(error)):
        trainer.fit()
    text = log.read_text()
    assert "finished" not in text and line in text.splitlines()[-1], text
    assert "3 epochs, monitor val_loss" in text.splitlines()[0]


def test_early_stopping_counts_one_epoch_in_the_singular() -> None:
    state = _trainer(
        TrainerSettings(epochs=30, limit_batches=1),
        lr=1e-9,  # nothing improves after epoch 1
        callbacks=(EarlyStopping(patience=1),),
    ).fit()
    assert state.epoch == 2
    assert state.stop_reason == "early stopping: val_loss did not improve for 1 epoch"


def test_the_training_loss_column_is_the_true_loss_too() -> None:
    # lr=0: the weights never change, so the epoch's mean training loss is the loss of
    # that fixed model on the training split, which smoothing must not inflate.
    trainer = _trainer(TrainerSettings(epochs=1), lr=0.0, label_smoothing=0.3)
    row = trainer.fit().history[0]
    assert row["loss"] == pytest.approx(trainer.evaluate(trainer.bundle.train)[0], rel=1e-5)
    assert row["val_loss"] == pytest.approx(trainer.evaluate(trainer.bundle.val)[0])
