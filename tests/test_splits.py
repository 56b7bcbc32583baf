"""Splits and scaling (``dlrun.data.splits``) on tiny arrays with answers worked out by hand.

Written against the mutants mutmut made of the module (``make mutation MODULE=splits``);
docs/testing.md names the few that no test can kill.
"""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.splits import Standardizer, stratified_split, temporal_bounds
from dlrun.errors import UserError

# 12 samples of class 0 (indices 0-11), then 8 of class 1 (12-19)
LABELS = np.array([0] * 12 + [1] * 8)


def test_a_split_partitions_the_indices_in_sorted_parts() -> None:
    parts = stratified_split(LABELS, seed=0, val_fraction=0.25, test_fraction=0.25)
    together = np.concatenate([parts.train, parts.val, parts.test])
    assert sorted(together.tolist()) == list(range(20))  # every sample once: no leakage
    for part in (parts.train, parts.val, parts.test):
        assert part.tolist() == sorted(part.tolist())


def test_split_sizes_follow_the_fractions() -> None:
    # test: 25 % of 20 = 5; val: 25 % of all = 5 of the 15 left
    parts = stratified_split(LABELS, seed=0, val_fraction=0.25, test_fraction=0.25)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (10, 5, 5)
    parts = stratified_split(np.arange(40) % 2, seed=0, val_fraction=0.1, test_fraction=0.5)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (16, 4, 20)
    parts = stratified_split(np.arange(40) % 2, seed=0)  # 15 % and 15 % by default
    assert (len(parts.train), len(parts.val), len(parts.test)) == (28, 6, 6)


def test_every_part_keeps_the_class_proportions() -> None:
    """60 % / 40 % overall, so 6+4 in train and 3+2 in val and in test, for any seed."""
    for seed in range(5):
        parts = stratified_split(LABELS, seed=seed, val_fraction=0.25, test_fraction=0.25)
        counts = [np.bincount(LABELS[p], minlength=2).tolist() for p in parts.__dict__.values()]
        assert counts == [[6, 4], [3, 2], [3, 2]], seed


def test_seed_zero_split_never_changes() -> None:
    """Saved runs and published numbers depend on it: pinned, not recomputed."""
    parts = stratified_split(LABELS, seed=0, val_fraction=0.25, test_fraction=0.25)
    assert parts.train.tolist() == [1, 4, 7, 8, 9, 11, 13, 15, 17, 19]
    assert parts.val.tolist() == [2, 6, 10, 14, 18]
    assert parts.test.tolist() == [0, 3, 5, 12, 16]


def test_unstratified_split_of_a_continuous_target() -> None:
    """Regression targets have no classes: stratifying on them would be an error."""
    target = np.linspace(0.0, 1.0, 20)
    parts = stratified_split(target, seed=3, val_fraction=0.25, test_fraction=0.25, stratify=False)
    assert parts.train.tolist() == [0, 3, 5, 6, 7, 9, 10, 13, 18, 19]
    assert parts.val.tolist() == [8, 11, 12, 15, 16]
    assert parts.test.tolist() == [1, 2, 4, 14, 17]


def test_another_seed_gives_another_split() -> None:
    a = stratified_split(LABELS, seed=0, val_fraction=0.25, test_fraction=0.25)
    b = stratified_split(LABELS, seed=1, val_fraction=0.25, test_fraction=0.25)
    assert a.test.tolist() != b.test.tolist() and a.val.tolist() != b.val.tolist()


@pytest.mark.parametrize(
    ("n", "val", "test", "bounds"),
    [
        (100, 0.1, 0.2, (70, 80)),
        (10, 0.15, 0.25, (6, 8)),  # 1.5 and 2.5 round half to even: 2 and 2
        (5, 0.1, 0.1, (3, 4)),  # 0.5 rounds to 0, but val and test get a sample each
        (3, 0.01, 0.01, (1, 2)),
    ],
)
def test_temporal_bounds(n: int, val: float, test: float, bounds: tuple[int, int]) -> None:
    assert temporal_bounds(n, val, test) == bounds


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.2, 0.0), (0.5, 0.5), (-0.1, 0.2)])
def test_temporal_bounds_refuse_fractions_that_leave_no_split(val: float, test: float) -> None:
    with pytest.raises(UserError) as raised:
        temporal_bounds(100, val, test)
    assert str(raised.value) == (
        f"data.val_fraction ({val}) and data.test_fraction ({test}) must be positive "
        "and add up to less than 1."
    )


def test_temporal_bounds_accept_fractions_just_under_one() -> None:
    assert temporal_bounds(100, 0.49, 0.5) == (1, 50)


def test_standardizer_per_feature_with_a_constant_column() -> None:
    x = np.array([[1.0, 10.0], [5.0, 10.0]], dtype=np.float32)
    scaler = Standardizer.fit(x)
    assert scaler.mean.tolist() == [3.0, 10.0]
    assert scaler.std.tolist() == [2.0, 1.0]  # a constant column is divided by 1, not 0
    out = scaler.transform(np.array([[3.0, 10.0], [7.0, 12.0]]))
    assert out.dtype == np.float32 and out.tolist() == [[0.0, 0.0], [2.0, 2.0]]
    back = scaler.inverse(out)
    assert back.dtype == np.float32 and back.tolist() == [[3.0, 10.0], [7.0, 12.0]]


def test_standardizer_global_statistics() -> None:
    x = np.array([[0.0, 2.0], [4.0, 6.0]])
    scaler = Standardizer.fit(x, per_feature=False)
    assert scaler.mean.shape == () and float(scaler.mean) == 3.0
    assert float(scaler.std) == pytest.approx(np.sqrt(5.0))  # population std of 0, 2, 4, 6


def test_standardizer_keeps_statistics_in_double_precision() -> None:
    """float32 sums lose digits on long columns; the statistics are float64."""
    scaler = Standardizer.fit(np.array([[0.0, 1.0], [1.0, 3.0]], dtype=np.float32))
    assert scaler.mean.dtype == np.float64 and scaler.std.dtype == np.float64


def test_standardizer_threshold_for_a_constant_column() -> None:
    tiny = np.array([[0.0], [2e-12]])  # std 1e-12: real, if small, variation is kept
    assert Standardizer.fit(tiny).std.tolist() == pytest.approx([1e-12])
    flat = np.array([[0.0], [1e-12]])  # std 5e-13: treated as constant
    assert Standardizer.fit(flat).std.tolist() == [1.0]
