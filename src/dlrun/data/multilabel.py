"""A generated multilabel set: each sample carries several of ``n_labels`` tags at once.

Made by scikit-learn's ``make_multilabel_classification`` (bag-of-words-like count
features drawn from the labels present), so it needs no files; the generated arrays are
cached like the bundled sets (:mod:`dlrun.data.cache`). Targets are float32 (N, L) of
0/1, one sigmoid output per label; a random split (multilabel rows have no single class
to stratify by) with features standardised on the training split.
"""

from __future__ import annotations

import numpy as np

from dlrun.data.cache import cached
from dlrun.data.sklearn_sets import tabular_bundle
from dlrun.data.spec import DataBundle, Task


def load_multilabel(
    seed: int,
    n_samples: int = 1200,
    n_features: int = 20,
    n_labels: int = 5,
    labels_per_sample: int = 2,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    generator_seed: int = 0,
) -> DataBundle:
    """``labels_per_sample`` is the Poisson mean of labels per sample (samples get >= 1).

    ``generator_seed`` fixes the samples; the run's ``seed`` picks the split.
    """
    args = {
        "n_samples": n_samples,
        "n_features": n_features,
        "n_classes": n_labels,
        "n_labels": labels_per_sample,
        "allow_unlabeled": False,
        "random_state": generator_seed,
    }

    def build() -> dict[str, np.ndarray]:
        from sklearn.datasets import make_multilabel_classification

        x, y = make_multilabel_classification(**args)
        return {"x": x, "y": y}

    made = cached("make_multilabel_classification", args, build, lambda a: set(a) == {"x", "y"})
    x, y = made["x"], made["y"]
    names = tuple(f"label_{i}" for i in range(n_labels))
    return tabular_bundle(
        "multilabel", x, y, Task.MULTILABEL, names, seed, val_fraction, test_fraction
    )
