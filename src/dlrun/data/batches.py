"""Slice in-memory splits into batches without a DataLoader.

Small datasets sit on the training device as whole tensors; a batch is an index into
them. That avoids per-sample Python work (collate, worker processes) that would
dominate the step time of small models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from dlrun.data.spec import Split


@dataclass(frozen=True)
class Shard:
    """This process's part of every epoch when ``world`` processes train together.

    ``pad=True`` (training) repeats the first samples so every rank gets the same count
    and so takes the same number of optimizer steps, as ``DistributedSampler`` does; a
    rank with one step fewer would leave the others waiting in the gradient all-reduce.
    ``pad=False`` (evaluation) gives disjoint, possibly unequal parts, so the reduced
    sums count every sample exactly once.
    """

    rank: int
    world: int
    pad: bool = True

    def length(self, n: int) -> int:
        """How many of ``n`` samples this rank gets."""
        if self.pad:
            return -(-n // self.world)
        return len(range(self.rank, n, self.world))

    def take(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's indices: ``order[rank::world]`` after padding (if asked)."""
        n = order.numel()
        if self.pad and n % self.world:
            missing = self.world - n % self.world
            order = torch.cat([order, order.repeat(-(-missing // n))[:missing]])
        return order[self.rank :: self.world]


def n_batches(n: int, batch_size: int, limit: int | None = None, drop_last: bool = False) -> int:
    """How many batches :func:`iterate` yields for ``n`` samples."""
    full, rest = divmod(n, batch_size)
    count = full + (1 if rest and not drop_last else 0)
    return count if limit is None else min(count, limit)


def iterate(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    limit: int | None = None,
    drop_last: bool = False,
    shard: Shard | None = None,
) -> Iterator[Split]:
    """Yield ``Split`` batches; shuffled by ``generator`` (a CPU generator) when asked.

    The permutation is drawn on the CPU from ``generator`` and only then moved, so the
    batch order is the same on every device for the same seed. With ``shard``, every
    rank draws that same permutation from its identically seeded generator and keeps its
    own strided part, so no sampler state has to be exchanged between processes.

    A streamed split (:class:`dlrun.data.stream.StreamedSplit`) gets the very same
    positions from :func:`batch_positions` and reads them through its DataLoader, so a
    run draws the same batches, and resumes exactly, whether its data is in memory or not.
    """
    if not isinstance(split, Split):
        yield from split.batches(batch_positions(
            len(split), batch_size, shuffle, generator, limit, drop_last, shard
        ))  # fmt: skip
        return
    if shard is None and not shuffle:
        for b in range(n_batches(len(split), batch_size, limit, drop_last)):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            lengths = None if split.lengths is None else split.lengths[sl]
            yield Split(split.x[sl], split.y[sl], lengths)
        return
    for positions in batch_positions(
        len(split), batch_size, shuffle, generator, limit, drop_last, shard
    ):
        yield split.subset(positions.to(split.x.device))


def batch_positions(
    n: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    limit: int | None,
    drop_last: bool,
    shard: Shard | None,
) -> list[torch.Tensor]:
    """The sample positions of every batch of one epoch, on the CPU.

    The one place an epoch's order is drawn: ``randperm`` from ``generator`` when
    shuffling (the trainer's generator, saved in ``last.pt``, so a resumed run draws the
    same order), this process's part of it under ``shard``.
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if shard is not None:
        order = shard.take(order)
    count = n_batches(order.numel(), batch_size, limit, drop_last)
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(count)]
