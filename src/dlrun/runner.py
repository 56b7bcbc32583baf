"""One run: build -> fit -> test on the best checkpoint, into a run dir.

Takes the typed config (:class:`dlrun.config.RunConfig`; the CLI owns DictConfig) so the
same function serves the command line, tests and the benchmark. This is the layer that
turns config into objects (Hydra's ``instantiate``): the engine below it is handed
built things and never sees Hydra. With ``trainer.devices=N`` it starts N processes that
each call it again as one rank (:mod:`dlrun.engine.launch`); in a rank, only rank 0
prints, writes the run dir and evaluates the test split.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlrun import monitor as monitors
from dlrun import startup_gc, tasks
from dlrun.config import EarlyStoppingSettings, RunConfig, RunContext
from dlrun.data.contract import save_contract
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.diagnostics.recorders import diagnostics_callbacks
from dlrun.diagnostics.summary import GRADIENT_PICTURE, diagnose, gradient_pictures
from dlrun.display import number
from dlrun.engine import distributed, eager
from dlrun.engine.augment import BatchAugment
from dlrun.engine.callbacks import EarlyStopping, TrainLog, epochs
from dlrun.engine.checkpoint import load_checkpoint, load_model_weights
from dlrun.engine.core_use import CoreUse, busy_note, usable_cores
from dlrun.engine.device import check_precision, select_device
from dlrun.engine.interrupts import graceful_interrupts
from dlrun.engine.launch import launched, spawn_run
from dlrun.engine.resume import resume_early_stopping, schedule_length_kept
from dlrun.engine.schedules import Schedule, build_scheduler
from dlrun.engine.trainer import (
    Callback,
    FitState,
    Trainer,
    optimizer_steps_per_epoch,
    sparsity,
)
from dlrun.errors import UserError
from dlrun.evaluation import prefetch
from dlrun.evaluation.epoch import epoch_metrics
from dlrun.models import build_model
from dlrun.transfer import prepare as prepare_transfer


@dataclass
class Setup:
    """What :func:`build` makes before training: the data on its device and the model."""

    bundle: DataBundle
    model: torch.nn.Module
    device: torch.device


def train_and_evaluate(
    cfg: RunConfig,
    run_dir: Path,
    console: Console | None = None,
    bundle: DataBundle | None = None,
    eval_bundle: DataBundle | None = None,
    context: RunContext | None = None,
) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir``, then test the best checkpoint; the metrics.

    ``bundle`` replaces the config's data; ``eval_bundle`` is what gets scored when that
    differs from what was trained on (cross-validation: each fold's held-out part is
    only scored, never used to pick the checkpoint). ``context`` carries what the CLI
    knows beyond the config (names, the status.json owner).
    """
    context = context or RunContext()
    if cfg.trainer.devices > 1 and not launched():
        return spawn_run(train_and_evaluate, cfg, run_dir, bundle, eval_bundle, context)
    main = _join_process_group(cfg.trainer.device)
    console = (console or Console(stderr=False)) if main else Console(quiet=True)
    setup = build(cfg, bundle, context.model_name)
    trainer = make_trainer(cfg, setup, run_dir, console, main, context)
    startup_gc.settle()  # imports done, model built: collect from here on (see the module)
    # the evaluation's imports load while the model trains (not beside torch.compile, whose
    # imports of torch._dynamo and torch.export torchmetrics' could race with)
    imports = prefetch.start() if main and not cfg.trainer.compile else None
    known = announce_data(setup.bundle, run_dir, console) if main else 0
    fitted = fit(cfg, trainer, run_dir, console, context.continuing)
    state = fitted.state
    if not main:  # rank 0 evaluates the unwrapped model and shares the results
        return distributed.broadcast_object(None)
    if imports is not None:
        imports.join()  # before any fork: a child must not inherit a half-done import
        startup_gc.freeze_once("evaluation imports")
    scored = setup.bundle if eval_bundle is None else eval_bundle.to(setup.device)
    monitor, callbacks = trainer.monitor.name, trainer.callbacks
    extra = gradient_pictures(cfg, callbacks, run_dir)  # drawn with the evaluation's
    summary = context.summary
    metrics = evaluate_best(cfg, setup, scored, run_dir, state, monitor, console, summary, extra)
    announce_data(scored, run_dir, console, since=known)
    metrics["train"] = train_summary(setup.model, fitted, monitor)
    drawn = [GRADIENT_PICTURE] if extra else []
    diagnose(cfg, context, state.history, metrics, callbacks, run_dir, console, drawn)
    report_training(cfg, console, metrics["train"], state)
    return distributed.broadcast_object(metrics)


