"""One run, end to end: data -> model -> fit -> evaluate -> files in the run dir.

Takes the resolved config as a plain dict (the CLI owns DictConfig) so the same function
serves the command line, tests and the benchmark. With ``trainer.devices=N`` it starts N
processes that each call it again as one rank (:mod:`dlrun.engine.launch`); in a rank,
only rank 0 prints, writes the run dir and evaluates the test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlrun import monitor as monitors
from dlrun import tasks
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
    epochs,
)
from dlrun.engine.checkpoint import load_checkpoint, load_model_weights
from dlrun.engine.device import select_device
from dlrun.engine.interrupts import graceful_interrupts
from dlrun.engine.launch import launched, spawn_run
from dlrun.engine.runstate import StatusHeartbeat, resume_early_stopping, schedule_length_kept
from dlrun.engine.schedules import build_scheduler, scheduler_monitor
from dlrun.engine.trainer import (
    FitState,
    Trainer,
    TrainerSettings,
    optimizer_steps_per_epoch,
    sparsity,
)
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
    """The metric that picks ``best.pt`` and, unless overridden, drives early stopping,
    plateau schedules, Optuna and the leaderboard (``trainer.monitor``; auto: val_loss)."""
    return check_monitor(monitors.resolve(cfg["trainer"]["monitor"]), task, "trainer.monitor")


def check_monitor(name: str, task: Task, key: str) -> str:
    """``name`` if the epoch rows of a ``task`` run record it, else a :class:`UserError`."""
    metric, _ = tasks.TRAIN_METRIC[task]
    allowed = ["loss", metric, "val_loss", f"val_{metric}"]
    if name not in allowed:
        raise UserError(
            f"{key}={name} is not recorded for a {task} task; use one of {', '.join(allowed)}"
        )
    return name


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
    trainer = make_trainer(cfg, exp, run_dir, console, main)
    with graceful_interrupts() as stop_flag:
        trainer.stop_flag = stop_flag
        state = resume_state(cfg, trainer, run_dir, exp.device, main, console)
        started = time.perf_counter()
        state = trainer.fit(state)
    train_seconds = time.perf_counter() - started
    if not main:  # rank 0 evaluates the unwrapped model and shares the results
        return distributed.broadcast_object(None)
    scored = exp.bundle if eval_bundle is None else eval_bundle.to(exp.device)
    metrics = evaluate_best(cfg, exp, scored, run_dir, state, trainer.monitor.name, console)
    metrics["train"] = train_summary(cfg, exp.model, state, trainer.monitor.name, train_seconds)
    t = metrics["train"]
    best = "n/a" if state.best_value is None else f"{state.best_value:.4g}"
    console.print(
        f"best {t['monitor']} {best} at epoch {state.best_epoch}; "
        f"trained {epochs(state.epoch)} in {train_seconds:.1f}s",
        highlight=False,
    )
    if cfg["regularization"]["l1"] or cfg["regularization"]["l2"]:
        console.print(
            f"weights exactly 0: {t['zero_weights']:.1%}; "
            f"with |w| < 1e-3: {t['near_zero_weights']:.1%}",
            highlight=False,
        )
    return distributed.broadcast_object(metrics)


def make_trainer(
    cfg: dict[str, Any], exp: Experiment, run_dir: Path, console: Console, main: bool
) -> Trainer:
    """Optimizer, schedule, callbacks, augmentation and loss around the built model."""
    spec, trainer_cfg, reg = exp.bundle.spec, cfg["trainer"], cfg["regularization"]
    settings = make_settings(cfg, spec.task)
    say = lambda line: console.print(line, markup=False)  # noqa: E731
    params = prepare_transfer(cfg, exp.model, spec, run_dir, say)  # init_from, freeze
    optimizer = instantiate(cfg["optimizer"])(params)
    scheduler, interval = build_scheduler(
        cfg["scheduler"],
        optimizer,
        epochs=settings.epochs,
        steps_per_epoch=optimizer_steps_per_epoch(
            len(exp.bundle.train), settings, distributed.world_size()
        ),
        monitor=settings.monitor,
    )
    callbacks = make_callbacks(cfg, run_dir, console, settings.monitor, main)
    n_params = sum(p.numel() for p in exp.model.parameters())
    console.print(
        f"{cfg.get('model_name', 'model')} ({n_params:,} parameters) on {spec.name} "
        f"[{spec.task}, {len(exp.bundle.train)}/{len(exp.bundle.val)}/{len(exp.bundle.test)} "
        f"train/val/test] - {exp.device}",
        highlight=False,
        markup=False,
    )
    if reg["label_smoothing"] and spec.task not in tasks.SMOOTHABLE:
        console.print(
            f"note: label smoothing is for class targets; a {spec.task} task ignores it",
            highlight=False,
        )
    augment = make_augment(cfg, spec)
    train_model = distributed.wrap(exp.model, exp.device)
    train_model = torch.compile(train_model) if trainer_cfg["compile"] else train_model
    return Trainer(
        train_model,
        exp.bundle,
        optimizer,
        tasks.loss_fn(spec.task, reg["label_smoothing"]),
        replace(settings, scheduler_interval=interval),
        scheduler,
        callbacks,
        augment=augment,
    )


def resume_state(
    cfg: dict[str, Any],
    trainer: Trainer,
    run_dir: Path,
    device: torch.device,
    main: bool,
    console: Console,
) -> FitState | None:
    """The state to continue from when ``cfg["resume"]`` is set (last.pt), else None."""
    if not cfg.get("resume"):
        return None
    # Rank 0 reads the file and sends it: other nodes may not see this disk.
    where = device if distributed.world_size() == 1 else "cpu"
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last, where) if main else None
    with schedule_length_kept(trainer.scheduler):  # more trainer.epochs may have been asked
        state = trainer.load_state_dict(distributed.broadcast_object(ckpt))
    note = resume_early_stopping(trainer.callbacks, state, bool(cfg.get("resume_completed")))
    console.print(
        f"resuming {run_dir} after epoch {state.epoch}" + (f"; {note}" if note else ""),
        highlight=False,
    )
    return state


def evaluate_best(
    cfg: dict[str, Any],
    exp: Experiment,
    scored: DataBundle,
    run_dir: Path,
    state: FitState,
    monitor: str,
    console: Console,
) -> dict[str, Any]:
    """Evaluate the best-validation weights (like Lightning's ``ckpt_path="best"``),
    unless early stopping was told not to restore them; writes the run's report files.

    ``scored`` is the data the test (and val) metrics come from: the run's own bundle, or
    a fold's held-out part under cross-validation.
    """
    from dlrun.evaluation import evaluate_run, headline_table

    best_path = run_dir / "checkpoints" / "best.pt"
    stop = cfg["regularization"]["early_stopping"]
    keep_last = stop["enabled"] and not stop["restore_best"]
    if best_path.is_file() and not keep_last:
        load_model_weights(exp.model, load_checkpoint(best_path, exp.device), best_path)
    trainer_cfg = cfg["trainer"]
    metrics = evaluate_run(
        exp.model,
        scored,
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
    return metrics


def train_summary(
    cfg: dict[str, Any], model: torch.nn.Module, state: FitState, monitor: str, seconds: float
) -> dict[str, Any]:
    """metrics.json's ``train`` section: how training went and how sparse the weights are."""
    zero, near_zero = sparsity(model)
    return {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "monitor": monitor,
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "stop_reason": state.stop_reason,
        "zero_weights": zero,  # share of weight entries that are exactly 0 (L1)
        "near_zero_weights": near_zero,  # |w| < 1e-3
        "threads": torch.get_num_threads(),
    }


def make_settings(cfg: dict[str, Any], task: Task) -> TrainerSettings:
    """The trainer's settings from the config; every monitor name checked against ``task``.

    When early stopping follows ``trainer.monitor`` its ``min_delta`` is the trainer's
    too, so ``best.pt`` is the epoch early stopping counts from.
    """
    trainer_cfg, reg = cfg["trainer"], cfg["regularization"]
    monitor = monitor_metric(cfg, task)
    stop = reg["early_stopping"]
    follows = stop["enabled"] and follows_trainer(stop, monitor)
    if stop["enabled"] and not follows:
        check_monitor(stop["monitor"], task, "regularization.early_stopping.monitor")
    plateau = check_monitor(scheduler_monitor(cfg["scheduler"], monitor), task, "scheduler.monitor")
    return TrainerSettings(
        epochs=trainer_cfg["epochs"],
        batch_size=trainer_cfg["batch_size"],
        limit_batches=trainer_cfg["limit_batches"],
        grad_clip=trainer_cfg["grad_clip"],
        l1=reg["l1"],
        l2=reg["l2"],
        monitor=monitor,
        min_delta=stop["min_delta"] if follows else 0.0,
        scheduler_monitor=plateau,
        seed=cfg["seed"],
        precision=trainer_cfg["precision"],
        grad_clip_mode=trainer_cfg["grad_clip_mode"],
        accumulate=trainer_cfg["accumulate"],
    )


def follows_trainer(stop: dict[str, Any], monitor: str) -> bool:
    """Whether early stopping watches what the trainer does (null or the same metric and
    direction), so it reads the trainer's best epoch instead of keeping its own."""
    watched = monitors.resolve(stop["monitor"], monitor)
    return watched == monitor and monitors.metric_mode(watched, stop["mode"]) == (
        monitors.metric_mode(monitor)
    )


def make_callbacks(
    cfg: dict[str, Any], run_dir: Path, console: Console, monitor: str, main: bool
) -> list[Callback]:
    """The run's callbacks; only the main process gets those that print or write files."""
    trainer_cfg, stop = cfg["trainer"], cfg["regularization"]["early_stopping"]
    callbacks: list[Callback] = []
    status = dict(cfg.get("run_status") or {})
    if main:
        callbacks += [
            ProgressReporter(console, trainer_cfg["progress"]),
            TrainLog(run_dir / "train.log"),
            HistoryCSV(run_dir / "history.csv"),
            Checkpointer(run_dir / "checkpoints"),
            # status.json follows last.pt: the heartbeat records only saved epochs
            StatusHeartbeat(Path(status.pop("dir", run_dir)), status),
        ]
    if stop["enabled"]:
        own = None  # None: read the trainer's best epoch
        if not follows_trainer(stop, monitor):
            own = monitors.Monitor(stop["monitor"], stop["mode"], stop["min_delta"])
        callbacks.append(EarlyStopping(own, stop["patience"]))
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
