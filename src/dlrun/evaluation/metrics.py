"""Metrics per task, computed by torchmetrics on a :class:`Scored` (model or baseline).

torchmetrics is imported inside the functions: it costs ~4 s to import and the CLI must
answer ``--help`` and config errors instantly. Its functional API is used on whole-split
tensors: evaluation sees every prediction at once, so the stateful ``MetricCollection``
(built for accumulating over training steps) would add state and nothing else.
Conventions, each proved equal to scikit-learn in ``tests/test_evaluation_metrics.py``:

- ``*_macro`` / ``*_micro`` / ``*_weighted`` mean what sklearn's ``average=`` of that name
  means with its default label set (classes occurring in the targets or predictions) and
  ``zero_division=0``. torchmetrics drops a class with neither targets nor predictions
  from macro averages, which is exactly sklearn's default. ``specificity_macro`` (sklearn
  has none) follows the same rules: a class's 0/0 specificity (TN + FP = 0, i.e. a split
  holding that class only) counts as 0.
- Per-class values that are 0/0 are NaN (written ``null``), like sklearn's
  ``zero_division=np.nan``: the precision of a class never predicted, the recall of a class
  absent from the split. A 0 there would blame the model for what it could not do.
- ROC AUC is undefined for a class with no positive or no negative sample in the split,
  and average precision for a class with no positive; macro values average the classes
  where they are defined (sklearn raises or warns instead) and ``notes`` names the rest.
  With none defined the value is NaN (``null``).
- Binary: the averaged keys treat both classes as sklearn does; ``roc_auc`` and ``pr_auc``
  rank by the positive class's probability; ``f1``/``precision``/``recall`` are the
  positive class's (``average="binary"``).
- Regression/forecast: errors in original units; ``rmse`` is the square root of the MSE
  over all outputs (sklearn's ``root_mean_squared_error`` for one output); ``r2`` is
  sklearn's uniform average over outputs, NaN below two samples.
- Confusion matrices are counts with rows = true class, columns = predicted (sklearn).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlrun.data.spec import Task
from dlrun.evaluation.predict import Scored

NAN = float("nan")
TOP_K = 5  # top-k accuracy is reported when there are more than TOP_K classes
MOST_CONFUSED = 5  # off-diagonal confusion-matrix cells listed in the report


@dataclass
class Curve:
    """One ROC or PR curve ready to draw: x = FPR or recall, y = TPR or precision."""

    label: str
    x: np.ndarray
    y: np.ndarray
    area: float


def task_metrics(
    task: Task, scored: Scored, names: Sequence[str], threshold: float
) -> dict[str, Any]:
    """All metrics of ``task`` for one predictor on one split (NaN where undefined)."""
    with warnings.catch_warnings():
        # undefined values (no positives, 0/0) are handled and explained in ``notes``
        warnings.filterwarnings("ignore", module="torchmetrics")
        if task is Task.MULTICLASS:
            return _multiclass(scored, names)
        if task is Task.BINARY:
            return _binary(scored, names, threshold)
        if task is Task.MULTILABEL:
            return _multilabel(scored, names)
        if task is Task.LANGUAGE_MODEL:
            return _language_model(scored)
        return _regression(scored)


def curves(
    task: Task, scored: Scored, names: Sequence[str], metrics: dict[str, Any]
) -> tuple[list[Curve], list[Curve]]:
    """ROC and PR curves: binary one each; otherwise each defined class plus the macro mean.

    The macro ROC averages TPR over the union of FPR points (sklearn's recipe); the macro
    PR averages interpolated precision (the best precision at recall >= r) on a recall
    grid. The legend's macro areas are the reported ``roc_auc`` / ``pr_auc``.
    """
    from torchmetrics.functional import classification as tmc

    targets, ranking = scored.targets, scored.ranking
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="torchmetrics")
        if task is Task.BINARY:
            positives = int(targets.sum())
            roc, pr = [], []
            if 0 < positives < len(targets):
                fpr, tpr, _ = tmc.binary_roc(ranking, targets)
                roc.append(Curve(names[1], _np(fpr), _np(tpr), metrics["roc_auc"]))
            if positives:
                precision, recall, _ = tmc.binary_precision_recall_curve(ranking, targets)
                pr.append(Curve(names[1], _np(recall), _np(precision), metrics["pr_auc"]))
            return roc, pr
        if task is Task.MULTICLASS:
            k = len(names)
            fprs, tprs, _ = tmc.multiclass_roc(ranking, targets, k)
            precisions, recalls, _ = tmc.multiclass_precision_recall_curve(ranking, targets, k)
            positives = torch.bincount(targets, minlength=k)
        else:
            k = len(names)
            fprs, tprs, _ = tmc.multilabel_roc(ranking, targets, k)
            precisions, recalls, _ = tmc.multilabel_precision_recall_curve(ranking, targets, k)
            positives = targets.sum(dim=0)
    n = len(targets)
    roc_ok, pr_ok = _defined(positives, n)
    roc = [
        Curve(name, _np(fprs[i]), _np(tprs[i]), metrics["roc_auc_per_class"][name])
        for i, name in enumerate(names)
        if roc_ok[i]
    ]
    pr = [
        Curve(name, _np(recalls[i]), _np(precisions[i]), metrics["pr_auc_per_class"][name])
        for i, name in enumerate(names)
        if pr_ok[i]
    ]
    if roc:
        grid = np.unique(np.concatenate([c.x for c in roc]))
        mean = np.mean([np.interp(grid, c.x, c.y) for c in roc], axis=0)
        roc.append(Curve("macro", grid, mean, metrics["roc_auc"]))
    if pr:
        grid = np.linspace(0.0, 1.0, 201)
        mean = np.mean([_interpolated_precision(c.x, c.y, grid) for c in pr], axis=0)
        pr.append(Curve("macro", grid, mean, metrics["pr_auc"]))
    return roc, pr


def _multiclass(s: Scored, names: Sequence[str]) -> dict[str, Any]:
    from torchmetrics.functional import classification as tmc

    k = len(names)
    averages, tables = _label_metrics(s.preds, s.targets, names)
    out: dict[str, Any] = {"loss": s.loss, "accuracy": averages.pop("accuracy")}
    if k > TOP_K:
        top = tmc.multiclass_accuracy(s.scores, s.targets, k, top_k=TOP_K, average="micro")
        out[f"top{TOP_K}_accuracy"] = float(top)
    out.update(averages)
    ranked = _ranked(
        tmc.multiclass_auroc(s.ranking, s.targets, k, average=None),
        tmc.multiclass_average_precision(s.ranking, s.targets, k, average=None),
        torch.bincount(s.targets, minlength=k),
        len(s.targets),
        names,
    )
    notes = ranked.pop("notes")
    return {**out, **ranked, **tables, "notes": notes}


def _binary(s: Scored, names: Sequence[str], threshold: float) -> dict[str, Any]:
    from torchmetrics.functional import classification as tmc

    averages, tables = _label_metrics(s.preds, s.targets, names)
    n, positives = len(s.targets), int(s.targets.sum())
    out: dict[str, Any] = {"loss": s.loss, **averages}
    if 0 < positives < n:
        out["roc_auc"] = float(tmc.binary_auroc(s.ranking, s.targets))
    else:
        out["roc_auc"] = NAN
    out["pr_auc"] = float(tmc.binary_average_precision(s.ranking, s.targets)) if positives else NAN
    out["f1"] = float(tmc.binary_f1_score(s.preds, s.targets))
    out["precision"] = float(tmc.binary_precision(s.preds, s.targets))
    out["recall"] = float(tmc.binary_recall(s.preds, s.targets))
    out["threshold"] = threshold
    (tn, fp), (fn, tp) = tables["confusion_matrix"]
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    out["operating_point"] = {
        "counts": counts,
        "per_1000": {key: round(1000 * value / n, 1) for key, value in counts.items()},
    }
    notes = []
    if not 0 < positives < n:
        notes.append(f"roc_auc is undefined: the split holds only one class ({positives=}).")
    if not positives:
        notes.append("pr_auc is undefined: the split has no positive sample.")
    return {**out, **tables, "notes": notes}


def _multilabel(s: Scored, names: Sequence[str]) -> dict[str, Any]:
    from torchmetrics.functional import classification as tmc

    k, p, t = len(names), s.preds, s.targets
    out: dict[str, Any] = {
        "loss": s.loss,
        "f1_micro": float(tmc.multilabel_f1_score(p, t, k, average="micro")),
        "f1_macro": float(tmc.multilabel_f1_score(p, t, k, average="macro")),
        "precision_macro": float(tmc.multilabel_precision(p, t, k, average="macro")),
        "recall_macro": float(tmc.multilabel_recall(p, t, k, average="macro")),
        "hamming_loss": float(tmc.multilabel_hamming_distance(p, t, k, average="micro")),
        "subset_accuracy": float(tmc.multilabel_exact_match(p, t, k)),
    }
    ranked = _ranked(
        tmc.multilabel_auroc(s.ranking, t, k, average=None),
        tmc.multilabel_average_precision(s.ranking, t, k, average=None),
        t.sum(dim=0),
        len(t),
        names,
    )
    per_label = {
        "precision": tmc.multilabel_precision(p, t, k, average=None),
        "recall": tmc.multilabel_recall(p, t, k, average=None),
        "specificity": tmc.multilabel_specificity(p, t, k, average=None),
        "f1": tmc.multilabel_f1_score(p, t, k, average=None),
    }
    stats = tmc.multilabel_stat_scores(p, t, k, average=None)
    notes = ranked.pop("notes")
    return {**out, **ranked, "per_class": _per_class(names, per_label, stats), "notes": notes}


def _language_model(s: Scored) -> dict[str, Any]:
    """Per-token loss in nats; perplexity = e^loss; bits = loss / ln 2; next-token accuracy."""
    loss = s.loss
    try:
        perplexity = math.exp(loss)
    except OverflowError:  # a loss above ~709 nats; JSON writes the infinity as null
        perplexity = math.inf
    return {
        "loss": loss,
        "perplexity": perplexity,
        "bits_per_token": loss / math.log(2),
        "accuracy": float((s.preds == s.targets).double().mean()),
        "notes": [],
    }


def _regression(s: Scored) -> dict[str, Any]:
    from torchmetrics.functional import regression as tmr

    n = len(s.targets)
    p, t = s.preds.reshape(n, -1), s.targets.reshape(n, -1)
    if p.shape[1] == 1:
        p, t = p[:, 0], t[:, 0]
    mse = float(tmr.mean_squared_error(p.reshape(-1), t.reshape(-1)))
    notes = [] if n >= 2 else ["r2 is undefined for fewer than two samples."]
    return {
        "loss": s.loss,
        "rmse": math.sqrt(mse),
        "mse": mse,
        "mae": float(tmr.mean_absolute_error(p.reshape(-1), t.reshape(-1))),
        "r2": float(tmr.r2_score(p, t)) if n >= 2 else NAN,
        "mape": float(tmr.mean_absolute_percentage_error(p.reshape(-1), t.reshape(-1))),
        "notes": notes,
    }


def _label_metrics(
    preds: torch.Tensor, targets: torch.Tensor, names: Sequence[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of hard class predictions: averages, per-class table, confusion matrix."""
    from torchmetrics.functional import classification as tmc

    k = len(names)

    def average(metric, how: str) -> float:
        return float(metric(preds, targets, k, average=how))

    averages = {
        "accuracy": average(tmc.multiclass_accuracy, "micro"),
        "precision_macro": average(tmc.multiclass_precision, "macro"),
        "recall_macro": average(tmc.multiclass_recall, "macro"),
        "f1_macro": average(tmc.multiclass_f1_score, "macro"),
        "f1_micro": average(tmc.multiclass_f1_score, "micro"),
        "f1_weighted": average(tmc.multiclass_f1_score, "weighted"),
        "specificity_macro": average(tmc.multiclass_specificity, "macro"),
    }
    per_class = {
        "precision": tmc.multiclass_precision(preds, targets, k, average=None),
        "recall": tmc.multiclass_recall(preds, targets, k, average=None),
        "specificity": tmc.multiclass_specificity(preds, targets, k, average=None),
        "f1": tmc.multiclass_f1_score(preds, targets, k, average=None),
    }
    stats = tmc.multiclass_stat_scores(preds, targets, k, average=None)
    matrix = tmc.multiclass_confusion_matrix(preds, targets, k)
    tables = {
        "per_class": _per_class(names, per_class, stats),
        "confusion_matrix": matrix.tolist(),
        "most_confused": _most_confused(matrix, names),
    }
    return averages, tables


def _per_class(
    names: Sequence[str], values: dict[str, torch.Tensor], stats: torch.Tensor
) -> dict[str, dict[str, float | int]]:
    """Per-class table with NaN where a value is 0/0 (see the module docstring)."""
    tp, fp, tn, fn, support = stats.T
    defined = {
        "precision": tp + fp > 0,
        "recall": tp + fn > 0,
        "specificity": tn + fp > 0,
        "f1": tp + fp + fn > 0,
    }
    table = {}
    for i, name in enumerate(names):
        row: dict[str, float | int] = {
            key: float(values[key][i]) if defined[key][i] else NAN for key in defined
        }
        row["support"] = int(support[i])
        table[name] = row
    return table


def _ranked(
    auroc: torch.Tensor,
    average_precision: torch.Tensor,
    positives: torch.Tensor,
    n: int,
    names: Sequence[str],
) -> dict[str, Any]:
    """Macro ROC AUC and AP over the classes where each is defined, per class, and notes."""
    roc_ok, pr_ok = _defined(positives, n)
    out: dict[str, Any] = {
        "roc_auc": _mean_where(auroc, roc_ok),
        "pr_auc": _mean_where(average_precision, pr_ok),
        "roc_auc_per_class": {
            name: float(auroc[i]) if roc_ok[i] else NAN for i, name in enumerate(names)
        },
        "pr_auc_per_class": {
            name: float(average_precision[i]) if pr_ok[i] else NAN for i, name in enumerate(names)
        },
    }
    notes = []
    for key, ok, why in (
        ("roc_auc", roc_ok, "no positive or no negative sample"),
        ("pr_auc", pr_ok, "no positive sample"),
    ):
        missing = [name for name, good in zip(names, ok, strict=True) if not good]
        if missing:
            notes.append(
                f"{key} is undefined for {', '.join(map(repr, missing))} ({why} in this "
                f"split); the macro value averages the other {int(ok.sum())} classes."
            )
    out["notes"] = notes
    return out


def _defined(positives: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ROC AUC (both classes present) and AP (a positive present) are defined."""
    return (positives > 0) & (positives < n), positives > 0


def _most_confused(matrix: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: which true class is most often taken for which."""
    errors = matrix.clone()
    errors.fill_diagonal_(0)
    support = matrix.sum(dim=1)
    order = torch.argsort(errors.reshape(-1), descending=True, stable=True)[:MOST_CONFUSED]
    pairs = []
    for flat in order.tolist():
        true, predicted = divmod(flat, len(names))
        count = int(errors[true, predicted])
        if count == 0:
            break
        pairs.append(
            {
                "true": names[true],
                "predicted": names[predicted],
                "count": count,
                "share_of_true": count / int(support[true]),
            }
        )
    return pairs


def _interpolated_precision(
    recall: np.ndarray, precision: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """Best precision reachable at recall >= r, for each r in ``grid``."""
    order = np.argsort(recall, kind="stable")
    recall, precision = recall[order], precision[order]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, grid, side="left")
    padded = np.append(envelope, 0.0)
    return padded[index]


def _mean_where(values: torch.Tensor, ok: torch.Tensor) -> float:
    return float(values[ok].double().mean()) if bool(ok.any()) else NAN


def _np(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().double().numpy()