def _join_process_group(device: str) -> bool:
    """Join the process group a launcher described (if any); whether this is rank 0."""
    if distributed.env_world_size() > 1:
        distributed.init(distributed.process_device(select_device(device)))
    return distributed.is_main()


def instantiate(node: Any, **kwargs: Any) -> Any:
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


# ------------------------------------------------------------------------------ build
def build(cfg: RunConfig, bundle: DataBundle | None = None, model_name: str = "model") -> Setup:
    """Seed, pick the device, load the data (unless given) and build the model."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    torch.manual_seed(cfg.seed)
    device = distributed.process_device(select_device(cfg.trainer.device))
    check_precision(cfg.trainer.precision, device)
    with distributed.rank_zero_first():  # a download happens once, then the others read it
        bundle = (bundle or instantiate(cfg.data, seed=cfg.seed)).to(device)
    act = instantiate(cfg.activation)
    dropout = cfg.regularization.dropout
    model = build_model(cfg.model, bundle.spec, act, dropout, model_name).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest
        if cfg.trainer.channels_last and bundle.spec.kind is DataKind.IMAGE:
            model = model.to(memory_format=torch.channels_last)
            for split in (bundle.train, bundle.val, bundle.test):
                if isinstance(split, Split):  # streamed batches arrive NCHW; convs cope
                    split.x = split.x.contiguous(memory_format=torch.channels_last)
    return Setup(bundle, model, device)


def announce_data(bundle: DataBundle, run_dir: Path, console: Console, since: int = 0) -> int:
    """The loader's notes and skipped files on the terminal and in ``train.log`` (those
    found from ``since`` on, after training), its preprocessing in ``preprocess.json``."""
    from dlrun.data import notes

    if since == 0:
        notes.write_preprocess(bundle.meta, run_dir)
        save_contract(run_dir, bundle)  # what predict, export and serve need (no data)
    log = TrainLog(run_dir)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)
        log.write(line)

    return notes.announce(bundle.meta, say, since)


def make_trainer(
    cfg: RunConfig,
    setup: Setup,
    run_dir: Path,
    console: Console,
    main: bool,
    context: RunContext | None = None,
) -> Trainer:
    """Optimizer, schedule, callbacks, augmentation and loss around the built model."""
    spec, reg = setup.bundle.spec, cfg.regularization
    monitor = make_monitor(cfg, spec.task)
    eager.install()  # before the optimizer exists: no torch._dynamo import (~1 s) for it
    say = lambda line: console.print(line, markup=False)  # noqa: E731
    params = prepare_transfer(cfg, setup.model, spec, run_dir, say)  # init_from, freeze
    optimizer = instantiate(cfg.optimizer)(params)
    steps = optimizer_steps_per_epoch(
        len(setup.bundle.train), cfg.trainer, distributed.world_size()
    )
    schedule = make_schedule(
        cfg.scheduler, optimizer, epochs=cfg.trainer.epochs, steps_per_epoch=steps,
        monitor=monitor.name,
    )  # fmt: skip
    callbacks = make_callbacks(cfg, run_dir, console, monitor.name, main, context)
    _describe(console, setup, reg.label_smoothing, (context or RunContext()).model_name)
    model = distributed.wrap(setup.model, setup.device)
    model = torch.compile(model) if cfg.trainer.compile else model
    loss = tasks.loss_fn(spec.task, reg.label_smoothing)
    watched = (monitor.name, schedule.monitor, reg.early_stopping.monitor)
    val_metrics = epoch_metrics(setup.bundle, cfg.eval.threshold, watched)
    return Trainer(
        model, setup.bundle, optimizer, loss, cfg.trainer, schedule, callbacks,
        monitor=monitor, l1=reg.l1, l2=reg.l2, seed=cfg.seed, augment=make_augment(cfg, spec),
        val_metrics=val_metrics,
    )  # fmt: skip


def _describe(console: Console, setup: Setup, label_smoothing: float, model_name: str) -> None:
    """The line that says what trains on what, and a note when a setting does nothing."""
    spec, bundle = setup.bundle.spec, setup.bundle
    n_params = sum(p.numel() for p in setup.model.parameters())
    console.print(
        f"{model_name} ({n_params:,} parameters) on {spec.name} "
        f"[{spec.task}, {len(bundle.train)}/{len(bundle.val)}/{len(bundle.test)} "
        f"train/val/test] - {setup.device}",
        highlight=False,
        markup=False,
    )
    if label_smoothing and spec.task not in tasks.SMOOTHABLE:
        console.print(
            f"note: label smoothing is for class targets; a {spec.task} task ignores it",
            highlight=False,
        )


def check_monitor(name: str, task: Task, key: str) -> str:
    """``name`` if the epoch rows of a ``task`` run record it, else a :class:`UserError`."""
    return tasks.check_monitor(name, task, key)


def make_monitor(cfg: RunConfig, task: Task) -> monitors.Monitor:
    """The metric that picks ``best.pt`` and, unless they name their own, drives early
    stopping, plateau schedules, Optuna and the leaderboard (``trainer.monitor``; auto:
    val_loss). Every monitor name the config gives is checked against ``task`` here.

    When early stopping follows ``trainer.monitor`` its ``min_delta`` is the trainer's
    too, so ``best.pt`` is the epoch early stopping counts from.
    """
    name = check_monitor(monitors.resolve(cfg.trainer.monitor), task, "trainer.monitor")
    stop = cfg.regularization.early_stopping
    follows = stop.enabled and follows_trainer(stop, name)
    if stop.enabled and not follows:
        watched = monitors.resolve(stop.monitor, name)
        check_monitor(watched, task, "regularization.early_stopping.monitor")
    plateau = monitors.resolve((cfg.scheduler or {}).get("monitor"), name)
    check_monitor(plateau, task, "scheduler.monitor")
    return monitors.Monitor(name, min_delta=stop.min_delta if follows else 0.0)


def follows_trainer(stop: EarlyStoppingSettings, monitor: str) -> bool:
    """Whether early stopping watches what the trainer does (null or the same metric and
    direction), so it reads the trainer's best epoch instead of keeping its own."""
    watched = monitors.resolve(stop.monitor, monitor)
    return watched == monitor and monitors.metric_mode(watched, stop.mode) == (
        monitors.metric_mode(monitor)
    )


