"""Everything a task implies, in one table: :data:`TASKS` maps each :class:`Task` to a
:class:`TaskInfo` record.

This is the seeds' "last-layer activation and loss" table as code, grown to hold every
other fact that depends on the task: the training metric, the headline metric that
decides "beats the baseline", the trivial baselines, the units of ``loss``, the
pictures, and what the targets look like. Code elsewhere asks the record
(``info(task).single_label``, ``info(task).primary``) instead of branching on the task,
so adding a fact, or a task, is a change to this table.

| task            | output activation | loss                          | targets  |
| --------------- | ----------------- | ----------------------------- | -------- |
| multiclass      | softmax           | cross entropy                 | classes  |
| binary          | sigmoid           | binary cross entropy          | binary   |
| multilabel      | sigmoid (each)    | binary cross entropy (each)   | labels   |
| regression      | identity          | mean squared error            | values   |
| forecast        | identity          | mean squared error            | values   |
| language_model  | softmax per token | cross entropy per token       | tokens   |

Models emit raw logits / values; losses take logits (numerically stable fused forms).
Torch-free at import (config errors and ``dlrun --help`` read this table): torch is
imported inside the functions that compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from dlrun import metric_registry
from dlrun.data.spec import Task
from dlrun.errors import UserError
from dlrun.monitor import metric_mode

if TYPE_CHECKING:
    import torch


class Targets(StrEnum):
    """What one target looks like; the data-shape facts of a task follow from it."""

    CLASSES = "classes"  # int64 (N,) class ids; (N, C) logits
    BINARY = "binary"  # float32 (N,) of 0/1; (N, 1) logits
    LABELS = "labels"  # float32 (N, L) of 0/1; (N, L) logits
    VALUES = "values"  # float32 (N, K) standardised values; (N, K) outputs
    TOKENS = "tokens"  # int64 (N, T) token ids; (N, T, V) logits


# ------------------------------------------------------------------------- losses
class TaskLoss:
    """A task's loss: ``loss(outputs, targets)`` is the true loss; ``objective`` trains."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        from torch.nn import functional  # here, not at import: tasks.py stays torch-free

        self.label_smoothing = label_smoothing
        self.F = functional

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def objective(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to minimise, the true loss); one tensor twice when nothing is smoothed."""
        if self.label_smoothing:
            return self._smoothed(outputs, targets, self.label_smoothing)
        loss = self(outputs, targets)
        return loss, loss

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no label smoothing")


class _TokenCrossEntropy(TaskLoss):
    """Cross entropy over the last axis, for (N, C) or (N, T, V) logits.

    With smoothing ``e`` the target is ``(1-e)`` on the class plus ``e/C`` everywhere, as
    ``nn.CrossEntropyLoss(label_smoothing=e)``; written out from one log-softmax so the
    true loss comes with it at no extra cost: ``(1-e) * nll + e * mean(-log p)``.
    """

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = outputs.reshape(-1, outputs.shape[-1]).log_softmax(dim=-1)
        nll = self.F.nll_loss(logp, targets.reshape(-1))
        return (1 - e) * nll - e * logp.mean(dim=-1).mean(), nll


class _FlatBCE(TaskLoss):
    """Binary cross entropy with logits; binary targets (N,) meet (N, 1) logits.

    With smoothing ``e`` the targets become ``y * (1-e) + e/2`` (Keras'
    ``BinaryCrossentropy(label_smoothing=e)``): 0/1 labels turn into e/2 and 1-e/2.
    """

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.binary_cross_entropy_with_logits(outputs.reshape(targets.shape), targets)

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        soft = targets * (1 - e) + e / 2
        return self(outputs, soft), self(outputs, targets)


class _FlatMSE(TaskLoss):
    """Mean squared error with outputs shaped like the targets (label smoothing n/a)."""

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.mse_loss(outputs.reshape(targets.shape), targets)


# --------------------------------------------- per-batch training metrics (sums)
# Each returns the sum over the batch of a per-sample value as a 0-d tensor, so the
# training loop never synchronises with the device per step; ``target_std`` (values
# only) turns errors on standardised targets back into the data's units.


def _correct_classes(outputs: torch.Tensor, targets: torch.Tensor, _: object) -> torch.Tensor:
    return (outputs.argmax(dim=-1) == targets).sum()


def _correct_tokens(outputs: torch.Tensor, targets: torch.Tensor, _: object) -> torch.Tensor:
    return (outputs.argmax(dim=-1) == targets).float().mean(dim=-1).sum()


def _correct_binary(outputs: torch.Tensor, targets: torch.Tensor, _: object) -> torch.Tensor:
    return ((outputs.reshape(-1) > 0).float() == targets.reshape(-1)).float().sum()


def _correct_labels(outputs: torch.Tensor, targets: torch.Tensor, _: object) -> torch.Tensor:
    return ((outputs > 0).float() == targets).float().mean(dim=-1).sum()


def _squared_error(
    outputs: torch.Tensor, targets: torch.Tensor, std: torch.Tensor | None
) -> torch.Tensor:
    """Sum of per-sample mean squared errors (the rmse is taken per epoch)."""
    err = (outputs.reshape(targets.shape) - targets).reshape(targets.shape[0], -1)
    if std is not None:
        err = err * std
    return err.pow(2).mean(dim=1).sum()


# ------------------------------------------------------------------ the record
CLASSIFIER_BASELINES: Mapping[str, str] = {
    "prior": "the training prior of the positive class, thresholded like the model",
    "stratified": "stratified random: classes drawn with their training frequencies (seeded)",
    "uniform": "uniform random: every class equally likely (seeded)",
}
CLASS_PLOTS = ("confusion_matrix.png", "roc_curve.png", "pr_curve.png")


@dataclass(frozen=True)
class TaskInfo:
    """Everything one task implies (one row of :data:`TASKS`).

    ``baselines`` maps each trivial predictor (``baseline_kind``) to its one-line
    description, simplest first (the first wins ties). ``plots`` are the picture files
    the evaluator draws, besides ``learning_curves.png``. ``headline`` is what the
    terminal and report.md show first; ``primary`` decides the verdict.
    """

    task: Task
    targets: Targets
    loss: type[TaskLoss]
    loss_units: str
    output: str  # output activation: softmax | sigmoid | identity
    train_metric: str
    batch_metric: Callable[..., torch.Tensor]
    primary: str
    headline: tuple[str, ...]
    baselines: Mapping[str, str]
    plots: tuple[str, ...] = ()
    temporal: bool = False  # samples are ordered in time: no shuffled k-fold

    # -- facts that follow from the shape of the targets
    @property
    def classification(self) -> bool:
        return self.targets in (Targets.CLASSES, Targets.BINARY, Targets.LABELS)

    @property
    def single_label(self) -> bool:
        """One class per sample: stratified splits, confusion matrix, McNemar's test."""
        return self.targets in (Targets.CLASSES, Targets.BINARY)

    @property
    def thresholded(self) -> bool:
        """Hard predictions are ``probability > eval.threshold`` (sigmoid outputs)."""
        return self.targets in (Targets.BINARY, Targets.LABELS)

    @property
    def scaled(self) -> bool:
        """Targets are standardised values: errors are reported in the data's units."""
        return self.targets is Targets.VALUES

    @property
    def per_token(self) -> bool:
        """Every position of a sequence is a prediction; a sequence is the unit of chance."""
        return self.targets is Targets.TOKENS

    @property
    def smoothable(self) -> bool:
        """Label smoothing has a meaning: the targets are class probabilities."""
        return self.targets is not Targets.VALUES

    @property
    def item(self) -> str:
        """What a per-class row of the report is about."""
        return "label" if self.targets is Targets.LABELS else "class"

    @property
    def unit(self) -> str:
        """What the bootstrap resamples: tokens of one sequence are not independent."""
        return "sequences" if self.per_token else "examples"

    # -- behaviour
    def loss_fn(self, label_smoothing: float = 0.0) -> TaskLoss:
        """The loss, taking the model's raw outputs and the targets.

        Calling it gives the true loss, the one every epoch line, history.csv, early
        stopping, ``best.pt`` and metrics.json show; :meth:`TaskLoss.objective` gives
        what training minimises, which differs only with ``label_smoothing``.
        """
        return self.loss(label_smoothing if self.smoothable else 0.0)

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        """Raw model outputs -> probabilities (classification) or values."""
        if self.output == "softmax":
            return outputs.softmax(dim=-1)
        if self.output == "sigmoid":
            return outputs.sigmoid()
        return outputs

    def logits(self, probs: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`activate` for probabilities (a baseline's constant output)."""
        return probs.log() if self.output == "softmax" else probs.logit()

    def finish_metric(self, total: float, count: int) -> float:
        """Per-epoch value of the training metric from the batch sums."""
        mean = total / max(count, 1)
        return mean**0.5 if self.scaled else mean

    def target_std(self, meta: Mapping) -> list[float] | None:
        """The loader's target standard deviations (``meta["target_scaler"]``), if scaled."""
        scaler = meta.get("target_scaler")
        if not self.scaled or not scaler:
            return None
        return [float(v) for v in scaler["std"]]

    def class_names(self, names: tuple[str, ...], n_outputs: int) -> tuple[str, ...]:
        """The loader's class names, or readable defaults when it gives none."""
        if names or not self.classification:
            return tuple(names)
        if self.targets is Targets.BINARY:
            return ("negative", "positive")
        return tuple(str(i) for i in range(n_outputs))

    def monitorable(self) -> tuple[str, ...]:
        """Every ``trainer.monitor`` a run of this task can watch, in history.csv order.

        ``loss`` and the training metric are recorded for both splits; any metric the
        evaluator computes for the task is recorded on the validation split when asked.
        """
        recorded = ("loss", self.train_metric)
        extra = [
            f"val_{m.name}" for m in metric_registry.for_task(self.task) if m.name not in recorded
        ]
        return (*recorded, *(f"val_{name}" for name in recorded), *extra)


# The few numbers a user reads first, in display order.
_SINGLE_LABEL_HEADLINE = ("f1_macro", "precision_macro", "recall_macro", "roc_auc", "pr_auc")
_BINARY_HEADLINE = ("accuracy", "f1", "precision", "recall", "f1_macro", "roc_auc", "pr_auc",
                    "loss")  # fmt: skip
_MULTILABEL_HEADLINE = ("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss", "roc_auc",
                        "pr_auc", "loss")  # fmt: skip

TASKS: Mapping[Task, TaskInfo] = {
    Task.MULTICLASS: TaskInfo(
        task=Task.MULTICLASS,
        targets=Targets.CLASSES,
        loss=_TokenCrossEntropy,
        loss_units="cross entropy in nats per sample",
        output="softmax",
        train_metric="accuracy",
        batch_metric=_correct_classes,
        # Macro F1 rather than accuracy decides: the majority class can be accurate on
        # imbalanced data (seed 001: accuracy only when the classes are balanced), but
        # its macro F1 is low.
        primary="f1_macro",
        headline=("accuracy", "top5_accuracy", *_SINGLE_LABEL_HEADLINE, "loss"),
        baselines={**CLASSIFIER_BASELINES, "prior": "the majority class of the training split"},
        plots=CLASS_PLOTS,
    ),
    Task.BINARY: TaskInfo(
        task=Task.BINARY,
        targets=Targets.BINARY,
        loss=_FlatBCE,
        loss_units="binary cross entropy in nats per sample",
        output="sigmoid",
        train_metric="accuracy",
        batch_metric=_correct_binary,
        primary="f1_macro",
        headline=_BINARY_HEADLINE,
        baselines=CLASSIFIER_BASELINES,
        plots=CLASS_PLOTS,
    ),
    Task.MULTILABEL: TaskInfo(
        task=Task.MULTILABEL,
        targets=Targets.LABELS,
        loss=_FlatBCE,
        loss_units="binary cross entropy in nats per label",
        output="sigmoid",
        train_metric="accuracy",  # per label
        batch_metric=_correct_labels,
        primary="f1_macro",
        headline=_MULTILABEL_HEADLINE,
        baselines={
            "prior": "the per-label training prior, thresholded like the model",
            "stratified": "stratified random: each label on with its training frequency (seeded)",
            "uniform": "uniform random: each label on with probability 1/2 (seeded)",
        },
        plots=("roc_curve.png", "pr_curve.png"),
    ),
    Task.REGRESSION: TaskInfo(
        task=Task.REGRESSION,
        targets=Targets.VALUES,
        loss=_FlatMSE,
        loss_units="MSE on the standardised targets the model was trained on",
        output="identity",
        train_metric="rmse",  # in the data's own units
        batch_metric=_squared_error,
        primary="rmse",
        headline=("rmse", "mae", "r2", "mape", "loss"),
        baselines={"mean": "the training mean", "median": "the training median"},
        plots=("pred_vs_actual.png", "residuals.png"),
    ),
    Task.FORECAST: TaskInfo(
        task=Task.FORECAST,
        targets=Targets.VALUES,
        loss=_FlatMSE,
        loss_units="MSE on the (standardised) targets the model was trained on",
        output="identity",
        train_metric="rmse",
        batch_metric=_squared_error,
        primary="rmse",
        headline=("rmse", "mae", "r2", "loss"),
        baselines={
            "persistence": "persistence: the last observed value, repeated over the horizon",
            "seasonal": "seasonal naive: the value {period} steps earlier (period fit on training)",
            "window_mean": "the mean of the input window",
        },
        plots=("forecast.png",),
        temporal=True,
    ),
    Task.LANGUAGE_MODEL: TaskInfo(
        task=Task.LANGUAGE_MODEL,
        targets=Targets.TOKENS,
        loss=_TokenCrossEntropy,
        loss_units="cross entropy in nats per token",
        output="softmax",
        train_metric="accuracy",  # next token
        batch_metric=_correct_tokens,
        primary="loss",
        headline=("loss", "perplexity", "bits_per_token", "accuracy"),
        baselines={"unigram": "unigram token frequencies of the training text"},
        temporal=True,
    ),
}


def info(task: Task | str) -> TaskInfo:
    """The record of ``task`` (a :class:`Task` or its value, as metrics.json stores it)."""
    return TASKS[Task(task)]


# ------------------------------------------------- monitors: what can be watched
def monitor_problem(name: str) -> str | None:
    """Why ``name`` can never be a monitor, whatever the data; None when it may be.

    Known before the data is loaded: the name must be a metric some task records. Which
    task the data has is checked by :func:`check_monitor` once the data is built.
    """
    base = name.removeprefix("val_")
    train_metrics = sorted({"loss", *(t.train_metric for t in TASKS.values())})
    if name == base and base not in train_metrics:
        if metric_registry.get(base) is not None:
            recorded = ", ".join(train_metrics)
            return f"use val_{base} (the training split records only {recorded})"
        return f"use {', '.join(train_metrics)} or val_<metric>"
    if metric_registry.get(base) is None and base not in train_metrics:
        return f"no metric {base!r}; known: {', '.join(metric_registry.names())}"
    return None


def check_monitor(name: str, task: Task, key: str) -> str:
    """``name`` if the epoch rows of a ``task`` run record it, else a :class:`UserError`."""
    allowed = info(task).monitorable()
    if name not in allowed:
        raise UserError(
            f"{key}={name} is not recorded for a {task} task; use one of {', '.join(allowed)}"
        )
    return name


# ------------------------------------------- the old functional API, kept for callers
def loss_fn(task: Task, label_smoothing: float = 0.0) -> TaskLoss:
    """:meth:`TaskInfo.loss_fn` of ``task``."""
    return TASKS[task].loss_fn(label_smoothing)


def batch_metric(
    task: Task,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    target_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of the per-sample training metric over a batch (averaged by the caller)."""
    return TASKS[task].batch_metric(outputs, targets, target_std)


def target_std(meta: dict, task: Task) -> list[float] | None:
    """:meth:`TaskInfo.target_std` of ``task``."""
    return TASKS[task].target_std(meta)


def finish_metric(task: Task, total: float, count: int) -> float:
    """:meth:`TaskInfo.finish_metric` of ``task``."""
    return TASKS[task].finish_metric(total, count)


# The training metric and its direction per task, for callers that unpack the pair.
TRAIN_METRIC: Mapping[Task, tuple[str, str]] = {
    task: (record.train_metric, metric_mode(record.train_metric)) for task, record in TASKS.items()
}
# Tasks whose targets label smoothing can soften (class probabilities, not values).
SMOOTHABLE = frozenset(task for task, record in TASKS.items() if record.smoothable)
