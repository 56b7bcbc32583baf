"""The typed config of a run: the schema Hydra composes against, and what the code reads.

The dataclasses below are registered in Hydra's ConfigStore as ``dlrun_schema`` and sit
first in ``train.yaml``'s defaults, so a wrong type (``trainer.epochs=abc``) fails while
the config is composed, with Hydra's message naming the key. The CLI then turns the
composed config into these very objects (:func:`to_run_config`, ``OmegaConf.to_object``):
the code reads ``cfg.trainer.epochs``, never ``cfg["trainer"]["epochs"]``, so a key
misspelt in the code is an attribute a type checker (and the first test) rejects, not a
``KeyError`` in a user's run. :class:`TrainerSettings` *is* the ``trainer:`` node: the
trainer takes it as it stands.

Groups whose keys differ per option (model, data, activation, optimizer, scheduler,
logger, callbacks) stay plain dicts with a ``_target_``, which is what Hydra's
``instantiate`` takes; their known keys are those of the chosen option's YAML (Hydra's
struct mode rejects any other, and :mod:`dlrun.overrides` turns that into one line with
the closest key). Ranges and cross-field rules live in :func:`validate`, which runs
before anything heavy is imported or any file is written. Nothing here imports torch,
and Hydra only when a schema is registered or a config converted.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import UserError
from dlrun.monitor import metric_mode as metric_mode  # re-exported; lives in dlrun.monitor
from dlrun.tasks import monitor_problem

# Choices that need an optional package: the module that must be importable and the
# extra of pyproject.toml that installs it. Checked before anything runs, so a missing
# package is named with its install command instead of failing mid-run.
OPTIONAL_CHOICES: dict[str, tuple[str, str]] = {
    "logger=tensorboard": ("tensorboard", "tensorboard"),
    "logger=mlflow": ("mlflow", "tracking"),
    "logger=wandb": ("wandb", "wandb"),
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
    "n_samples", "n_points", "n_features", "n_labels", "max_categories",
    "max_length", "max_vocab", "min_count", "prefetch_factor", "train_per_class",
)  # fmt: skip
# Options of users' own data (image_folder, text_folder, array) with a fixed set of values.
_DATA_CHOICES: dict[str, tuple[Any, ...]] = {
    "stream": ("auto", True, False),
    "cache": (True, False),
    "channels": ("auto", 1, 3),
    "tokens": ("word", "char"),
    "kind": ("auto", "tabular", "image", "sequence", "tokens"),
}
_DATA_NULLABLE = ("limit", "stride", "train_per_class")


@dataclass
class TrainerSettings:
    """The ``trainer:`` node (configs/trainer/default.yaml), and the trainer's settings."""

    epochs: int = 10
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: int = 1  # processes (DDP); batch_size is per process
    limit_batches: int | None = None  # per epoch and per evaluation (None = all)
    monitor: str = "auto"  # what picks best.pt (auto: val_loss, see dlrun.monitor.resolve)
    grad_clip: float | None = None
    grad_clip_mode: str = "norm"  # "norm" (clip the global norm) or "value" (each entry)
    accumulate: int = 1  # optimizer step every `accumulate` batches
    precision: str = "32"  # "32", "bf16" or "fp16" (autocast; fp16 adds a GradScaler)
    compile: bool = False
    channels_last: bool = True
    num_threads: int | None = None
    progress: str = "auto"  # auto | bar | lines | none


@dataclass
class EarlyStoppingSettings:
    enabled: bool = False
    monitor: str | None = None  # null: follow trainer.monitor
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class AugmentSettings:
    """Random transforms of training images (:class:`dlrun.engine.augment.BatchAugment`)."""

    enabled: bool = False
    crop_padding: int = 0
    hflip: bool = False
    rotate_degrees: float = 0.0
    translate: float = 0.0


