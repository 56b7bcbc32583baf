"""Every metric dlrun reports, in one table: name, direction, tasks, and how it is computed.

:data:`METRICS` is the one place a metric is defined. From it:

- the evaluator writes each metric of the run's task into metrics.json (the model's and
  the baseline's numbers come from the same function);
- any of them can be ``trainer.monitor`` as ``val_<name>``: the trainer computes it once
  per epoch on the validation split with the same function, history.csv gets the
  column, and ``best.pt``, early stopping, plateau schedules and Optuna follow it;
- :mod:`dlrun.monitor` takes its direction from here (lower or higher is better).

Adding a metric is one :class:`Metric` entry below (docs/extending.md shows one).

Torch-free at import: ``dlrun --help`` and config validation read the names and
directions; torchmetrics (~0.4 s to import, with scipy.signal deferred: see
:mod:`dlrun.deferred_imports`) is imported inside the compute functions.
Conventions (each proved equal to scikit-learn in ``tests/test_evaluation_metrics.py``):

- ``*_macro`` / ``*_micro`` / ``*_weighted`` mean what sklearn's ``average=`` of that name
  means with its default label set (classes occurring in the targets or predictions) and
  ``zero_division=0``. torchmetrics drops a class with neither targets nor predictions
  from macro averages, which is exactly sklearn's default. ``specificity_macro`` (sklearn
  has none) follows the same rules: a class's 0/0 specificity counts as 0.
- ROC AUC is undefined for a class with no positive or no negative sample in the split,
  and average precision for a class with no positive; macro values average the classes
  where they are defined (sklearn raises or warns instead) and the notes name the rest.
  With none defined the value is NaN (``null``).
- Binary: the averaged keys treat both classes as sklearn does; ``roc_auc`` and ``pr_auc``
  rank by the positive class's probability; ``f1``/``precision``/``recall`` are the
  positive class's (``average="binary"``).
- Regression/forecast: errors in original units; ``rmse`` is the square root of the MSE
  over all outputs (sklearn's ``root_mean_squared_error`` for one output); ``r2`` is
  sklearn's uniform average over outputs, NaN below two samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from dlrun import deferred_imports
from dlrun.data.spec import Task

if TYPE_CHECKING:
    import torch

NAN = float("nan")
TOP_K = 5  # top-k accuracy is reported when there are more than TOP_K classes


class Scored(Protocol):
    """What the metrics read of one predictor's output on a split.

    :class:`dlrun.evaluation.predict.Scored` is the one the evaluator builds; declared
    here as a Protocol so this module (which config validation imports) depends on
    nothing above it.
    """

    targets: torch.Tensor
    preds: torch.Tensor
    loss: float
    scores: torch.Tensor | None

    @property
    def ranking(self) -> torch.Tensor | None: ...


class Inputs:
    """What a metric is computed from: one predictor's :class:`Scored` output on a split.

    ``family`` is the torchmetrics family the averaged classification metrics use
    (``multiclass`` for class ids, binary included; ``multilabel`` for label sets).
    Pieces several metrics share are computed once (cached); undefined values are
    explained in ``notes``.
    """

    def __init__(self, scored: Scored, names: Sequence[str], targets: str) -> None:
        self.scored = scored
        self.names = names  # classes or labels (none for values and tokens)
        self.k = len(names)
        self.targets = targets  # a dlrun.tasks.Targets value
        self.family = "multilabel" if targets == "labels" else "multiclass"
        self.notes: list[str] = []

    @property
    def preds(self) -> torch.Tensor:
        return self.scored.preds

    @property
    def truth(self) -> torch.Tensor:
        return self.scored.targets

    def average(self, metric: str, how: str) -> float:
        """torchmetrics' ``<family>_<metric>`` of the hard predictions, ``average=how``."""
        fn = getattr(tmc(), f"{self.family}_{metric}")
        return float(fn(self.preds, self.truth, self.k, average=how))

    @cached_property
    def positives(self) -> torch.Tensor:
        """Positive samples per class (binary: of the positive class)."""
        import torch

        if self.targets == "labels":
            return self.truth.sum(dim=0)
        if self.targets == "binary":
            return self.truth.sum().reshape(1)
        return torch.bincount(self.truth, minlength=self.k)

    @cached_property
    def defined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where ROC AUC (both classes present) and AP (a positive present) are defined."""
        n = len(self.truth)
        return (self.positives > 0) & (self.positives < n), self.positives > 0

    @cached_property
    def ranked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class ROC AUC and average precision (binary: the positive class's)."""
        s, t = self.scored.ranking, self.truth
        if self.targets == "binary":
            roc_ok, pr_ok = self.defined
            auroc = tmc().binary_auroc(s, t).reshape(1) if roc_ok.all() else _nan(1)
            ap = tmc().binary_average_precision(s, t).reshape(1) if pr_ok.all() else _nan(1)
            return auroc, ap
        auroc = getattr(tmc(), f"{self.family}_auroc")(s, t, self.k, average=None)
        ap = getattr(tmc(), f"{self.family}_average_precision")(s, t, self.k, average=None)
        return auroc, ap

    @cached_property
    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) as (N,) for one output, (N, K) for several."""
        n = len(self.truth)
        p, t = self.preds.reshape(n, -1), self.truth.reshape(n, -1)
        return (p[:, 0], t[:, 0]) if p.shape[1] == 1 else (p, t)

    def regression(self, name: str) -> float:
        """torchmetrics' regression ``name`` over every output at once."""
        p, t = self.values
        return float(getattr(tmr(), name)(p.reshape(-1), t.reshape(-1)))


