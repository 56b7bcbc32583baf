"""One run, end to end: data -> model -> fit -> evaluate -> files in the run dir.

Takes the resolved config as a plain dict (the CLI owns DictConfig) so the same function
serves the command line, tests and the benchmark. With ``trainer.devices=N`` it starts N
processes that each call it again as one rank (:mod:`dlrun.engine.launch`); in a rank,
only rank 0 prints, writes the run dir and evaluates the test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlrun import tasks
from dlrun.config import metric_mode
from dlrun.data.batches import Shard, n_batches
from dlrun.data.contract import save_contract
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.engine import distributed
from dlrun.engine.augment import AugmentSettings, BatchAugment
from dlrun.engine.callbacks import (
    Callback,
    Checkpointer,
    EarlyStopping,
    HistoryCSV,
    ProgressReporter,
    TrainLog,
)
from dlrun.engine.checkpoint import load_checkpoint, load_model_weights
from dlrun.engine.device import select_device
from dlrun.engine.interrupts import graceful_interrupts
from dlrun.engine.launch import launched, spawn_run
from dlrun.engine.schedules import build_scheduler
from dlrun.engine.trainer import Trainer, TrainerSettings, near_zero_fraction
from dlrun.errors import UserError
from dlrun.models import build_model
from dlrun.transfer import prepare as prepare_transfer


@dataclass
class Experiment:
    """The built pieces of a run, before training."""

    bundle: DataBundle
    model: torch.nn.Module
    device: torch.device


def instantiate(node: dict[str, Any], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a :class:`UserError` through unwrapped.

    Hydra wraps anything a target raises in ``InstantiationException``; a user error
    (missing file, impossible pairing) should reach the CLI as itself.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def monitor_metric(cfg: dict[str, Any], task: Task) -> str:
    """The validation metric that picks ``best.pt`` (``trainer.monitor``, or auto)."""
    name, _ = tasks.TRAIN_METRIC[task]
    monitor = cfg["trainer"]["monitor"]
    if monitor == "auto":
        classification = task not in (Task.REGRESSION, Task.FORECAST)
        return f"val_{name}" if classification else "val_loss"
    allowed = ["loss", name, "val_loss", f"val_{name}"]
    if monitor not in allowed:
        raise UserError(
            f"trainer.monitor={monitor} is not recorded for a {task} task; "
            f"use one of {', '.join(allowed)}"
        )
    return monitor


def build(cfg: dict[str, Any], bundle: DataBundle | None = None) -> Experiment:
    """Seed, pick the device, load the data (unless given) and build the model."""
    threads = cfg["trainer"]["num_threads"]
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    device = distributed.process_device(select_device(cfg["trainer"]["device"]))
    with distributed.rank_zero_first():  # a download happens once, then the others read it
        bundle = (bundle or instantiate(cfg["data"], seed=cfg["seed"])).to(device)
    act = instantiate(cfg["activation"])
    model_name = cfg.get("model_name", "model")
    model = build_model(
        cfg["model"], bundle.spec, act, cfg["regularization"]["dropout"], model_name
    ).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
        if cfg["trainer"]["channels_last"] and bundle.spec.kind is DataKind.IMAGE:
            model = model.to(memory_format=torch.channels_last)
            for split in (bundle.train, bundle.val, bundle.test):
                split.x = split.x.contiguous(memory_format=torch.channels_last)
    return Experiment(bundle, model, device)


def train_and_evaluate(
    cfg: dict[str, Any],
    run_dir: Path,
    console: Console | None = None,
    bundle: DataBundle | None = None,
    eval_bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir`` and evaluate the best checkpoint on the test split.

    ``bundle`` replaces the config's data; ``eval_bundle`` is what gets scored when that
    differs from what was trained on (cross-validation: each fold's held-out part is
    only scored, never used to pick the checkpoint).
    """
    if cfg["trainer"].get("devices", 1) > 1 and not launched():
        return spawn_run(cfg, run_dir, bundle, eval_bundle)
    if distributed.env_world_size() > 1:
        distributed.init(distributed.process_device(select_device(cfg["trainer"]["device"])))
    main = distributed.is_main()
    console = (console or Console(stderr=False)) if main else Console(quiet=True)
    exp = build(cfg, bundle)
    if main:  # what predict, export and serve need, kept with the run (no data needed)
        save_contract(run_dir, exp.bundle)
    spec = exp.bundle.spec
    reg, trainer_cfg = cfg["regularization"], cfg["trainer"]
    monitor = monitor_metric(cfg, spec.task)
    params = prepare_transfer(
        cfg, exp.model, spec, run_dir, lambda line: console.print(line, markup=False)
    )
    optimizer = instantiate(cfg["optimizer"])(params)
    steps_per_epoch = n_batches(
        Shard(distributed.rank(), distributed.world_size()).length(len(exp.bundle.train)),
        trainer_cfg["batch_size"],
        trainer_cfg["limit_batches"],
    )
    scheduler, interval = build_scheduler(
        cfg["scheduler"],
        optimizer,
        epochs=trainer_cfg["epochs"],
        steps_per_epoch=steps_per_epoch,
        monitor_mode=metric_mode(monitor),
    )
    settings = TrainerSettings(
        epochs=trainer_cfg["epochs"],
        batch_size=trainer_cfg["batch_size"],
        limit_batches=trainer_cfg["limit_batches"],
        grad_clip=trainer_cfg["grad_clip"],
        l1=reg["l1"],
        l2=reg["l2"],
        monitor=monitor,
        seed=cfg["seed"],
        scheduler_interval=interval,
        precision=trainer_cfg["precision"],
        grad_clip_mode=trainer_cfg["grad_clip_mode"],
        accumulate=trainer_cfg["accumulate"],
    )
    ckpt_dir = run_dir / "checkpoints"
    callbacks = make_callbacks(cfg, run_dir, console, monitor, main)
    n_params = sum(p.numel() for p in exp.model.parameters())
    console.print(
        f"{cfg.get('model_name', 'model')} ({n_params:,} parameters) on {spec.name} "
        f"[{spec.task}, {len(exp.bundle.train)}/{len(exp.bundle.val)}/{len(exp.bundle.test)} "
        f"train/val/test] - {exp.device}",
        highlight=False,
        markup=False,
    )
    augment = make_augment(cfg, spec)
    train_model = distributed.wrap(exp.model, exp.device)
    train_model = torch.compile(train_model) if trainer_cfg["compile"] else train_model
    with graceful_interrupts() as stop_flag:
        trainer = Trainer(
            train_model,
            exp.bundle,
            optimizer,
            tasks.loss_fn(spec.task, reg["label_smoothing"]),
            settings,
            scheduler,
            callbacks,
            stop_flag,
            augment,
        )
        state = None
        if cfg.get("resume"):
            last = ckpt_dir / "last.pt"
            # Rank 0 reads the file and sends it: other nodes may not see this disk.
            where = exp.device if distributed.world_size() == 1 else "cpu"
            ckpt = load_checkpoint(last, where) if main else None
            state = trainer.load_state_dict(distributed.broadcast_object(ckpt))
            console.print(f"resuming {run_dir} after epoch {state.epoch}", highlight=False)
        started = time.perf_counter()
        state = trainer.fit(state)
    train_seconds = time.perf_counter() - started
    if not main:  # rank 0 evaluates the unwrapped model and shares the results
        return distributed.broadcast_object(None)

    # The test split judges the best-validation weights (like Lightning's ckpt_path="best"),
    # unless early stopping was told not to restore them.
    best_path = ckpt_dir / "best.pt"
    stop = reg["early_stopping"]
    keep_last = stop["enabled"] and not stop["restore_best"]
    if best_path.is_file() and not keep_last:
        load_model_weights(exp.model, load_checkpoint(best_path, exp.device), best_path)

    from dlrun.evaluation import evaluate_run, headline_table

    metrics = evaluate_run(
        exp.model,
        exp.bundle if eval_bundle is None else eval_bundle.to(exp.device),
        run_dir,
        splits=tuple(cfg["eval"]["splits"]),
        batch_size=max(256, trainer_cfg["batch_size"]),
        device=exp.device,
        threshold=cfg["eval"]["threshold"],
        limit_batches=trainer_cfg["limit_batches"],
        history=state.history,
        run_summary=cfg.get("summary", ""),
        monitor=monitor,
    )
    console.print(headline_table(metrics))
    best = "n/a" if state.best_value is None else f"{state.best_value:.4g}"
    console.print(
        f"best {monitor} {best} at epoch {state.best_epoch}; "
        f"trained {state.epoch} epochs in {train_seconds:.1f}s",
        highlight=False,
    )
    sparsity = near_zero_fraction(exp.model)
    if reg["l1"] or reg["l2"]:
        console.print(f"weights with |w| < 1e-3: {sparsity:.1%}", highlight=False)
    metrics["train"] = {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "monitor": monitor,
        "seconds": train_seconds,
        "parameters": n_params,
        "stop_reason": state.stop_reason,
        "near_zero_weights": sparsity,
        "threads": torch.get_num_threads(),
    }
    return distributed.broadcast_object(metrics)