def make_schedule(
    node: dict[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    monitor: str,
) -> Schedule:
    """The ``scheduler`` config built around ``optimizer``: ``interval`` and ``monitor``
    are dlrun's keys (a plateau schedule follows ``monitor``, the trainer's, unless the
    node names its own); the rest is the target's (:func:`build_scheduler`)."""
    node = dict(node or {})
    interval = node.pop("interval", "epoch")
    watched = monitors.resolve(node.pop("monitor", None), monitor)
    factory = instantiate(node) if node.get("_target_") is not None else None
    return build_scheduler(
        factory, optimizer, interval=interval, epochs=epochs, steps_per_epoch=steps_per_epoch,
        monitor=watched,
    )  # fmt: skip


def make_augment(cfg: RunConfig, spec: DataSpec) -> BatchAugment | None:
    """Batch augmentation when enabled; refused for data that isn't images."""
    settings = cfg.regularization.augmentation
    if not settings.enabled:
        return None
    if spec.kind is not DataKind.IMAGE:
        raise UserError(
            f"regularization.augmentation is for images; data={spec.name} is {spec.kind}"
        )
    return BatchAugment(settings, cfg.seed)


# -------------------------------------------------------------------------- callbacks
def make_callbacks(
    cfg: RunConfig,
    run_dir: Path,
    console: Console,
    monitor: str,
    main: bool,
    context: RunContext | None = None,
) -> list[Callback]:
    """The ``callbacks:`` group, then the callbacks other groups ask for: early stopping
    (``regularization``), the Optuna pruner (a sweeper trial) and the ``logger``.

    In a process group only rank 0 builds callbacks that print or write files.
    """
    context = context or RunContext()
    facts = {  # what a callback's constructor may ask for by name
        "run_dir": run_dir,
        "console": console,
        "monitor": monitor,
        "status_dir": Path(context.status_dir or run_dir),
        "identity": dict(context.identity) or None,
    }
    callbacks = [build_callback(name, node, facts, main) for name, node in _nodes(cfg.callbacks)]
    stopper = early_stopping(cfg.regularization.early_stopping, monitor)
    extra = [stopper] if stopper else []
    if main:
        extra += pruning(cfg.trial, monitor) + logger_callbacks(cfg, run_dir)
        extra += diagnostics_callbacks(cfg.diagnostics)
    return [cb for cb in callbacks if cb is not None] + extra


def _nodes(group: Any) -> list[tuple[str, dict[str, Any]]]:
    """The ``callbacks:`` entries that name a target (``callbacks.<name>=null`` drops one)."""
    return [(k, v) for k, v in (group or {}).items() if v and v.get("_target_") is not None]


def build_callback(
    name: str, node: dict[str, Any], facts: dict[str, Any], main: bool
) -> Callback | None:
    """One ``callbacks.<name>`` entry, built like the Lightning-Hydra template's
    ``instantiate_callbacks``; the run's ``facts`` fill the constructor arguments the
    node leaves out. None on a rank other than 0 for a ``main_process_only`` callback."""
    from hydra.utils import get_class

    target = node["_target_"]
    try:
        cls = get_class(target)
    except Exception as exc:  # ImportError, or Hydra's wrapping of it
        raise UserError(f"callbacks.{name}._target_={target} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        raise UserError(
            f"callbacks.{name}._target_={target} is not a callback "
            "(a subclass of dlrun.engine.trainer.Callback)"
        )
    if cls.main_process_only and not main:
        return None
    wanted = inspect.signature(cls).parameters
    return instantiate(node, **{k: v for k, v in facts.items() if k in wanted and k not in node})


def early_stopping(stop: EarlyStoppingSettings, monitor: str) -> EarlyStopping | None:
    """``regularization.early_stopping`` as a callback (None when not enabled).

    Following the trainer's monitor it reads the trainer's best epoch; otherwise it keeps
    its own :class:`~dlrun.monitor.Monitor`."""
    if not stop.enabled:
        return None
    own = None
    if not follows_trainer(stop, monitor):
        own = monitors.Monitor(monitors.resolve(stop.monitor, monitor), stop.mode, stop.min_delta)
    return EarlyStopping(own, stop.patience)


def pruning(trial: Any, monitor: str) -> list[Callback]:
    """A job of the Optuna sweeper reports each epoch to its trial and stops if pruned."""
    if not trial:
        return []
    from dlrun.sweep.pruning import OptunaPruning

    return [OptunaPruning(trial["storage"], trial["study_name"], trial["number"], monitor)]


def logger_callbacks(cfg: RunConfig, run_dir: Path) -> list[Callback]:
    """The ``logger`` group's trackers (none with ``logger=none``); rank 0 only.

    mlflow, tensorboard, wandb, or several (``logger=[mlflow,tensorboard]``)."""
    from dlrun.tracking import loggers

    return loggers(cfg, run_dir)


# -------------------------------------------------------------------------------- fit
@dataclass
class Fitted:
    """What training left: its final state and how it ran."""

    state: FitState
    seconds: float
    threads: int  # torch's CPU threads while training (the evaluation may use fewer)
    others: float | None  # cores other work kept busy meanwhile (CPU training only)


def fit(
    cfg: RunConfig, trainer: Trainer, run_dir: Path, console: Console, continuing: bool = False
) -> Fitted:
    """Train (from ``last.pt`` when resuming) with Ctrl-C/SIGTERM stopping cleanly after
    the step; how much other work shared the cores is measured on the CPU
    (:mod:`dlrun.engine.core_use`)."""
    on_cpu = trainer.bundle.train.device.type == "cpu"
    with graceful_interrupts() as stop_flag:
        trainer.stop_flag = stop_flag
        state = resume_state(cfg, trainer, run_dir, console, continuing)
        started, use = time.perf_counter(), CoreUse.now() if on_cpu else None
        state = trainer.fit(state)
    seconds = time.perf_counter() - started
    end = CoreUse.now() if use is not None else None
    others = end.others_since(use) if end is not None else None
    return Fitted(state, seconds, torch.get_num_threads(), others)


def resume_state(
    cfg: RunConfig, trainer: Trainer, run_dir: Path, console: Console, continuing: bool = False
) -> FitState | None:
    """The state to continue from when ``cfg.resume`` is set (last.pt), else None.

    ``continuing``: a completed run given more epochs (early stopping starts afresh).
    """
    if not cfg.resume:
        return None
    # Rank 0 reads the file and sends it: other nodes may not see this disk.
    device = trainer.bundle.train.device
    where = device if distributed.world_size() == 1 else "cpu"
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last, where) if distributed.is_main() else None
    with schedule_length_kept(trainer.scheduler):  # more trainer.epochs may have been asked
        state = trainer.load_state_dict(distributed.broadcast_object(ckpt))
    note = resume_early_stopping(trainer.callbacks, state, continuing)
    console.print(
        f"resuming {run_dir} after epoch {state.epoch}" + (f"; {note}" if note else ""),
        highlight=False,
    )
    return state


