"""A table's preprocessing as plain JSON: fit once on the training rows, apply anywhere.

Numeric columns: a missing cell gets the column's training median, then the column is
standardised with the training mean and std. Other columns are one-hot encoded over the
categories seen in training (missing cells are their own ``"missing"`` category; with
``max_categories`` the rarest share one ``infrequent`` column, as scikit-learn's
``OneHotEncoder`` does); a category never seen in training encodes as all zeros.

:func:`fit_table` returns that state as a dict of numbers and strings, and
:func:`encode_table` is the one transform that turns columns into model features, used
both when training (on the loader's rows) and later (on a new CSV or a JSON request),
so predictions on a copied run dir see exactly the features training produced.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.data.csvfile import is_missing
from dlrun.data.splits import Standardizer
from dlrun.errors import UserError

MISSING_CATEGORY = "missing"
INFREQUENT = "infrequent_sklearn"  # scikit-learn's name for the shared rare-category column


@dataclass
class Encoded:
    """Model inputs for some rows, and one line per fallback that was used on them."""

    x: np.ndarray
    notes: list[str] = field(default_factory=list)
    lengths: np.ndarray | None = None  # valid steps of right-padded sequences
    y: np.ndarray | None = None  # targets in training units, where the input holds them


def fit_table(
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, Sequence[str]],
    train: np.ndarray,
    max_categories: int | None = None,
) -> dict[str, Any]:
    """The state of every column, fit on the rows ``train`` only.

    ``numeric`` columns are float64 with NaN for missing cells (a column with no value
    in the training rows is left out: nothing could be learnt from it); ``categorical``
    columns are strings, missing cells already ``"missing"``.
    """
    state: dict[str, Any] = {"type": "table", "numeric": [], "categorical": []}
    kept = {name: v for name, v in numeric.items() if not np.isnan(v[train]).all()}
    if kept:
        raw = np.column_stack(list(kept.values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are gone
            medians = np.nanmedian(raw[train], axis=0)
        filled = np.where(np.isnan(raw), medians, raw)
        scaler = Standardizer.fit(filled[train])
        for i, name in enumerate(kept):
            state["numeric"].append(
                {
                    "name": name,
                    "median": float(medians[i]),
                    "mean": float(scaler.mean[i]),
                    "std": float(scaler.std[i]),
                }
            )
    if categorical:
        state["categorical"] = _fit_categories(categorical, train, max_categories)
    return state


def _fit_categories(
    categorical: Mapping[str, Sequence[str]], train: np.ndarray, max_categories: int | None
) -> list[dict[str, Any]]:
    """Categories per column as scikit-learn's encoder groups them (rare ones shared)."""
    from sklearn.preprocessing import OneHotEncoder

    raw = np.array(list(categorical.values()), dtype=object).T
    encoder = OneHotEncoder(handle_unknown="ignore", max_categories=max_categories)
    encoder.fit(raw[train])
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(categorical))
    out = []
    for name, cats, rare in zip(categorical, encoder.categories_, infrequent, strict=True):
        rare_list = [] if rare is None else [str(c) for c in rare]
        frequent = [str(c) for c in cats if str(c) not in rare_list]
        out.append({"name": name, "categories": frequent, "infrequent": rare_list})
    return out


def feature_names(state: Mapping[str, Any]) -> list[str]:
    """The model's input features in order (``<column>_<category>`` for one-hot ones)."""
    names = [c["name"] for c in state["numeric"]]
    for column in state["categorical"]:
        names += [f"{column['name']}_{c}" for c in column["categories"]]
        if column["infrequent"]:
            names.append(f"{column['name']}_{INFREQUENT}")
    return names


def columns_used(state: Mapping[str, Any]) -> list[str]:
    """The input columns the model reads, numeric first."""
    return [c["name"] for c in state["numeric"]] + [c["name"] for c in state["categorical"]]


def encode_table(state: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> Encoded:
    """Model features (float32, one row per input row) from raw ``columns``.

    Numeric columns take numbers or number-like strings (missing cells: NaN, None or the
    CSV missing markers); every column the state names must be present.
    """
    blocks: list[np.ndarray] = []
    notes: list[str] = []
    numeric = state["numeric"]
    if numeric:
        raw = np.column_stack([floats(columns[c["name"]], c["name"]) for c in numeric])
        medians = np.array([c["median"] for c in numeric])
        missing = np.isnan(raw)
        if missing.any():
            counts = ", ".join(
                f"{c['name']} ({n})" for c, n in zip(numeric, missing.sum(0), strict=True) if n
            )
            notes.append(f"missing numbers filled with the training median: {counts}")
        filled = np.where(missing, medians, raw)
        scaler = Standardizer(
            np.array([c["mean"] for c in numeric]), np.array([c["std"] for c in numeric])
        )
        blocks.append(scaler.transform(filled))
    for column in state["categorical"]:
        block, unseen = _one_hot(column, columns[column["name"]])
        blocks.append(block)
        if unseen:
            shown = ", ".join(sorted(unseen)[:5]) + (", ..." if len(unseen) > 5 else "")
            notes.append(
                f"column {column['name']!r}: categories unseen in training encode as "
                f"all zeros: {shown}"
            )
    n = len(next(iter(columns.values()))) if columns else 0
    x = np.hstack(blocks).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
    return Encoded(x, notes)


def floats(cells: Sequence[Any], name: str) -> np.ndarray:
    """Cells (strings or numbers) as float64, NaN where missing; one clear error for a
    cell that isn't a number, naming column ``name`` and the row."""
    out = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells):
        if cell is None or (isinstance(cell, str) and is_missing(cell)):
            out[row] = np.nan
            continue
        try:
            out[row] = float(cell)
        except (TypeError, ValueError):
            raise UserError(
                f"column {name!r} holds numbers in training, but row {row + 1} has {cell!r}"
            ) from None
        if np.isinf(out[row]):
            raise UserError(f"column {name!r} has an infinite value in row {row + 1}")
    return out


def _one_hot(column: Mapping[str, Any], cells: Sequence[Any]) -> tuple[np.ndarray, set[str]]:
    """One-hot block of one categorical column, and the categories it had never seen."""
    index = {c: i for i, c in enumerate(column["categories"])}
    width = len(index) + (1 if column["infrequent"] else 0)
    rare = set(column["infrequent"])
    block = np.zeros((len(cells), width), dtype=np.float32)
    unseen: set[str] = set()
    for row, cell in enumerate(cells):
        value = category(cell)
        if value in index:
            block[row, index[value]] = 1.0
        elif value in rare:
            block[row, width - 1] = 1.0
        else:
            unseen.add(value)
    return block, unseen


def category(cell: Any) -> str:
    """A categorical cell as the text it was fit on (missing cells: ``"missing"``)."""
    if cell is None:
        return MISSING_CATEGORY
    text = str(cell)
    return MISSING_CATEGORY if is_missing(text) else text.strip()
