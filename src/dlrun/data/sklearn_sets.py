"""scikit-learn's bundled datasets: real data that loads offline in milliseconds.

scikit-learn reads each one the first time; its arrays are then cached on disk
(:mod:`dlrun.data.cache`) so later runs don't pay for importing scikit-learn.

Splits are stratified for classification; features are standardised with statistics of
the training split only. Regression targets are standardised too (so one learning rate
suits every dataset) and the scaler is kept in ``meta["target_scaler"]``: the evaluator
reports errors in the data's own units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    digits = tuple(str(d) for d in range(10))
    return _bundled_table(
        "digits_flat", "load_digits", Task.MULTICLASS, seed, val_fraction, test_fraction, digits
    )


def load_breast_cancer(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """Wisconsin breast cancer, binary. Relabelled so 1 = malignant (the positive class).

    scikit-learn codes malignant as 0; a screening report should count the cancers it
    finds as true positives, so the condition being detected is the positive class.
    """
    return _bundled_table(
        "breast_cancer",
        "load_breast_cancer",
        Task.BINARY,
        seed,
        val_fraction,
        test_fraction,
        ("benign", "malignant"),
        relabel=lambda target: (target == 0).astype(np.int64),
    )


def load_iris(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Fisher's iris: 3 species from 4 measurements."""
    return _bundled_table("iris", "load_iris", Task.MULTICLASS, seed, val_fraction, test_fraction)


def load_wine(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Three wine cultivars from 13 chemical measurements."""
    return _bundled_table("wine", "load_wine", Task.MULTICLASS, seed, val_fraction, test_fraction)


def load_diabetes(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    """Diabetes progression one year after baseline: regression on 10 features."""
    return _bundled_table(
        "diabetes", "load_diabetes", Task.REGRESSION, seed, val_fraction, test_fraction, ()
    )


def _bundled_table(
    name: str,
    loader: str,
    task: Task,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    class_names: tuple[str, ...] | None = None,
    relabel: Callable[[np.ndarray], np.ndarray] | None = None,
) -> DataBundle:
    """scikit-learn's ``loader`` table as a bundle, its features named as scikit-learn
    names them. ``class_names`` None: the classes are the dataset's own ``target_names``;
    ``relabel`` recodes its targets first (e.g. to make the condition the positive class).
    """
    fields = ("data", "target", "feature_names")
    if class_names is None:  # this order of fields is part of the cache key: keep it
        fields = ("data", "target", "target_names", "feature_names")
    raw = sklearn_dataset(loader, fields)
    if class_names is None:
        class_names = tuple(str(c) for c in raw["target_names"])
    target = raw["target"] if relabel is None else relabel(raw["target"])
    return tabular_bundle(
        name,
        raw["data"],
        target,
        task,
        class_names,
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