Compute = Callable[[Inputs], float]


@dataclass(frozen=True)
class Metric:
    """One metric: its name in metrics.json, which way is better, where it exists, how.

    ``compute`` takes the predictor's :class:`Inputs` and returns the value (NaN when it
    is undefined on this split, with a note in ``inputs.notes``). ``applies`` says
    whether the metric exists at all for ``k`` classes (top-5 accuracy needs more than 5).
    ``sklearn`` names the ``sklearn.metrics`` function that, called as
    ``fn(targets, predictions)`` on the hard predictions (values: in data units; tokens:
    flattened), must give the same number; the test suite checks every one named.
    """

    name: str
    direction: str  # "min" (lower is better) or "max"
    tasks: frozenset[Task]
    compute: Compute = field(repr=False)
    doc: str = ""
    applies: Callable[[int], bool] = field(default=lambda k: True, repr=False)
    sklearn: str = ""


def tmc() -> ModuleType:
    """torchmetrics' functional classification metrics, imported on first use."""
    return deferred_imports.import_module("torchmetrics.functional.classification")


def tmr() -> ModuleType:
    """torchmetrics' functional regression metrics, imported on first use."""
    return deferred_imports.import_module("torchmetrics.functional.regression")


def _nan(n: int) -> torch.Tensor:
    import torch

    return torch.full((n,), NAN, dtype=torch.float64)


def _mean_where(values: torch.Tensor, ok: torch.Tensor) -> float:
    return float(values[ok].double().mean()) if bool(ok.any()) else NAN


def _averaged(metric: str, how: str) -> Compute:
    return lambda x: x.average(metric, how)


def _accuracy(x: Inputs) -> float:
    if x.targets == "tokens":  # next-token accuracy over every position
        return float((x.preds == x.truth).double().mean())
    return x.average("accuracy", "micro")


def _top_k(x: Inputs) -> float:
    top = tmc().multiclass_accuracy(x.scored.scores, x.truth, x.k, top_k=TOP_K, average="micro")
    return float(top)


def _roc_auc(x: Inputs) -> float:
    ok = x.defined[0]
    if x.targets == "binary" and not ok.all():
        positives = int(x.positives[0])
        x.notes.append(f"roc_auc is undefined: the split holds only one class ({positives=}).")
    elif not ok.all():
        _undefined_note(x, "roc_auc", ok, "no positive or no negative sample")
    return _mean_where(x.ranked[0], ok)


def _pr_auc(x: Inputs) -> float:
    ok = x.defined[1]
    if x.targets == "binary" and not ok.all():
        x.notes.append("pr_auc is undefined: the split has no positive sample.")
    elif not ok.all():
        _undefined_note(x, "pr_auc", ok, "no positive sample")
    return _mean_where(x.ranked[1], ok)


def _undefined_note(x: Inputs, key: str, ok: torch.Tensor, why: str) -> None:
    missing = [name for name, good in zip(x.names, ok.tolist(), strict=True) if not good]
    x.notes.append(
        f"{key} is undefined for {', '.join(map(repr, missing))} ({why} in this "
        f"split); the macro value averages the other {int(ok.sum())} classes."
    )


def _positive_class(metric: str) -> Compute:
    return lambda x: float(getattr(tmc(), f"binary_{metric}")(x.preds, x.truth))


def _multilabel(metric: str, **options: Any) -> Compute:
    return lambda x: float(getattr(tmc(), f"multilabel_{metric}")(x.preds, x.truth, x.k, **options))


def _rmse(x: Inputs) -> float:
    return math.sqrt(x.regression("mean_squared_error"))


def _r2(x: Inputs) -> float:
    if len(x.truth) < 2:
        x.notes.append("r2 is undefined for fewer than two samples.")
        return NAN
    return float(tmr().r2_score(*x.values))