@dataclass
class RegularizationSettings:
    dropout: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    augmentation: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class EvalSettings:
    threshold: float = 0.5
    splits: list[str] = field(default_factory=lambda: ["test"])
    protocol: str = "holdout"
    folds: int = 5
    repeats: int = 1
    plots: bool = True


@dataclass
class DiagnosticsSettings:
    """The ``diagnostics:`` node: what every run records about its own health."""

    enabled: bool = True
    grad_every: int = 25
    activations: bool = True
    val_samples: int = 512


@dataclass
class PathSettings:
    outputs: str = "outputs"
    data_dir: str = "data"


@dataclass
class EnsembleSettings:
    """``ensemble:``: bagging (:mod:`dlrun.ensembling`); ``dlrun-ensemble`` combines runs."""

    bagging: int = 0  # N >= 2: train N members on bootstrap resamples, evaluate them together
    member: int | None = None  # set by a sweep over members: train member i of the bag only
    method: str = "average"  # average (probabilities / values) | vote (classes / median)


@dataclass
class RunConfig:
    """The whole composed config of one run (``train.yaml`` and its groups)."""

    seed: int = 0
    paths: PathSettings = field(default_factory=PathSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    regularization: RegularizationSettings = field(default_factory=RegularizationSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    resume: str | None = None
    trial: Any = None  # set by the Optuna sweeper: {storage, study_name, number}
    model: Any = None
    data: Any = None
    logger: Any = None
    activation: Any = None
    optimizer: Any = None
    scheduler: Any = None
    callbacks: Any = None  # name -> {_target_: a Callback, ...} (configs/callbacks/)


@dataclass
class RunContext:
    """What the command line knows about a run that is not config: names for messages,
    where ``status.json`` is kept and whose process it names. Travels beside the config
    to spawned workers and folds (plain data: it pickles)."""

    model_name: str = "model"
    data_name: str = "data"
    summary: str = ""  # the run's choices in one line (report.md)
    status_dir: str | None = None  # the run dir the user started (None: the run dir)
    identity: dict[str, Any] = field(default_factory=dict)  # pid, hostname, started_at
    continuing: bool = False  # a completed run given more epochs (resume=, more epochs)


def config_dir() -> str:
    """``configs/`` of a source checkout, or the copy packaged inside a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "configs", here / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"dlrun's configs/ directory is missing (looked beside {here})")


def register_schema() -> None:
    """Make ``dlrun_schema`` available to the defaults list (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="dlrun_schema", node=RunConfig)


def to_run_config(cfg: Any) -> RunConfig:
    """The typed :class:`RunConfig` of a composed config (a DictConfig or a plain dict).

    Interpolations are resolved; a config that is not typed yet (a saved
    ``.hydra/config.yaml``, a sweep's base config) is merged onto the schema first, so
    wrong types are refused and keys added since get their defaults.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, RunConfig):
        return cfg
    if not (isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is RunConfig):
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, RunConfig)
    return typed


Check = Callable[[bool, str, str], None]


def validate(cfg: RunConfig, choices: Mapping[str, Any] | None = None) -> None:
    """Check ranges and choices; raise one :class:`UserError` naming every bad key.

    ``choices`` (Hydra's ``runtime.choices``) also checks that the optional packages the
    chosen options need are installed; Hydra's own (``hydra/launcher``, ...) are checked
    before a sweep starts, since a single run doesn't use them.
    """
    problems: list[str] = _data_problems(cfg.data or {}) + _transfer_problems(cfg)
    problems += _ensemble_problems(cfg)
    run_choices = {
        k: v for k, v in (choices or {}).items() if not k.startswith("hydra/") and k != "logger"
    }
    problems += missing_packages(run_choices)
    # logger=[mlflow,tensorboard] is not in Hydra's choices: the composed node names them
    logger = cfg.logger
    problems += missing_packages({"logger": list(logger)} if isinstance(logger, dict) else {})

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            problems.append(f"{key}={_value(cfg, key)!r} is invalid: {rule}")

    need(cfg.seed >= 0, "seed", "must be >= 0")
    _check_trainer(cfg.trainer, need)
    _check_regularization(cfg.regularization, need)
    _check_monitor(need, "scheduler.monitor", (cfg.scheduler or {}).get("monitor"))
    _check_eval(cfg.eval, need)
    _check_optimizer(cfg.optimizer or {}, need)
    need(cfg.diagnostics.grad_every >= 0, "diagnostics.grad_every", "must be >= 0")
    need(cfg.diagnostics.val_samples >= 1, "diagnostics.val_samples", "must be >= 1")
    if problems:
        raise UserError("; ".join(problems))


def _check_monitor(need: Check, key: str, watched: str | None) -> None:
    """A name no task records is refused now (None: auto, or follow trainer.monitor);
    whether the data's task records it is checked once the data is loaded."""
    why = None if watched is None else monitor_problem(str(watched))
    need(why is None, key, str(why))


def _one_of(need: Check, value: Any, key: str, *choices: str) -> None:
    need(value in choices, key, "use " + ", ".join(choices))


def _check_trainer(trainer: TrainerSettings, need: Check) -> None:
    need(trainer.epochs >= 1, "trainer.epochs", "must be >= 1")
    need(trainer.batch_size >= 1, "trainer.batch_size", "must be >= 1")
    need(trainer.devices >= 1, "trainer.devices", "must be >= 1")
    limit, clip, threads = trainer.limit_batches, trainer.grad_clip, trainer.num_threads
    need(limit is None or limit >= 1, "trainer.limit_batches", "must be >= 1 or null")
    need(clip is None or clip > 0, "trainer.grad_clip", "must be > 0 or null")
    _one_of(need, trainer.grad_clip_mode, "trainer.grad_clip_mode", "norm", "value")
    need(trainer.accumulate >= 1, "trainer.accumulate", "must be >= 1")
    _one_of(need, trainer.precision, "trainer.precision", "32", "bf16", "fp16")
    need(threads is None or threads >= 1, "trainer.num_threads", "must be >= 1 or null")
    need(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", trainer.device) is not None,
        "trainer.device",
        "use auto, cpu, cuda or cuda:N",
    )
    _check_monitor(need, "trainer.monitor", None if trainer.monitor == "auto" else trainer.monitor)
    _one_of(need, trainer.progress, "trainer.progress", "auto", "bar", "lines", "none")


def _check_regularization(reg: RegularizationSettings, need: Check) -> None:
    need(0.0 <= reg.dropout < 1.0, "regularization.dropout", "must be in [0, 1)")
    need(reg.l1 >= 0, "regularization.l1", "must be >= 0")
    need(reg.l2 >= 0, "regularization.l2", "must be >= 0")
    smoothing = reg.label_smoothing
    need(0.0 <= smoothing < 1.0, "regularization.label_smoothing", "must be in [0, 1)")
    aug, key = reg.augmentation, "regularization.augmentation"
    need(aug.crop_padding >= 0, f"{key}.crop_padding", "must be >= 0")
    need(0 <= aug.rotate_degrees <= 180, f"{key}.rotate_degrees", "must be in [0, 180]")
    need(0 <= aug.translate < 0.5, f"{key}.translate", "must be in [0, 0.5)")
    stop, key = reg.early_stopping, "regularization.early_stopping"
    _check_monitor(need, f"{key}.monitor", stop.monitor)
    need(stop.patience >= 0, f"{key}.patience", "must be >= 0")
    _one_of(need, stop.mode, f"{key}.mode", "auto", "min", "max")


def _check_eval(evaluation: EvalSettings, need: Check) -> None:
    need(0.0 < evaluation.threshold < 1.0, "eval.threshold", "must be in (0, 1)")
    _one_of(need, evaluation.protocol, "eval.protocol", "holdout", "kfold", "iterated_kfold")
    need(evaluation.folds >= 2, "eval.folds", "must be >= 2")
    need(evaluation.repeats >= 1, "eval.repeats", "must be >= 1")
    for split in evaluation.splits:
        need(split in ("val", "test"), "eval.splits", "list of val and/or test")


def _check_optimizer(opt: Mapping[str, Any], need: Check) -> None:
    lr, momentum, wd = opt.get("lr"), opt.get("momentum"), opt.get("weight_decay")
    need(_is_number(lr) and lr > 0, "optimizer.lr", "must be a number > 0")
    need(momentum is None or (_is_number(momentum) and 0 <= momentum < 1),
         "optimizer.momentum", "must be in [0, 1)")  # fmt: skip
    need(wd is None or (_is_number(wd) and wd >= 0), "optimizer.weight_decay", "must be >= 0")


def missing_packages(choices: Mapping[str, Any]) -> list[str]:
    """One message per chosen option whose optional package is not installed."""
    out = []
    for group, selected in choices.items():
        options = [selected] if selected is None or isinstance(selected, str) else list(selected)
        for option in options:  # a group can select several (logger=[mlflow,tensorboard])
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


def _transfer_problems(cfg: RunConfig) -> list[str]:
    """The transfer keys every model has (configs/transfer.yaml; :mod:`dlrun.transfer`)."""
    model = cfg.model or {}
    init_from, how = model.get("init_from"), model.get("freeze", "none")
    factor = model.get("pretrained_lr", 1.0)
    problems = []
    if how not in FREEZE:
        problems.append(f"model.freeze={how!r} is invalid: use {', '.join(FREEZE)}")
    if not _is_number(factor) or factor <= 0:
        problems.append(f"model.pretrained_lr={factor!r} is invalid: must be a number > 0")
    elif factor != 1.0 and "OneCycleLR" in str((cfg.scheduler or {}).get("_target_")):
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


def _ensemble_problems(cfg: RunConfig) -> list[str]:
    """``ensemble.*`` (bagging; :mod:`dlrun.ensembling`), in validate's wording."""
    ens = cfg.ensemble
    bagging, member, method = ens.bagging, ens.member, ens.method
    checks = [
        (bagging == 0 or bagging >= 2, "ensemble.bagging", "0 (off) or a number of members >= 2"),
        (member is None or (bagging >= 2 and 0 <= member < bagging), "ensemble.member",
         "null, or a member index from 0 to ensemble.bagging - 1 (with ensemble.bagging=N)"),
        (method in ("average", "vote"), "ensemble.method", "use average, vote"),
        (not bagging or cfg.eval.protocol == "holdout", "ensemble.bagging",
         "bagging trains on the holdout split; use eval.protocol=holdout"),
    ]  # fmt: skip
    return [f"{key}={_value(cfg, key)!r} is invalid: {why}" for ok, key, why in checks if not ok]


def _data_problems(data: Mapping[str, Any]) -> list[str]:
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
    return out + _data_choice_problems(data)


def _data_choice_problems(data: Mapping[str, Any]) -> list[str]:
    """``data.stream``, ``data.num_workers``, ...: one of their values (``1`` is not
    ``true``: YAML's types are compared too)."""
    out = []
    for key, allowed in _DATA_CHOICES.items():
        value = data.get(key, allowed[0])
        if not any(type(value) is type(a) and value == a for a in allowed):
            names = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            out.append(f"data.{key}={value!r} is invalid: use {names}")
    workers = data.get("num_workers", "auto")
    if workers != "auto" and not (
        isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0
    ):
        out.append(f"data.num_workers={workers!r} is invalid: use auto or a whole number >= 0")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(cfg: RunConfig, dotted: str) -> Any:
    """The value at a dotted key, through typed nodes and plain dicts alike."""
    node: Any = cfg
    for part in dotted.split("."):
        if is_dataclass(node):
            node = getattr(node, part, None)
        else:
            node = node.get(part) if isinstance(node, Mapping) else None
    return node
