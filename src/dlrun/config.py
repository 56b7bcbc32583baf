"""Typed schema of a run's config, and the checks types alone can't express.

The schema is registered in Hydra's ConfigStore as ``dlrun_schema`` and sits first in
``train.yaml``'s defaults, so a wrong type (``trainer.epochs=abc``) fails while the config
is composed, with Hydra's message naming the key. Ranges and cross-field rules live in
:func:`validate`, which runs before anything heavy is imported or any file is written.
Groups whose fields differ per choice (model, data, optimizer, ...) stay untyped here
and are checked by their targets; Hydra's struct mode still rejects misspelled keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from dlrun.errors import UserError
from dlrun.monitor import metric_mode as metric_mode  # re-exported; lives in dlrun.monitor


@dataclass
class TrainerSchema:
    epochs: int = 10
    batch_size: int = 64
    device: str = "auto"
    devices: int = 1
    limit_batches: int | None = None
    monitor: str = "auto"
    grad_clip: float | None = None
    grad_clip_mode: str = "norm"
    accumulate: int = 1
    precision: str = "32"
    compile: bool = False
    channels_last: bool = True
    num_threads: int | None = None
    progress: str = "auto"


@dataclass
class EarlyStoppingSchema:
    enabled: bool = False
    monitor: str | None = None  # null: follow trainer.monitor
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class AugmentationSchema:
    enabled: bool = False
    crop_padding: int = 0
    hflip: bool = False
    rotate_degrees: float = 0.0
    translate: float = 0.0


@dataclass
class RegularizationSchema:
    dropout: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)
    augmentation: AugmentationSchema = field(default_factory=AugmentationSchema)


@dataclass
class EvalSchema:
    threshold: float = 0.5
    splits: list[str] = field(default_factory=lambda: ["test"])
    protocol: str = "holdout"
    folds: int = 5
    repeats: int = 1


@dataclass
class PathsSchema:
    outputs: str = "outputs"
    data_dir: str = "data"


@dataclass
class RunSchema:
    seed: int = 0
    paths: PathsSchema = field(default_factory=PathsSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    regularization: RegularizationSchema = field(default_factory=RegularizationSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    resume: str | None = None
    trial: Any = None  # set by the Optuna sweeper: {storage, study_name, number}
    model: Any = None
    data: Any = None
    logger: Any = None
    activation: Any = None
    optimizer: Any = None
    scheduler: Any = None


def register_schema() -> None:
    """Make ``dlrun_schema`` available to the defaults list (idempotent)."""
    ConfigStore.instance().store(name="dlrun_schema", node=RunSchema)


def validate(cfg: dict[str, Any]) -> None:
    """Check ranges and choices; raise one :class:`UserError` naming every bad key."""
    problems: list[str] = []

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            problems.append(f"{key}={_value(cfg, key)!r} is invalid: {rule}")

    def one_of(key: str, *choices: str) -> None:
        need(_value(cfg, key) in choices, key, "use " + ", ".join(choices))

    trainer, reg, opt = cfg["trainer"], cfg["regularization"], cfg["optimizer"]
    need(cfg["seed"] >= 0, "seed", "must be >= 0")
    need(trainer["epochs"] >= 1, "trainer.epochs", "must be >= 1")
    need(trainer["batch_size"] >= 1, "trainer.batch_size", "must be >= 1")
    need(trainer["devices"] >= 1, "trainer.devices", "must be >= 1")
    limit = trainer["limit_batches"]
    need(limit is None or limit >= 1, "trainer.limit_batches", "must be >= 1 or null")
    clip = trainer["grad_clip"]
    need(clip is None or clip > 0, "trainer.grad_clip", "must be > 0 or null")
    one_of("trainer.grad_clip_mode", "norm", "value")
    need(trainer["accumulate"] >= 1, "trainer.accumulate", "must be >= 1")
    one_of("trainer.precision", "32", "bf16", "fp16")
    threads = trainer["num_threads"]
    need(threads is None or threads >= 1, "trainer.num_threads", "must be >= 1 or null")
    need(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", trainer["device"]) is not None,
        "trainer.device",
        "use auto, cpu, cuda or cuda:N",
    )
    need(
        re.fullmatch(r"auto|(val_)?(loss|accuracy|rmse)", trainer["monitor"]) is not None,
        "trainer.monitor",
        "use auto, loss, val_loss, accuracy/val_accuracy (classification) or "
        "rmse/val_rmse (regression)",
    )
    one_of("trainer.progress", "auto", "bar", "lines", "none")
    need(0.0 <= reg["dropout"] < 1.0, "regularization.dropout", "must be in [0, 1)")
    need(reg["l1"] >= 0, "regularization.l1", "must be >= 0")
    need(reg["l2"] >= 0, "regularization.l2", "must be >= 0")
    need(
        0.0 <= reg["label_smoothing"] < 1.0,
        "regularization.label_smoothing",
        "must be in [0, 1)",
    )
    aug = reg["augmentation"]
    need(aug["crop_padding"] >= 0, "regularization.augmentation.crop_padding", "must be >= 0")
    need(
        0 <= aug["rotate_degrees"] <= 180,
        "regularization.augmentation.rotate_degrees",
        "must be in [0, 180]",
    )
    need(
        0 <= aug["translate"] < 0.5,
        "regularization.augmentation.translate",
        "must be in [0, 0.5)",
    )
    stop = reg["early_stopping"]
    for key, watched in [
        ("regularization.early_stopping.monitor", stop["monitor"]),
        ("scheduler.monitor", (cfg.get("scheduler") or {}).get("monitor")),
    ]:
        need(
            watched is None or re.fullmatch(r"(val_)?(loss|accuracy|rmse)", watched) is not None,
            key,
            "use null (follow trainer.monitor), loss, val_loss, accuracy, val_accuracy, rmse "
            "or val_rmse",
        )
    need(stop["patience"] >= 0, "regularization.early_stopping.patience", "must be >= 0")
    one_of("regularization.early_stopping.mode", "auto", "min", "max")
    need(0.0 < cfg["eval"]["threshold"] < 1.0, "eval.threshold", "must be in (0, 1)")
    evaluation = cfg["eval"]
    one_of("eval.protocol", "holdout", "kfold", "iterated_kfold")
    need(evaluation["folds"] >= 2, "eval.folds", "must be >= 2")
    need(evaluation["repeats"] >= 1, "eval.repeats", "must be >= 1")
    if evaluation["protocol"] != "holdout" and cfg.get("resume"):
        problems.append("resume= is not supported with eval.protocol=" + evaluation["protocol"])
    for split in cfg["eval"]["splits"]:
        need(split in ("val", "test"), "eval.splits", "list of val and/or test")
    lr = opt.get("lr")
    need(
        isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0,
        "optimizer.lr",
        "must be a number > 0",
    )
    momentum = opt.get("momentum")
    need(
        momentum is None or (isinstance(momentum, int | float) and 0 <= momentum < 1),
        "optimizer.momentum",
        "must be in [0, 1)",
    )
    wd = opt.get("weight_decay")
    need(
        wd is None or (isinstance(wd, int | float) and wd >= 0),
        "optimizer.weight_decay",
        "must be >= 0",
    )
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


def _value(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
