"""The training engine: schedules, regularization, accumulation, faults and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun import tasks
from dlrun.data.sklearn_sets import load_iris
from dlrun.engine.augment import AugmentSettings, BatchAugment
from dlrun.engine.checkpoint import load_checkpoint, save_checkpoint
from dlrun.engine.schedules import build_scheduler
from dlrun.engine.trainer import Trainer, TrainerSettings, TrainingDiverged
from dlrun.errors import UserError
from dlrun.models.mlp import MLP
from dlrun.rundir import run_status
from tests.conftest import compose_cfg, group_options, run_cli, sigterm_after_first_epoch


def _trainer(settings: TrainerSettings, lr: float = 0.1) -> Trainer:
    bundle = load_iris(seed=0)
    torch.manual_seed(0)
    model = MLP(bundle.spec, hidden=(16,))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, bundle, opt, tasks.loss_fn(bundle.spec.task), settings)


@pytest.mark.parametrize("name", group_options("scheduler"))
def test_every_scheduler_builds_and_changes_lr_as_configured(name: str) -> None:
    cfg = compose_cfg(f"scheduler={name}")["scheduler"]
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler, interval = build_scheduler(cfg, opt, epochs=5, steps_per_epoch=4, monitor_mode="max")
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
    cfg = {**compose_cfg("scheduler=cosine")["scheduler"], "warmup": 5}
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler, _ = build_scheduler(cfg, opt, epochs=5, steps_per_epoch=10, monitor_mode="min")
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(49):
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < lrs[4] == pytest.approx(1.0)
    assert lrs[-1] < 0.01


def test_onecycle_per_epoch_is_refused() -> None:
    cfg = {**compose_cfg("scheduler=onecycle")["scheduler"], "interval": "epoch"}
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(UserError, match="every batch"):
        build_scheduler(cfg, opt, epochs=2, steps_per_epoch=3, monitor_mode="min")


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


def test_l1_gives_sparser_weights_than_none(tmp_path: Path) -> None:
    from rich.console import Console

    from dlrun.runner import train_and_evaluate

    common = ["model=mlp", "data=breast_cancer", "trainer.epochs=15", "optimizer.lr=0.01"]
    plain = train_and_evaluate(compose_cfg(*common), _mk(tmp_path / "a"), Console(quiet=True))
    sparse = train_and_evaluate(
        compose_cfg(*common, "regularization=l1", "regularization.l1=0.001"),
        _mk(tmp_path / "b"),
        Console(quiet=True),
    )
    assert sparse["train"]["near_zero_weights"] > 2 * plain["train"]["near_zero_weights"]


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
original = callbacks.Checkpointer.on_epoch_end
def on_epoch_end(self, trainer, state, row):
    original(self, trainer, state, row)
    if state.epoch == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # as hard as a crash gets
callbacks.Checkpointer.on_epoch_end = on_epoch_end
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
