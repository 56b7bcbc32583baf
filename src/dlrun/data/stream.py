"""Data that does not fit in memory, read batch by batch through torch's DataLoader.

A :class:`StreamedSplit` stands where a :class:`~dlrun.data.spec.Split` of whole tensors
would: its targets ``y`` are in memory (small), its inputs are rows of a *source* read
when a batch is needed. :func:`dlrun.data.batches.iterate` draws the epoch's positions
exactly as for in-memory data (:func:`~dlrun.data.batches.batch_positions`, from the
trainer's generator, DDP shard included) and hands them to :meth:`StreamedSplit.batches`,
so shuffling, ``limit_batches``, exact resume and DDP shards behave identically, and the
same data gives the same batches streamed or not.

A source is any picklable object with ``len`` and ``source[rows] -> (x, lengths, bad)``
(rows: an int64 array; ``x`` a CPU tensor of raw values, uint8 pixels or token ids;
``lengths`` a tensor or None; ``bad`` a list of ``(position, reason)`` for rows that
could not be read), plus ``name(row)``. The DataLoader runs it with ``batch_size=None``:
one call reads a whole batch in a worker (no per-sample collate), the loader pins it
(CUDA), prefetches ``prefetch_factor`` batches per worker and keeps its workers between
epochs. On the device, the batch is converted to float32 and standardised there
(:class:`~dlrun.data.normalise.Normaliser`), before the trainer's batch augmentation.

A row that cannot be read while streaming (a truncated image that passed the listing)
is replaced, as timm's ImageDataset does, by the next readable row of the same split
with the same target, so targets and batch sizes stay exact; each such file is named
once in ``meta["skipped"]`` (printed, and written into report.md and metrics.json).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.data.normalise import Normaliser
from dlrun.data.spec import Split
from dlrun.errors import UserError

# In-memory data takes float32 tensors; stream (data.stream=auto) when they would use
# more than this share of the memory available now (the decoded raw copy, the model and
# evaluation need the rest).
MEMORY_SHARE = 0.25
READ_BATCH = 256  # rows per read of a whole-source pass (cache build, in-memory decode)


@dataclass(frozen=True)
class LoaderSettings:
    """How a streamed split feeds the trainer (``data.num_workers``, ...)."""

    num_workers: int = 0
    prefetch_factor: int = 2
    pin_memory: bool = False  # set by .to(cuda)


def loader_settings(num_workers: int | str, prefetch_factor: int) -> LoaderSettings:
    """``data.num_workers`` (``auto``: one per spare core, at most 4) as settings."""
    if num_workers == "auto":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        spare = (os.cpu_count() or 1) // max(world, 1) - 1
        num_workers = max(1, min(4, spare))
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise UserError(
            f"data.num_workers must be auto or a whole number >= 0 (got {num_workers!r})."
        )
    if not isinstance(prefetch_factor, int) or prefetch_factor < 1:
        raise UserError(
            f"data.prefetch_factor must be a whole number >= 1 (got {prefetch_factor!r})."
        )
    if multiprocessing.current_process().daemon:
        num_workers = 0  # a daemonic process (a pool worker) may not start children
    return LoaderSettings(num_workers, prefetch_factor)


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``), else the physical total."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: assume it fits


def decide_stream(
    stream: bool | str, n_bytes: int, held: str = "float32 tensors"
) -> tuple[bool, str]:
    """Whether to stream (``data.stream``: true, false or auto), and a line saying why.

    ``n_bytes`` is what the data would take in memory, as ``held``.
    """
    size = f"{_gib(n_bytes)} as {held}"
    if stream is True or stream is False:
        how = "streamed" if stream else "in memory"
        return stream, f"{size}: {how} (data.stream={str(stream).lower()})"
    if stream != "auto":
        raise UserError(f"data.stream must be auto, true or false (got {stream!r}).")
    free = available_memory()
    streamed = n_bytes > MEMORY_SHARE * free
    how = "more" if streamed else "less"
    mode = "streamed through a DataLoader" if streamed else "kept in memory"
    return streamed, (
        f"{size}, {how} than {MEMORY_SHARE:.0%} of the {_gib(free)} "
        f"available: {mode} (data.stream=auto)"
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class MappedRows:
    """Rows of a memory-mapped array (a ``.npy``, a stored ``.npz`` member, the cache).

    Pickles as its file name and layout, never its data: DataLoader workers and DDP
    processes open the map themselves.
    """

    def __init__(
        self, path: str, dtype: str, shape: tuple[int, ...], offset: int, fortran: bool = False
    ) -> None:
        self.path, self.dtype, self.shape = path, dtype, tuple(shape)
        self.offset, self.fortran = offset, fortran
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(
                self.path,
                dtype=np.dtype(self.dtype),
                mode="r",
                offset=self.offset,
                shape=self.shape,
                order="F" if self.fortran else "C",
            )
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, None, list]:
        order = np.argsort(rows, kind="stable")  # read the file forwards, then reorder
        block = np.empty((len(rows), *self.shape[1:]), dtype=np.dtype(self.dtype))
        block[order] = self.array[rows[order]]
        return torch.from_numpy(_native(block)), None, []

    def name(self, row: int) -> str:
        return f"{self.path}[{row}]"


def _native(block: np.ndarray) -> np.ndarray:
    """Types torch can hold: bool stays, float16 widens, big-endian becomes native."""
    if block.dtype == np.float16:
        return block.astype(np.float32)
    if not block.dtype.isnative:
        return block.astype(block.dtype.newbyteorder("="))
    return block


class _EpochPlan(torch.utils.data.Sampler):
    """The source rows of each batch of the current epoch, set before every pass.

    It runs in the main process (workers only receive its items), so replacing the
    plan between epochs is all a persistent-worker DataLoader needs.
    """

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(source: Any, settings: LoaderSettings) -> tuple[Any, _EpochPlan]:
    """A DataLoader that reads whole batches of ``source`` in the planned order.

    It gets a private generator: DataLoader draws its workers' base seed from it, and
    drawing from torch's global generator would shift dropout and initialisation
    between a streamed and an in-memory run of the same config. On Linux its workers are
    forked, as under torchrun, even inside the processes ``trainer.devices=N`` spawns
    (whose default would be spawn: every worker importing torch again, ~10 s each).
    """
    from torch.utils.data import DataLoader

    plan = _EpochPlan()
    extra: dict[str, Any] = {}
    if settings.num_workers:
        extra = {"prefetch_factor": settings.prefetch_factor, "persistent_workers": True}
        if sys.platform.startswith("linux"):
            extra["multiprocessing_context"] = "fork"
    loader = DataLoader(
        source,
        batch_size=None,
        sampler=plan,
        num_workers=settings.num_workers,
        pin_memory=settings.pin_memory,
        generator=torch.Generator(),
        **extra,
    )
    return loader, plan


def read_rows(
    source: Any, rows: np.ndarray, settings: LoaderSettings, into: np.ndarray | None = None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Every row of ``rows`` read once, in order, through the source's DataLoader.

    Returns the array (``into`` when given: a memory-mapped cache being built) and the
    failures as ``(index into rows, reason)``. Used to decode a folder into memory, to
    build the cache and to read a statistics sample.
    """
    loader, plan = make_loader(source, replace(settings, pin_memory=False))
    plan.batches = [rows[i : i + READ_BATCH] for i in range(0, len(rows), READ_BATCH)]
    failures: list[tuple[int, str]] = []
    start = 0
    for x, _lengths, bad in loader:
        block = x.numpy()
        if into is None:
            into = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
        into[start : start + len(block)] = block
        failures += [(start + pos, reason) for pos, reason in bad]
        start += len(block)
    if into is None:
        into = np.empty((0,), dtype=np.uint8)
    return into, failures


