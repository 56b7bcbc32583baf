"""Typed schema of a run's config, and the checks types alone can't express.

The schema is registered in Hydra's ConfigStore as ``dlrun_schema`` and sits first in
``train.yaml``'s defaults, so a wrong type (``trainer.epochs=abc``) fails while the config
is composed, with Hydra's message naming the key. Ranges and cross-field rules live in
:func:`validate`, which runs before anything heavy is imported or any file is written.
Groups whose fields differ per choice (model, data, optimizer, ...) stay untyped here;
their known keys are those of the chosen option's YAML (Hydra's struct mode rejects any
other, and :mod:`dlrun.overrides` turns that into one line with the closest key).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from dlrun.errors import UserError
from dlrun.monitor import metric_mode as metric_mode  # re-exported; lives in dlrun.monitor

# Choices that need an optional package: the module that must be importable and the
# extra of pyproject.toml that installs it. Checked before anything runs, so a missing
# package is named with its install command instead of failing mid-run.
OPTIONAL_CHOICES: dict[str, tuple[str, str]] = {
    "logger=tensorboard": ("tensorboard", "tensorboard"),
    "data=sunspots": ("statsmodels", "series"),
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "parallel"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "parallel"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "parallel"),
    "hydra/sweeper=dlrun_optuna": ("optuna", "optuna"),
    # the companion commands' options (checked by require())
    "format=onnx": ("onnxruntime", "export"),
    "exporter=dynamo": ("onnxscript", "export"),
    "dlrun-serve": ("uvicorn", "serve"),
}

# Data options several loaders share that count something: whole numbers >= 1 (null is
# accepted where a loader gives it a meaning: no limit, stride = block size).
_DATA_COUNTS = (
    "size", "window", "horizon", "stride", "block_size", "limit",
    "n_samples", "n_points", "n_features", "n_labels", "max_categories", "train_per_class",
)  # fmt: skip
_DATA_NULLABLE = ("limit", "stride", "train_per_class")


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
class EnsembleSchema:
    bagging: int = 0  # N >= 2: train N members on bootstrap resamples, evaluate them together
    member: int | None = None  # set by a sweep over members: train member i of the bag only
    method: str = "average"  # average (probabilities / values) | vote (classes / median)


@dataclass
class RunSchema:
    seed: int = 0
    paths: PathsSchema = field(default_factory=PathsSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    regularization: RegularizationSchema = field(default_factory=RegularizationSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    ensemble: EnsembleSchema = field(default_factory=EnsembleSchema)
    resume: str | None = None
    trial: Any = None  # set by the Optuna sweeper: {storage, study_name, number}
    model: Any = None
    data: Any = None
    logger: Any = None
    activation: Any = None
    optimizer: Any = None
    scheduler: Any = None


def config_dir() -> str:
    """``configs/`` of a source checkout, or the copy packaged inside a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "configs", here / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"dlrun's configs/ directory is missing (looked beside {here})")


def register_schema() -> None:
    """Make ``dlrun_schema`` available to the defaults list (idempotent)."""
    ConfigStore.instance().store(name="dlrun_schema", node=RunSchema)


def validate(cfg: dict[str, Any], choices: Mapping[str, Any] | None = None) -> None:
    """Check ranges and choices; raise one :class:`UserError` naming every bad key.

    ``choices`` (Hydra's ``runtime.choices``) also checks that the optional packages the
    chosen options need are installed; Hydra's own (``hydra/launcher``, ...) are checked
    before a sweep starts, since a single run doesn't use them.
    """
    problems: list[str] = _data_problems(cfg.get("data") or {}) + _transfer_problems(cfg)
    problems += _ensemble_problems(cfg)
    run_choices = {k: v for k, v in (choices or {}).items() if not k.startswith("hydra/")}
    problems += missing_packages(run_choices)

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


def missing_packages(choices: Mapping[str, Any]) -> list[str]:
    """One message per chosen option whose optional package is not installed."""
    out = []
    for group, option in choices.items():
        need = OPTIONAL_CHOICES.get(f"{group}={option}")
        if need is not None and not _installed(need[0]):
            out.append(install_hint(f"{group}={option}"))
    return out