def make_callbacks(
    cfg: dict[str, Any], run_dir: Path, console: Console, monitor: str, main: bool
) -> list[Callback]:
    """The run's callbacks; only the main process gets those that print or write files."""
    trainer_cfg, stop = cfg["trainer"], cfg["regularization"]["early_stopping"]
    callbacks: list[Callback] = []
    if main:
        callbacks += [
            ProgressReporter(console, trainer_cfg["progress"]),
            TrainLog(run_dir / "train.log"),
            HistoryCSV(run_dir / "history.csv"),
            Checkpointer(run_dir / "checkpoints"),
        ]
    if stop["enabled"]:
        callbacks.append(
            EarlyStopping(stop["monitor"], stop["mode"], stop["patience"], stop["min_delta"])
        )
    trial = cfg.get("trial")
    if trial and main:  # a job of the Optuna sweeper: report each epoch, stop if pruned
        from dlrun.sweep.pruning import OptunaPruning

        callbacks.append(
            OptunaPruning(trial["storage"], trial["study_name"], trial["number"], monitor)
        )
    logger_cfg = dict(cfg.get("logger") or {"_target_": None})
    if logger_cfg.get("_target_") is not None and main:
        logger_cfg["log_dir"] = str(run_dir / logger_cfg.get("log_dir", "logs"))
        callbacks.append(instantiate(logger_cfg))
    return callbacks


def make_augment(cfg: dict[str, Any], spec: DataSpec) -> BatchAugment | None:
    """Batch augmentation when enabled; refused for data that isn't images."""
    settings = cfg["regularization"]["augmentation"]
    if not settings["enabled"]:
        return None
    if spec.kind is not DataKind.IMAGE:
        raise UserError(
            f"regularization.augmentation is for images; data={spec.name} is {spec.kind}"
        )
    fields = {k: v for k, v in settings.items() if k != "enabled"}
    return BatchAugment(AugmentSettings(**fields), cfg["seed"])
