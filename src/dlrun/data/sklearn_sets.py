"""scikit-learn's bundled datasets: real data that loads offline in milliseconds.

Splits are stratified for classification; features are standardised with statistics of
the training split only. Regression targets are standardised too (so one learning rate
suits every dataset) and the scaler is kept in ``meta["target_scaler"]``: the evaluator
reports errors in the data's own units.
"""

from __future__ import annotations

import numpy as np
import torch

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.data.splits import Standardizer, stratified_split


def load_digits_images(
    seed: int, size: int = 32, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """8x8 handwritten digits as 1-channel images, bilinearly resized to ``size`` px."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.astype(np.float32) / 16.0
    y = raw.target.astype(np.int64)
    idx = stratified_split(y, seed, val_fraction, test_fraction)
    scaler = Standardizer.fit(images[idx.train], per_feature=False)
    x = torch.from_numpy(scaler.transform(images)).unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    spec = DataSpec(
        name="digits",
        task=Task.MULTICLASS,
        kind=DataKind.IMAGE,
        input_shape=(1, size, size),
        n_outputs=10,
        class_names=tuple(str(d) for d in range(10)),
    )
    return _bundle(spec, x, torch.from_numpy(y), idx)


def load_digits_flat(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """The same digits as 64 tabular features (for the MLP)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    return _tabular(
        "digits_flat", raw.data, raw.target, Task.MULTICLASS,
        tuple(str(d) for d in range(10)), seed, val_fraction, test_fraction,
    )


def load_breast_cancer(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """Wisconsin breast cancer, binary. Relabelled so 1 = malignant (the positive class).

    scikit-learn codes malignant as 0; a screening report should count the cancers it
    finds as true positives, so the condition being detected is the positive class.
    """
    from sklearn.datasets import load_breast_cancer as load

    raw = load()
    y = (raw.target == 0).astype(np.int64)
    return _tabular(
        "breast_cancer", raw.data, y, Task.BINARY, ("benign", "malignant"),
        seed, val_fraction, test_fraction,
    )


def load_iris(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    from sklearn.datasets import load_iris as load

    raw = load()
    return _tabular(
        "iris", raw.data, raw.target, Task.MULTICLASS, tuple(raw.target_names),
        seed, val_fraction, test_fraction,
    )


def load_wine(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataBundle:
    from sklearn.datasets import load_wine as load

    raw = load()
    return _tabular(
        "wine", raw.data, raw.target, Task.MULTICLASS, tuple(raw.target_names),
        seed, val_fraction, test_fraction,
    )


def load_diabetes(
    seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """Diabetes progression one year after baseline: regression on 10 features."""
    from sklearn.datasets import load_diabetes as load

    raw = load()
    return _tabular(
        "diabetes", raw.data, raw.target, Task.REGRESSION, (),
        seed, val_fraction, test_fraction,
    )


def _tabular(
    name: str,
    features: np.ndarray,
    target: np.ndarray,
    task: Task,
    class_names: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> DataBundle:
    regression = task is Task.REGRESSION
    idx = stratified_split(target, seed, val_fraction, test_fraction, stratify=not regression)
    x = torch.from_numpy(Standardizer.fit(features[idx.train]).transform(features))
    meta: dict = {}
    if regression:
        column = target.reshape(-1, 1).astype(np.float64)
        scaler = Standardizer.fit(column[idx.train])
        y = torch.from_numpy(scaler.transform(column))
        meta["target_scaler"] = {"mean": scaler.mean.tolist(), "std": scaler.std.tolist()}
        n_outputs = 1
    elif task is Task.BINARY:
        y = torch.from_numpy(target.astype(np.float32))
        n_outputs = 1
    else:
        y = torch.from_numpy(target.astype(np.int64))
        n_outputs = len(class_names)
    spec = DataSpec(
        name=name,
        task=task,
        kind=DataKind.TABULAR,
        input_shape=(features.shape[1],),
        n_outputs=n_outputs,
        class_names=class_names,
    )
    return _bundle(spec, x, y, idx, meta)


def _bundle(spec: DataSpec, x: torch.Tensor, y: torch.Tensor, idx, meta=None) -> DataBundle:
    def part(index: np.ndarray) -> Split:
        t = torch.from_numpy(index)
        return Split(x[t].contiguous(), y[t].contiguous())

    return DataBundle(spec, part(idx.train), part(idx.val), part(idx.test), meta or {})
