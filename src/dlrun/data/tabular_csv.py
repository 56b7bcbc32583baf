"""A user's CSV file as a tabular dataset: pick the target column, the rest are features.

Numeric columns get their missing cells imputed with the median, then standardised;
other columns are one-hot encoded with missing cells as their own ``"missing"``
category. Every statistic (medians, means, categories) is fit on the training split
only and then applied to val and test, so nothing about the test rows leaks into
training; a category first seen in val/test encodes as all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dlrun.data.csvfile import CsvTable, is_missing, read_csv, to_numbers
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.data.splits import cut_bundle, encode_targets, stratified_split
from dlrun.data.table import category, encode_table, feature_names, fit_table
from dlrun.errors import UserError
from dlrun.tasks import info

TASKS = ("auto", "multiclass", "binary", "regression")
# With task=auto, a numeric target with more distinct values than this is regression.
AUTO_REGRESSION_MIN_VALUES = 20


def load_csv(
    seed: int,
    path: str | None = None,
    target: str | None = None,
    task: str = "auto",
    drop: Sequence[str] = (),
    positive_class: str | None = None,
    delimiter: str = "auto",
    max_categories: int = 50,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataBundle:
    """Load ``path`` and predict column ``target`` from the other columns.

    ``task=auto`` picks regression for a numeric target with many distinct values,
    binary for two classes and multiclass otherwise. ``drop`` names columns to ignore
    (identifiers, leaky columns). ``positive_class`` picks the class coded 1 for binary
    targets (default: the second in sorted order, e.g. ``1`` of ``0``/``1``).
    ``max_categories`` caps the one-hot columns per categorical feature (rarer
    categories share one column).
    """
    table = read_csv(path, delimiter)
    # Hydra reads data.target=2010 as a number; column names are text
    target = _check_columns(table, None if target is None else str(target), task, drop)
    cells = table.column(target, "target")
    rows = np.array([i for i, cell in enumerate(cells) if not is_missing(cell)])
    if len(rows) == 0:
        raise UserError(f"Column {target!r} of {table.path} has no values.")
    values = to_numbers([cells[i] for i in rows])
    if values is not None:
        table.check_finite(target, values, rows)
    y, resolved, class_names = _encode_target(
        [cells[i] for i in rows], task, positive_class, target
    )
    dropped = {str(name) for name in drop}
    features = [n for n in table.header if n != target and n not in dropped]
    if not features:
        raise UserError(f"{table.path} has no feature columns besides the target {target!r}.")
    classification = info(resolved).classification
    try:
        idx = stratified_split(y, seed, val_fraction, test_fraction, stratify=classification)
    except ValueError as err:
        raise UserError(
            f"Cannot split {len(rows)} rows of {table.path} into train/val/test "
            f"({err}); add rows, merge rare classes or set data.task."
        ) from err
    x, state = _encode_features(table, features, rows, idx.train, max_categories)
    y_tensor, n_outputs, meta = encode_targets(y, resolved, idx.train, len(class_names))
    meta.update(
        path=str(table.path),
        target=target,
        feature_names=feature_names(state),
        rows_without_target=len(table) - len(rows),
        preprocess={**state, "target": target},
    )
    spec = DataSpec(table.path.stem, resolved, DataKind.TABULAR, input_shape=(x.shape[1],),
                    n_outputs=n_outputs, class_names=class_names)  # fmt: skip
    return cut_bundle(spec, torch.from_numpy(x), y_tensor, idx, meta)


def _check_columns(table: CsvTable, target: str | None, task: str, drop: Sequence[str]) -> str:
    """The target column's name, once ``target``, ``task`` and ``drop`` are known good."""
    if target is None:
        raise UserError(
            f"Set data.target to the column to predict; {table.path} has: "
            f"{', '.join(table.header)}."
        )
    if task not in TASKS:
        raise UserError(f"data.task must be one of {', '.join(TASKS)} (got {task!r}).")
    table.column(target, "target")
    for name in drop:
        table.column(str(name), "drop")  # an unknown name is a typo worth reporting
    return target


def _encode_target(
    cells: list[str], task: str, positive_class: str | None, target: str
) -> tuple[np.ndarray, Task, tuple[str, ...]]:
    """Targets as numbers (regression) or class codes, the task, and the class names."""
    numbers = to_numbers(cells)
    keys: list = list(numbers) if numbers is not None else [c.strip() for c in cells]
    distinct = sorted(set(keys))
    if task == "auto":
        if numbers is not None and len(distinct) > AUTO_REGRESSION_MIN_VALUES:
            task = "regression"
        else:
            task = "binary" if len(distinct) == 2 else "multiclass"
    if task == "regression":
        if numbers is None:
            text = next(c for c in cells if to_numbers([c]) is None)
            raise UserError(
                f"data.task=regression needs a numeric target, but column "
                f"{target!r} holds {text!r}."
            )
        return numbers, Task.REGRESSION, ()
    if len(distinct) < 2:
        raise UserError(f"Column {target!r} has a single value; there is nothing to classify.")
    if task == "binary" and len(distinct) != 2:
        raise UserError(
            f"data.task=binary needs exactly 2 classes, but column {target!r} "
            f"has {len(distinct)}; use data.task=multiclass."
        )
    names = [f"{k:g}" if numbers is not None else k for k in distinct]
    if task == "binary" and positive_class is not None:
        if str(positive_class) not in names:
            raise UserError(
                f"data.positive_class={positive_class!r} is not one of the classes "
                f"of {target!r}: {', '.join(names)}."
            )
        if names[0] == str(positive_class):
            distinct.reverse()
            names.reverse()
    code = {key: i for i, key in enumerate(distinct)}
    y = np.array([code[k] for k in keys], dtype=np.int64)
    return y, Task.BINARY if task == "binary" else Task.MULTICLASS, tuple(names)


def _encode_features(
    table: CsvTable,
    names: list[str],
    rows: np.ndarray,
    train: np.ndarray,
    max_categories: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Impute, standardise and one-hot encode the feature columns (fit on ``train``).

    Returns the features and the fitted state (:mod:`dlrun.data.table`), which the run
    keeps so new rows are encoded the same way.
    """
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, list[str]] = {}
    for name in names:
        cells = [table.columns[name][i] for i in rows]
        values = to_numbers(cells)
        if values is not None:
            table.check_finite(name, values, rows)
            numeric[name] = values
        else:
            categorical[name] = [category(c) for c in cells]
    state = fit_table(numeric, categorical, train, max_categories)
    columns = {**numeric, **categorical}
    return encode_table(state, columns).x, state