# ------------------------------------------------------------------------------- test
def evaluate_best(
    cfg: RunConfig,
    setup: Setup,
    scored: DataBundle,
    run_dir: Path,
    state: FitState,
    monitor: str,
    console: Console,
    summary: str = "",
    extra_pictures: Sequence[tuple[float, Callable[[], None]]] = (),
) -> dict[str, Any]:
    """Evaluate the best-validation weights (like Lightning's ``ckpt_path="best"``),
    unless early stopping was told not to restore them; writes the run's report files.

    ``scored`` is the data the test (and val) metrics come from: the run's own bundle, or
    a fold's held-out part under cross-validation. ``extra_pictures`` are drawn with the
    evaluation's (see :func:`dlrun.evaluation.evaluate_run`).
    """
    from dlrun.evaluation import evaluate_run, headline_table

    best_path = run_dir / "checkpoints" / "best.pt"
    stop = cfg.regularization.early_stopping
    if best_path.is_file() and not (stop.enabled and not stop.restore_best):
        load_model_weights(setup.model, load_checkpoint(best_path, setup.device), best_path)
    metrics = evaluate_run(
        setup.model,
        scored,
        run_dir,
        splits=tuple(cfg.eval.splits),
        batch_size=max(256, cfg.trainer.batch_size),
        device=setup.device,
        threshold=cfg.eval.threshold,
        limit_batches=cfg.trainer.limit_batches,
        history=state.history,
        run_summary=summary,
        monitor=monitor,
        plots=cfg.eval.plots,
        extra_pictures=extra_pictures,
    )
    console.print(headline_table(metrics))
    return metrics