def _perplexity(x: Inputs) -> float:
    try:
        return math.exp(x.scored.loss)
    except OverflowError:  # a loss above ~709 nats; JSON writes the infinity as null
        return math.inf


SINGLE_LABEL = frozenset({Task.MULTICLASS, Task.BINARY})
CLASSIFICATION = SINGLE_LABEL | {Task.MULTILABEL}
VALUES = frozenset({Task.REGRESSION, Task.FORECAST})
_LM = frozenset({Task.LANGUAGE_MODEL})

# In the order metrics.json lists them.
METRICS: tuple[Metric, ...] = (
    Metric("loss", "min", frozenset(Task), lambda x: x.scored.loss,
           "the task loss, as trained (units: dlrun.tasks.TaskInfo.loss_units)"),
    Metric("accuracy", "max", SINGLE_LABEL | _LM, _accuracy,
           "share of correct predictions (next tokens for language models)",
           sklearn="accuracy_score"),
    Metric("top5_accuracy", "max", frozenset({Task.MULTICLASS}), _top_k,
           "share of samples whose class is among the 5 most probable",
           applies=lambda k: k > TOP_K),
    Metric("precision_macro", "max", CLASSIFICATION, _averaged("precision", "macro")),
    Metric("recall_macro", "max", CLASSIFICATION, _averaged("recall", "macro")),
    Metric("f1_macro", "max", CLASSIFICATION, _averaged("f1_score", "macro"),
           "F1 averaged over classes alike: the headline of classification"),
    Metric("f1_micro", "max", CLASSIFICATION, _averaged("f1_score", "micro")),
    Metric("f1_weighted", "max", SINGLE_LABEL, _averaged("f1_score", "weighted")),
    Metric("specificity_macro", "max", SINGLE_LABEL, _averaged("specificity", "macro")),
    Metric("mcc", "max", SINGLE_LABEL,
           lambda x: float(tmc().multiclass_matthews_corrcoef(x.preds, x.truth, x.k)),
           "Matthews correlation coefficient, -1 to 1 (0: chance)",
           sklearn="matthews_corrcoef"),
    Metric("roc_auc", "max", CLASSIFICATION, _roc_auc, "area under the ROC curve (macro)"),
    Metric("pr_auc", "max", CLASSIFICATION, _pr_auc, "average precision (macro)"),
    Metric("f1", "max", frozenset({Task.BINARY}), _positive_class("f1_score"),
           "F1 of the positive class", sklearn="f1_score"),
    Metric("precision", "max", frozenset({Task.BINARY}), _positive_class("precision"),
           sklearn="precision_score"),
    Metric("recall", "max", frozenset({Task.BINARY}), _positive_class("recall"),
           sklearn="recall_score"),
    Metric("hamming_loss", "min", frozenset({Task.MULTILABEL}),
           _multilabel("hamming_distance", average="micro"), "share of wrong labels",
           sklearn="hamming_loss"),
    Metric("subset_accuracy", "max", frozenset({Task.MULTILABEL}), _multilabel("exact_match"),
           "share of samples with every label right", sklearn="accuracy_score"),
    Metric("rmse", "min", VALUES, _rmse, "root mean squared error, data units"),
    Metric("mse", "min", VALUES, lambda x: x.regression("mean_squared_error"),
           sklearn="mean_squared_error"),
    Metric("mae", "min", VALUES, lambda x: x.regression("mean_absolute_error"),
           sklearn="mean_absolute_error"),
    Metric("r2", "max", VALUES, _r2, "coefficient of determination (uniform over outputs)",
           sklearn="r2_score"),
    Metric("mape", "min", VALUES, lambda x: x.regression("mean_absolute_percentage_error"),
           sklearn="mean_absolute_percentage_error"),
    Metric("perplexity", "min", _LM, _perplexity, "e ** loss"),
    Metric("bits_per_token", "min", _LM, lambda x: x.scored.loss / math.log(2), "loss / ln 2"),
)  # fmt: skip

_BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


def get(name: str) -> Metric | None:
    """The metric called ``name`` (no ``val_`` prefix), or None."""
    return _BY_NAME.get(name)


def names() -> list[str]:
    """Every metric's name, in metrics.json order."""
    return list(_BY_NAME)


def for_task(task: Task) -> list[Metric]:
    """The metrics the evaluator reports for ``task``, in metrics.json order."""
    return [metric for metric in METRICS if task in metric.tasks]


def direction(name: str) -> str | None:
    """``"min"`` or ``"max"`` for a registered metric (``val_``/``train_`` allowed), else None."""
    metric = get(name.removeprefix("val_").removeprefix("train_"))
    return None if metric is None else metric.direction