def install_hint(choice: str) -> str:
    """``<choice> needs <package>, which is not installed: pip install 'dlrun[<extra>]'``."""
    module, extra = OPTIONAL_CHOICES[choice]
    package = module.removeprefix("hydra_plugins.").replace("_", "-")
    return f"{choice} needs {package}, which is not installed: pip install 'dlrun[{extra}]'"


def require(*choices: str) -> None:
    """Stop with the install command when a chosen option's package is missing."""
    missing = [install_hint(c) for c in choices if not _installed(OPTIONAL_CHOICES[c][0])]
    if missing:
        raise UserError("; ".join(missing))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a blocked module
        return False


FREEZE = ("none", "backbone", "all_but_head")


def transfer_source(init_from: str) -> Path:
    """The checkpoint ``model.init_from`` names: a run dir's best.pt, or a .pt file."""
    path = Path(init_from).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise UserError(
            f"model.init_from={init_from}: no checkpoint there (a run dir with "
            "checkpoints/best.pt, or a .pt file)"
        )
    return path


def _transfer_problems(cfg: dict[str, Any]) -> list[str]:
    """The transfer keys every model has (configs/transfer.yaml; :mod:`dlrun.transfer`)."""
    model = cfg.get("model") or {}
    init_from, how = model.get("init_from"), model.get("freeze", "none")
    factor = model.get("pretrained_lr", 1.0)
    problems = []
    if how not in FREEZE:
        problems.append(f"model.freeze={how!r} is invalid: use {', '.join(FREEZE)}")
    if not _is_number(factor) or factor <= 0:
        problems.append(f"model.pretrained_lr={factor!r} is invalid: must be a number > 0")
    elif factor != 1.0 and "OneCycleLR" in str((cfg.get("scheduler") or {}).get("_target_")):
        problems.append(
            "model.pretrained_lr with scheduler=onecycle: one-cycle sets a single max_lr "
            "for every layer; choose another scheduler"
        )
    if not init_from and (how != "none" or factor != 1.0):
        problems.append("model.freeze and model.pretrained_lr need model.init_from")
    if init_from:
        try:
            transfer_source(str(init_from))
        except UserError as exc:
            problems.append(str(exc))
    return problems


def _ensemble_problems(cfg: dict[str, Any]) -> list[str]:
    """``ensemble.*`` (bagging; :mod:`dlrun.ensembling`), in validate's wording."""
    ens = cfg["ensemble"]
    bagging, member, method = ens["bagging"], ens["member"], ens["method"]
    checks = [
        (bagging == 0 or bagging >= 2, "ensemble.bagging", "0 (off) or a number of members >= 2"),
        (member is None or (bagging >= 2 and 0 <= member < bagging), "ensemble.member",
         "null, or a member index from 0 to ensemble.bagging - 1 (with ensemble.bagging=N)"),
        (method in ("average", "vote"), "ensemble.method", "use average, vote"),
        (not bagging or cfg["eval"]["protocol"] == "holdout", "ensemble.bagging",
         "bagging trains on the holdout split; use eval.protocol=holdout"),
    ]  # fmt: skip
    return [f"{key}={_value(cfg, key)!r} is invalid: {why}" for ok, key, why in checks if not ok]


def _data_problems(data: dict[str, Any]) -> list[str]:
    """The options loaders share, checked here so no loader fails after the run dir exists.

    Every loader holds out a validation split and (except the image sets, which have an
    official test split) a test split; both must be real shares of the data, with
    something left to train on.
    """
    out = []
    fractions = {k: data[k] for k in ("val_fraction", "test_fraction") if k in data}
    for key, value in fractions.items():
        if not (_is_number(value) and 0 < value < 1):
            out.append(f"data.{key}={value!r} is invalid: must be in (0, 1)")
    if len(fractions) == 2 and all(_is_number(v) for v in fractions.values()):
        total = sum(fractions.values())
        if total >= 1:
            out.append(
                f"data.val_fraction + data.test_fraction = {total:g} is invalid: "
                "must be < 1 (the rest is the training split)"
            )
    for key in _DATA_COUNTS:
        value = data.get(key)
        if value is None and (key in _DATA_NULLABLE or key not in data):
            continue
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            rule = "a whole number >= 1" + (" or null" if key in _DATA_NULLABLE else "")
            out.append(f"data.{key}={value!r} is invalid: must be {rule}")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
