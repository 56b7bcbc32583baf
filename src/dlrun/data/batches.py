"""Slice in-memory splits into batches without a DataLoader.

Small datasets sit on the training device as whole tensors; a batch is an index into
them. That avoids per-sample Python work (collate, worker processes) that would
dominate the step time of small models.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dlrun.data.spec import Split


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
) -> Iterator[Split]:
    """Yield ``Split`` batches; shuffled by ``generator`` (a CPU generator) when asked.

    The permutation is drawn on the CPU from ``generator`` and only then moved, so the
    batch order is the same on every device for the same seed.
    """
    n = len(split)
    count = n_batches(n, batch_size, limit, drop_last)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(split.x.device)
        for b in range(count):
            yield split.subset(order[b * batch_size : (b + 1) * batch_size])
    else:
        for b in range(count):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            lengths = None if split.lengths is None else split.lengths[sl]
            yield Split(split.x[sl], split.y[sl], lengths)
