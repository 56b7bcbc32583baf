"""Train/val/test splitting and leakage-free feature scaling.

Scaling statistics are fit on the training split only and then applied to val and test:
fitting them on all the data would let the test set leak into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dlrun.data.cache import cached
from dlrun.data.spec import DataBundle, DataSpec, Split, Task
from dlrun.errors import UserError
from dlrun.tasks import Targets, info


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
    """Shuffled, stratified (by ``y`` when classification) index split into three parts.

    scikit-learn's ``train_test_split`` draws it once; the indices are cached on disk
    (:mod:`dlrun.data.cache`, keyed by a hash of ``y`` and the arguments), so a later
    run of the same split does not import scikit-learn.
    """
    labels = np.ascontiguousarray(y)
    key = {
        "y": hashlib.sha256(labels.tobytes()).hexdigest(),
        "shape": list(labels.shape),
        "dtype": str(labels.dtype),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "stratify": bool(stratify),
    }

    def build() -> dict[str, np.ndarray]:
        return _sklearn_split(labels, seed, val_fraction, test_fraction, stratify)

    def partition(parts: dict[str, np.ndarray]) -> bool:
        names = ("train", "val", "test")
        if set(parts) != set(names) or any(parts[k].ndim != 1 for k in names):
            return False
        every = np.sort(np.concatenate([parts[k] for k in names]))
        return bool(np.array_equal(every, np.arange(len(labels))))

    parts = cached("split", key, build, partition)
    return SplitIndices(parts["train"], parts["val"], parts["test"])


def _sklearn_split(
    y: np.ndarray, seed: int, val_fraction: float, test_fraction: float, stratify: bool
) -> dict[str, np.ndarray]:
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
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


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


def encode_targets(
    target: np.ndarray, task: Task, train: np.ndarray, n_classes: int
) -> tuple[torch.Tensor, int, dict]:
    """Targets as the tensor type the task's loss wants, with ``n_outputs`` and ``meta``.

    Regression targets are standardised with training-split statistics only; the scaler
    goes to ``meta["target_scaler"]`` so errors can be reported in the data's own units.
    """
    targets = info(task).targets
    if targets is Targets.VALUES:
        column = target.reshape(len(target), -1).astype(np.float64)
        scaler = Standardizer.fit(column[train])
        meta = {"target_scaler": {"mean": scaler.mean.tolist(), "std": scaler.std.tolist()}}
        return torch.from_numpy(scaler.transform(column)), column.shape[1], meta
    if targets is Targets.BINARY:
        return torch.from_numpy(target.astype(np.float32)), 1, {}
    if targets is Targets.LABELS:
        return torch.from_numpy(target.astype(np.float32)), target.shape[1], {}
    return torch.from_numpy(target.astype(np.int64)), n_classes, {}


def cut_bundle(
    spec: DataSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    idx,
    meta=None,
    lengths: torch.Tensor | None = None,
) -> DataBundle:
    """Cut whole-dataset tensors into the three splits named by ``idx`` (SplitIndices)."""

    def part(index: np.ndarray) -> Split:
        t = torch.from_numpy(index)
        part_lengths = None if lengths is None else lengths[t].contiguous()
        return Split(x[t].contiguous(), y[t].contiguous(), part_lengths)

    return DataBundle(spec, part(idx.train), part(idx.val), part(idx.test), meta or {})
