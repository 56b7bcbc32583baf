"""Train/val/test splitting and leakage-free feature scaling.

Scaling statistics are fit on the training split only and then applied to val and test:
fitting them on all the data would let the test set leak into training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlrun.errors import UserError


@dataclass(frozen=True)
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(
    y: np.ndarray,
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    stratify: bool = True,
) -> SplitIndices:
    """Shuffled, stratified (by ``y`` when classification) index split into three parts."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    labels = y if stratify else None
    rest, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    val_share = val_fraction / (1.0 - test_fraction)
    rest_labels = y[rest] if stratify else None
    train, val = train_test_split(
        rest, test_size=val_share, random_state=seed + 1, stratify=rest_labels
    )
    return SplitIndices(np.sort(train), np.sort(val), np.sort(test))


def select_classes(
    y: np.ndarray, classes: Sequence[int], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Rows of ``classes`` only: their indices, labels renumbered 0..k-1 in the order
    given, and the kept class names."""
    chosen = [int(c) for c in classes]
    if len(set(chosen)) < 2 or not all(0 <= c < len(names) for c in chosen):
        raise UserError(
            f"data.classes={list(classes)} is invalid: give at least two distinct class "
            f"numbers from 0 to {len(names) - 1}"
        )
    keep = np.flatnonzero(np.isin(y, chosen))
    relabel = {c: i for i, c in enumerate(chosen)}
    return (
        keep,
        np.array([relabel[int(v)] for v in y[keep]], dtype=y.dtype),
        tuple(names[c] for c in chosen),
    )


def per_class(y: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``rows`` per class of ``y``, drawn at random (seeded), sorted."""
    if n < 1:
        raise UserError(f"data.train_per_class must be at least 1 (got {n})")
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(rows[y[rows] == label])[:n] for label in np.unique(y[rows])]
    return np.sort(np.concatenate(kept))


def temporal_bounds(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Cut points ``(a, b)`` of an in-order split: train [0, a), val [a, b), test [b, n).

    Series and text are split in order, never shuffled: a shuffled split would put
    neighbouring (nearly identical) windows on both sides and train on the future.
    """
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise UserError(
            f"data.val_fraction ({val_fraction}) and data.test_fraction "
            f"({test_fraction}) must be positive and add up to less than 1."
        )
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    return n - n_val - n_test, n - n_test


@dataclass(frozen=True)
class Standardizer:
    """Per-feature (or, with ``axis=None``, global) mean/std fit on training data."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, per_feature: bool = True) -> Standardizer:
        axis = 0 if per_feature else None
        mean = np.asarray(x.mean(axis=axis), dtype=np.float64)
        std = np.asarray(x.std(axis=axis), dtype=np.float64)
        return cls(mean, np.where(std < 1e-12, 1.0, std))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)
