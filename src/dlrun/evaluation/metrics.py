"""Metrics of one predictor on one split: the registry's scalars plus the tables.

The scalar metrics (accuracy, F1, ROC AUC, RMSE, ...) and their conventions live in
:mod:`dlrun.metric_registry`, one entry each; this module adds what is not one number:
per-class tables, the confusion matrix and its most-confused pairs, the binary
operating point, and the ROC/PR curves the pictures draw. torchmetrics' functional API
is used on whole-split tensors (imported inside the functions: it costs ~4 s to import
and the CLI must answer ``--help`` and config errors instantly).

- Per-class values that are 0/0 are NaN (written ``null``), like sklearn's
  ``zero_division=np.nan``: the precision of a class never predicted, the recall of a class
  absent from the split. A 0 there would blame the model for what it could not do.
- Confusion matrices are counts with rows = true class, columns = predicted (sklearn).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlrun.data.spec import Task
from dlrun.evaluation.predict import Scored
from dlrun.metric_registry import NAN, Inputs, for_task, tmc
from dlrun.tasks import Targets, info

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
    """Every registry metric of ``task`` for one predictor on one split, and its tables.

    NaN where a value is undefined, with the reason in ``notes``.
    """
    record = info(task)
    x = Inputs(scored, names, record.targets)
    with warnings.catch_warnings():
        # undefined values (no positives, 0/0) are handled and explained in ``notes``
        warnings.filterwarnings("ignore", module="torchmetrics")
        out: dict[str, Any] = {m.name: m.compute(x) for m in for_task(task) if m.applies(x.k)}
        if record.classification:
            out.update(_class_tables(x, threshold))
    out["notes"] = x.notes
    return out


def _class_tables(x: Inputs, threshold: float) -> dict[str, Any]:
    """Per-class areas and table; confusion matrix and operating point (single label)."""
    out: dict[str, Any] = {}
    if x.targets != Targets.BINARY:  # a binary task ranks by the positive class only
        (roc_ok, pr_ok), (auroc, ap) = x.defined, x.ranked
        out["roc_auc_per_class"] = _where(x.names, auroc, roc_ok)
        out["pr_auc_per_class"] = _where(x.names, ap, pr_ok)
    if x.targets == Targets.BINARY:
        out["threshold"] = threshold
    out["per_class"] = _per_class(x)
    if x.targets == Targets.LABELS:
        return out
    matrix = tmc().multiclass_confusion_matrix(x.preds, x.truth, x.k)
    if x.targets == Targets.BINARY:
        out["operating_point"] = _operating_point(matrix, len(x.truth))
    out["confusion_matrix"] = matrix.tolist()
    out["most_confused"] = _most_confused(matrix, x.names)
    return out


def _operating_point(matrix: torch.Tensor, n: int) -> dict[str, Any]:
    """TP/FP/TN/FN counts and the same per 1,000 cases."""
    (tn, fp), (fn, tp) = matrix.tolist()
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return {
        "counts": counts,
        "per_1000": {key: round(1000 * value / n, 1) for key, value in counts.items()},
    }


def curves(
    task: Task, scored: Scored, names: Sequence[str], metrics: dict[str, Any]
) -> tuple[list[Curve], list[Curve]]:
    """ROC and PR curves: binary one each; otherwise each defined class plus the macro mean.

    The macro ROC averages TPR over the union of FPR points (sklearn's recipe); the macro
    PR averages interpolated precision (the best precision at recall >= r) on a recall
    grid. The legend's macro areas are the reported ``roc_auc`` / ``pr_auc``.
    """
    x = Inputs(scored, names, info(task).targets)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="torchmetrics")
        if x.targets == Targets.BINARY:
            return _binary_curves(x, metrics)
        rocs = getattr(tmc(), f"{x.family}_roc")(x.scored.ranking, x.truth, x.k)
        prs = getattr(tmc(), f"{x.family}_precision_recall_curve")(x.scored.ranking, x.truth, x.k)
    (fprs, tprs, _), (precisions, recalls, _) = rocs, prs
    roc_ok, pr_ok = x.defined
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


def _binary_curves(x: Inputs, metrics: dict[str, Any]) -> tuple[list[Curve], list[Curve]]:
    """The positive class's ROC and PR curves, where the split makes them defined."""
    (roc_ok, pr_ok), ranking, name = x.defined, x.scored.ranking, x.names[1]
    roc, pr = [], []
    if roc_ok.all():
        fpr, tpr, _ = tmc().binary_roc(ranking, x.truth)
        roc.append(Curve(name, _np(fpr), _np(tpr), metrics["roc_auc"]))
    if pr_ok.all():
        precision, recall, _ = tmc().binary_precision_recall_curve(ranking, x.truth)
        pr.append(Curve(name, _np(recall), _np(precision), metrics["pr_auc"]))
    return roc, pr


def _per_class(x: Inputs) -> dict[str, dict[str, float | int]]:
    """Per-class table with NaN where a value is 0/0 (see the module docstring)."""
    values = {
        key: getattr(tmc(), f"{x.family}_{fn}")(x.preds, x.truth, x.k, average=None)
        for key, fn in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("specificity", "specificity"),
            ("f1", "f1_score"),
        )
    }
    stats = getattr(tmc(), f"{x.family}_stat_scores")(x.preds, x.truth, x.k, average=None)
    tp, fp, tn, fn, support = stats.T
    defined = {
        "precision": tp + fp > 0,
        "recall": tp + fn > 0,
        "specificity": tn + fp > 0,
        "f1": tp + fp + fn > 0,
    }
    table = {}
    for i, name in enumerate(x.names):
        row: dict[str, float | int] = {
            key: float(values[key][i]) if defined[key][i] else NAN for key in defined
        }
        row["support"] = int(support[i])
        table[name] = row
    return table


def _where(names: Sequence[str], values: torch.Tensor, ok: torch.Tensor) -> dict[str, float]:
    """``{name: value}`` with NaN where the value is undefined."""
    return {name: float(values[i]) if ok[i] else NAN for i, name in enumerate(names)}


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


def _np(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().double().numpy()
