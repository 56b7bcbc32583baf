"""Batches and shards (``dlrun.data.batches``) on tiny splits with known answers.

Written against the mutants mutmut made of the module (``make mutation MODULE=batches``);
docs/testing.md names the few that no test can kill.
"""

from __future__ import annotations

import pytest
import torch

from dlrun.data.batches import Shard, iterate, n_batches
from dlrun.data.spec import Split


def numbered(n: int, with_lengths: bool = False) -> Split:
    """Sample i has x = [i], y = i and (optionally) length i + 1."""
    lengths = torch.arange(n) + 1 if with_lengths else None
    return Split(torch.arange(n).float().unsqueeze(1), torch.arange(n), lengths)


@pytest.mark.parametrize(
    ("n", "batch_size", "limit", "drop_last", "count"),
    [
        (10, 4, None, False, 3),  # 4 + 4 + 2
        (10, 4, None, True, 2),  # the short last batch dropped
        (8, 4, None, True, 2),  # nothing to drop
        (8, 4, None, False, 2),
        (10, 4, 2, False, 2),  # limit_batches
        (10, 4, 5, False, 3),  # a limit above the count changes nothing
        (3, 4, None, False, 1),
        (3, 4, None, True, 0),
        (0, 4, None, False, 0),
    ],
)
def test_n_batches(n: int, batch_size: int, limit: int | None, drop_last: bool, count: int):
    assert n_batches(n, batch_size, limit, drop_last) == count


def test_n_batches_keeps_the_short_last_batch_by_default() -> None:
    assert n_batches(10, 4) == 3


def test_the_permutation_moves_to_the_data_once_per_epoch(monkeypatch) -> None:
    """Drawn on the CPU (the same on every device), then moved to the data's device once,
    not once per batch. "meta" stands in for a GPU: tensors without storage."""
    split = Split(torch.zeros(6, 1, device="meta"), torch.zeros(6, device="meta"))
    devices: list[str] = []
    subset = Split.subset

    def spying_subset(self: Split, index: torch.Tensor) -> Split:
        devices.append(index.device.type)
        return subset(self, index)

    monkeypatch.setattr(Split, "subset", spying_subset)
    for shard in (None, Shard(0, 2)):
        gen = torch.Generator().manual_seed(0)
        list(iterate(split, 2, shuffle=True, generator=gen, shard=shard))
    assert devices == ["meta"] * (3 + 2)


def test_iterate_in_order_with_lengths_limit_and_drop_last() -> None:
    split = numbered(10, with_lengths=True)
    batches = list(iterate(split, 4))
    assert [b.y.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.x[:, 0].tolist() for b in batches][2] == [8.0, 9.0]
    assert [b.lengths.tolist() for b in batches] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert [b.y.tolist() for b in iterate(split, 4, drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [b.y.tolist() for b in iterate(split, 4, limit=1)] == [[0, 1, 2, 3]]
    assert all(b.lengths is None for b in iterate(numbered(5), 2))


def test_shuffled_batches_follow_the_generator() -> None:
    split = numbered(10, with_lengths=True)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    gen = torch.Generator().manual_seed(7)
    batches = list(iterate(split, 4, shuffle=True, generator=gen))
    assert [b.y.tolist() for b in batches] == [expected[:4], expected[4:8], expected[8:]]
    assert [b.lengths.tolist() for b in batches] == [
        [i + 1 for i in expected[:4]],
        [i + 1 for i in expected[4:8]],
        [i + 1 for i in expected[8:]],
    ]
    gen = torch.Generator().manual_seed(7)
    short = list(iterate(split, 4, shuffle=True, generator=gen, drop_last=True, limit=5))
    assert [b.y.tolist() for b in short] == [expected[:4], expected[4:8]]


@pytest.mark.parametrize(
    ("n", "world", "padded", "unpadded"),
    [
        (7, 3, [3, 3, 3], [3, 2, 2]),
        (6, 3, [2, 2, 2], [2, 2, 2]),
        (2, 5, [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]),
    ],
)
def test_shard_lengths(n: int, world: int, padded: list[int], unpadded: list[int]) -> None:
    assert [Shard(r, world).length(n) for r in range(world)] == padded
    assert [Shard(r, world, pad=False).length(n) for r in range(world)] == unpadded


def test_padded_shards_repeat_the_first_samples() -> None:
    order = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    assert [Shard(r, 3).take(order).tolist() for r in range(3)] == [
        [10, 13, 16],
        [11, 14, 10],  # 7 samples, 3 ranks: 10 and 11 come round again
        [12, 15, 11],
    ]
    few = torch.tensor([5, 9])  # fewer samples than ranks: repeated as often as needed
    assert [Shard(r, 5).take(few).tolist() for r in range(5)] == [[5], [9], [5], [9], [5]]
    even = torch.tensor([1, 2, 3, 4])
    assert [Shard(r, 2).take(even).tolist() for r in range(2)] == [[1, 3], [2, 4]]


def test_unpadded_shards_are_strided_parts() -> None:
    order = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    assert [Shard(r, 3, pad=False).take(order).tolist() for r in range(3)] == [
        [10, 13, 16],
        [11, 14],
        [12, 15],
    ]


def test_iterate_a_shard_in_order_and_shuffled() -> None:
    split = numbered(7, with_lengths=True)
    rank1 = list(iterate(split, 2, shard=Shard(1, 3)))
    assert [b.y.tolist() for b in rank1] == [[1, 4], [0]]
    assert [b.lengths.tolist() for b in rank1] == [[2, 5], [1]]
    assert [b.y.tolist() for b in iterate(split, 2, shard=Shard(1, 3), drop_last=True)] == [[1, 4]]
    assert [b.y.tolist() for b in iterate(split, 1, shard=Shard(1, 3), limit=2)] == [[1], [4]]
    expected = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    mine = Shard(2, 3, pad=False).take(expected).tolist()
    gen = torch.Generator().manual_seed(3)
    shuffled = iterate(split, 8, shuffle=True, generator=gen, shard=Shard(2, 3, pad=False))
    assert [b.y.tolist() for b in shuffled] == [mine]
