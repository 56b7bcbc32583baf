"""scikit-learn's bundled datasets: real data that loads offline in milliseconds.

scikit-learn reads each one the first time; its arrays are then cached on disk
(:mod:`dlrun.data.cache`) so later runs don't pay for importing scikit-learn.

Splits are stratified for classification; features are standardised with statistics of
the training split only. Regression targets are standardised too (so one learning rate
suits every dataset) and the scaler is kept in ``meta["target_scaler"]``: the evaluator
reports errors in the data's own units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dlrun.data.cache import sklearn_dataset
from dlrun.data.pixels import encode_images, image_state
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.data.splits import (
    SplitIndices,
    Standardizer,
    cut_bundle,
    encode_targets,
    per_class,
    select_classes,
    stratified_split,
)
from dlrun.data.table import encode_table, fit_table
from dlrun.tasks import info


def load_digits_images(
    seed: int,
    size: int = 32,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    classes: Sequence[int] | None = None,
    train_per_class: int | None = None,
) -> DataBundle:
    """8x8 handwritten digits as 1-channel images, bilinearly resized to ``size`` px.

    ``classes`` keeps only those digits (relabelled in the given order, named by digit);
    ``train_per_class`` keeps that many training images of each class (seeded): the
    small labelled sets transfer learning is for. Val and test keep their full size.
    """
    raw = sklearn_dataset("load_digits", ("images", "target"))
    images = raw["images"].astype(np.float32) / 16.0
    y = raw["target"].astype(np.int64)
    names = tuple(str(d) for d in range(10))
    if classes is not None:
        keep, y, names = select_classes(y, classes, names)
        images = images[keep]
    idx = stratified_split(y, seed, val_fraction, test_fraction)
    if train_per_class is not None:
        idx = SplitIndices(per_class(y, idx.train, train_per_class, seed), idx.val, idx.test)
    scaler = Standardizer.fit(images[idx.train], per_feature=False)
    state = image_state(1, (8, 8), [scaler.mean], [scaler.std], (size, size))
    x = torch.from_numpy(encode_images(state, images[:, None]).x)
    spec = DataSpec(
        name="digits",
        task=Task.MULTICLASS,
        kind=DataKind.IMAGE,
        input_shape=(1, size, size),
        n_outputs=len(names),
        class_names=names,
    )
    return cut_bundle(spec, x, torch.from_numpy(y), idx, {"preprocess": state})


def load_digits_flat(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """The same digits as 64 tabular features (for the MLP)."""
    raw = sklearn_dataset("load_digits", ("data", "target", "feature_names"))
    return tabular_bundle(
        "digits_flat",
        raw["data"],
        raw["target"],
        Task.MULTICLASS,
        tuple(str(d) for d in range(10)),
        seed,
        val_fraction,
        test_fraction,
        raw["feature_names"],
    )


def load_breast_cancer(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """Wisconsin breast cancer, binary. Relabelled so 1 = malignant (the positive class).

    scikit-learn codes malignant as 0; a screening report should count the cancers it
    finds as true positives, so the condition being detected is the positive class.
    """
    raw = sklearn_dataset("load_breast_cancer", ("data", "target", "feature_names"))
    y = (raw["target"] == 0).astype(np.int64)
    return tabular_bundle(
        "breast_cancer",
        raw["data"],
        y,
        Task.BINARY,
        ("benign", "malignant"),
        seed,
        val_fraction,
        test_fraction,
        raw["feature_names"],
    )


def load_iris(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Fisher's iris: 3 species from 4 measurements."""
    return _named_classification("iris", "load_iris", seed, val_fraction, test_fraction)


def load_wine(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Three wine cultivars from 13 chemical measurements."""
    return _named_classification("wine", "load_wine", seed, val_fraction, test_fraction)


def load_diabetes(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Diabetes progression one year after baseline: regression on 10 features."""
    raw = sklearn_dataset("load_diabetes", ("data", "target", "feature_names"))
    return tabular_bundle(
        "diabetes",
        raw["data"],
        raw["target"],
        Task.REGRESSION,
        (),
        seed,
        val_fraction,
        test_fraction,
        raw["feature_names"],
    )


def _named_classification(
    name: str, loader: str, seed: int, val_fraction: float, test_fraction: float
) -> DataBundle:
    """A scikit-learn multiclass table whose bundle carries its own class names."""
    raw = sklearn_dataset(loader, ("data", "target", "target_names", "feature_names"))
    classes = tuple(str(c) for c in raw["target_names"])
    return tabular_bundle(
        name,
        raw["data"],
        raw["target"],
        Task.MULTICLASS,
        classes,
        seed,
        val_fraction,
        test_fraction,
        raw["feature_names"],
    )


def tabular_bundle(
    name: str,
    features: np.ndarray,
    target: np.ndarray,
    task: Task,
    class_names: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    columns: Sequence[str] = (),
) -> DataBundle:
    """A bundle of a feature table: split (stratified for single-label classes), features
    standardised with training statistics, targets encoded for the task's loss. The
    features are named ``columns`` (default ``feature_<i>``): new rows match by name."""
    # multilabel rows have several labels at once, so there is no single class to stratify by
    stratify = info(task).single_label
    idx = stratified_split(target, seed, val_fraction, test_fraction, stratify=stratify)
    names = [str(c) for c in columns] or [f"feature_{i}" for i in range(features.shape[1])]
    numeric = {name: features[:, i].astype(np.float64) for i, name in enumerate(names)}
    state = fit_table(numeric, {}, idx.train)
    x = torch.from_numpy(encode_table(state, numeric).x)
    y, n_outputs, meta = encode_targets(target, task, idx.train, len(class_names))
    meta["preprocess"] = {**state, "target": "target"}
    spec = DataSpec(
        name=name,
        task=task,
        kind=DataKind.TABULAR,
        input_shape=(features.shape[1],),
        n_outputs=n_outputs,
        class_names=class_names,
    )
    return cut_bundle(spec, x, y, idx, meta)