@dataclass
class StreamedSplit:
    """A split whose inputs are read batch by batch from ``source`` (see the module doc).

    ``rows`` are the source rows of this split, ``y`` their targets (CPU), ``lengths``
    the valid lengths of padded token rows when the source knows them up front (None:
    the source returns them per batch). ``skipped`` is the bundle's
    ``meta["skipped"]`` list: unreadable rows found while streaming are appended there.
    """

    source: Any
    rows: np.ndarray
    y: torch.Tensor
    normalise: Normaliser | None = None
    settings: LoaderSettings = field(default_factory=LoaderSettings)
    skipped: list[dict[str, str]] = field(default_factory=list)
    target_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _loader: Any = field(default=None, repr=False)
    _plan: Any = field(default=None, repr=False)
    _replaced: dict[int, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loader": None, "_plan": None}

    @property
    def device(self) -> torch.device:
        return self.target_device

    def to(self, device: torch.device | str) -> StreamedSplit:
        device = torch.device(device)
        settings = replace(self.settings, pin_memory=device.type == "cuda")
        return self._derive(self.rows, self.y, settings=settings, target_device=device)

    def subset(self, index: torch.Tensor) -> StreamedSplit:
        picked = index.cpu().numpy()
        return self._derive(self.rows[picked], self.y[index.cpu()])

    def head(self, n: int) -> StreamedSplit:
        return self._derive(self.rows[:n], self.y[:n])

    def concat(self, other: StreamedSplit) -> StreamedSplit:
        if not isinstance(other, StreamedSplit) or other.source is not self.source:
            raise TypeError("only splits of the same streamed source can be joined")
        rows = np.concatenate([self.rows, other.rows])
        return self._derive(rows, torch.cat([self.y, other.y]))

    def _derive(self, rows: np.ndarray, y: torch.Tensor, **changes: Any) -> StreamedSplit:
        fields = {
            "source": self.source,
            "normalise": self.normalise,
            "settings": self.settings,
            "skipped": self.skipped,
            "target_device": self.target_device,
            **changes,
        }
        return StreamedSplit(rows=rows, y=y.cpu(), **fields)

    def batches(self, plan: list[torch.Tensor]) -> Iterator[Split]:
        """``Split`` batches on the device for the given positions (see :func:`iterate`)."""
        if self._loader is None:
            self._loader, self._plan = make_loader(self.source, self.settings)
        self._plan.batches = [self._source_rows(p.numpy()) for p in plan]
        non_blocking = self.settings.pin_memory
        for positions, (x, lengths, bad) in zip(plan, self._loader, strict=True):
            if bad:
                x, lengths = self._repair(positions.numpy(), x, lengths, bad)
            x = x.to(self.target_device, non_blocking=non_blocking)
            if self.normalise is not None:
                x = self.normalise(x)
            if lengths is not None:
                lengths = lengths.to(self.target_device, non_blocking=non_blocking)
            y = self.y[positions].to(self.target_device, non_blocking=non_blocking)
            yield Split(x, y, lengths)

    def _source_rows(self, positions: np.ndarray) -> np.ndarray:
        rows = self.rows[positions]
        if self._replaced:
            rows = np.array([self._replaced.get(int(r), int(r)) for r in rows], dtype=np.int64)
        return rows

    def _repair(
        self,
        positions: np.ndarray,
        x: torch.Tensor,
        lengths: torch.Tensor | None,
        bad: list[tuple[int, str]],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Swap each unreadable row for the next readable one with the same target."""
        x = x.clone()
        lengths = None if lengths is None else lengths.clone()
        for pos, reason in bad:
            row = int(self.rows[positions[pos]])
            self._record(row, reason)
            found = self._replacement(int(positions[pos]))
            if found is None:
                continue  # no readable row left with this target: zeros stay
            new_row, (bx, blengths, _) = found
            self._replaced[row] = new_row
            x[pos] = bx[0]
            if lengths is not None and blengths is not None:
                lengths[pos] = blengths[0]
        return x, lengths

    def _replacement(self, position: int) -> tuple[int, tuple] | None:
        n = len(self.rows)
        target = self.y[position]
        for step in range(1, n):
            other = (position + step) % n
            if not torch.equal(self.y[other], target):
                continue
            row = int(self.rows[other])
            read = self.source[np.array([row])]
            if not read[2]:
                return row, read
            self._record(row, read[2][0][1])
        return None

    def _record(self, row: int, reason: str) -> None:
        name = self.source.name(row)
        if not any(entry["path"] == name for entry in self.skipped):
            self.skipped.append({"path": name, "reason": reason, "found": "while streaming"})


def streamed_splits(
    source: Any,
    idx: Any,
    y: torch.Tensor,
    normalise: Normaliser | None,
    settings: LoaderSettings,
    skipped: list[dict[str, str]],
) -> list[StreamedSplit]:
    """Train, val and test of ``source`` (``idx``: SplitIndices of its rows)."""
    return [
        StreamedSplit(source, rows, y[torch.from_numpy(rows)], normalise, settings, skipped)
        for rows in (idx.train, idx.val, idx.test)
    ]