def train_summary(model: torch.nn.Module, fitted: Fitted, monitor: str) -> dict[str, Any]:
    """metrics.json's ``train`` section: how training went and how sparse the weights are."""
    zero, near_zero = sparsity(model)
    state = fitted.state
    return {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "monitor": monitor,
        "seconds": fitted.seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "stop_reason": state.stop_reason,
        "zero_weights": zero,  # share of weight entries that are exactly 0 (L1)
        "near_zero_weights": near_zero,  # |w| < 1e-3
        "threads": fitted.threads,
        "other_cores_busy": fitted.others,  # while training on the CPU (None: not measured)
    }


def report_training(
    cfg: RunConfig, console: Console, train: dict[str, Any], state: FitState
) -> None:
    """The closing lines: the best epoch, how long training took, and with an L1 or L2
    penalty how many weights it zeroed."""
    best = "n/a" if state.best_value is None else f"{state.best_value:.4g}"
    console.print(
        f"best {train['monitor']} {best} at epoch {state.best_epoch}; "
        f"trained {epochs(state.epoch)} in {number(train['seconds'], 2)}s",
        highlight=False,
    )
    note = busy_note(train.get("other_cores_busy"), train["threads"], usable_cores())
    if note:
        console.print(note, highlight=False, markup=False)
    if cfg.regularization.l1 or cfg.regularization.l2:
        console.print(
            f"weights exactly 0: {train['zero_weights']:.1%}; "
            f"with |w| < 1e-3: {train['near_zero_weights']:.1%}",
            highlight=False,
        )
