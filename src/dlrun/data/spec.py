"""What a dataset tells a model, and the tensors it hands the trainer.

Models only ever see a :class:`DataSpec` (numbers and names), never the dataset itself,
so any model can be paired with any data whose ``kind`` it accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class Task(StrEnum):
    """The learning problem; decides loss, output activation, metrics and baseline."""

    MULTICLASS = "multiclass"  # y: int64 (N,), model emits (N, C) logits
    BINARY = "binary"  # y: float32 (N,) of 0/1, model emits (N, 1) logits
    MULTILABEL = "multilabel"  # y: float32 (N, L) of 0/1, model emits (N, L) logits
    REGRESSION = "regression"  # y: float32 (N, n_outputs), model emits (N, n_outputs)
    FORECAST = "forecast"  # like regression, y = next value(s) of a series window
    LANGUAGE_MODEL = "language_model"  # x, y: int64 (N, T), model emits (N, T, V) logits


class DataKind(StrEnum):
    """The shape family of one input sample; models declare which kinds they accept."""

    TABULAR = "tabular"  # float32 (F,)
    IMAGE = "image"  # float32 (C, H, W)
    SEQUENCE = "sequence"  # float32 (T, F)
    TOKENS = "tokens"  # int64 (T,) token ids in [0, vocab_size)


@dataclass(frozen=True)
class DataSpec:
    """Everything a model or evaluator may know about the data."""

    name: str
    task: Task
    kind: DataKind
    input_shape: tuple[int, ...]
    n_outputs: int  # classes (multiclass), 1 (binary), labels, regression targets, vocab (LM)
    class_names: tuple[str, ...] = ()
    vocab_size: int = 0  # TOKENS only
    vocab: tuple[str, ...] = ()  # TOKENS only: id -> token text (characters for char-level)


@dataclass
class Split:
    """One split as whole tensors; small data lives on the device and is sliced."""

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None  # valid lengths of padded sequences

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the batches of this split live (the trainer allocates its sums there)."""
        return self.x.device

    def to(self, device: torch.device | str) -> Split:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Split(self.x.to(device), self.y.to(device), lengths)

    def subset(self, index: torch.Tensor) -> Split:
        lengths = None if self.lengths is None else self.lengths[index]
        return Split(self.x[index], self.y[index], lengths)

    def head(self, n: int) -> Split:
        """The first ``n`` samples on the CPU (what a baseline scores against)."""
        lengths = None if self.lengths is None else self.lengths[:n].cpu()
        return Split(self.x[:n].cpu(), self.y[:n].cpu(), lengths)

    def concat(self, other: Split) -> Split:
        """This split followed by ``other`` (cross-validation pools train and val)."""
        import torch

        lengths = None
        if self.lengths is not None and other.lengths is not None:
            lengths = torch.cat([self.lengths, other.lengths])
        return Split(torch.cat([self.x, other.x]), torch.cat([self.y, other.y]), lengths)


@dataclass
class DataBundle:
    """The three splits plus the spec; ``meta`` carries loader facts for reports.

    A split is either a :class:`Split` of whole tensors or a
    :class:`dlrun.data.stream.StreamedSplit` read batch by batch through a DataLoader;
    both have ``y`` in memory, ``len``, ``device``, ``to``, ``subset``, ``head`` and
    ``concat``, and :func:`dlrun.data.batches.iterate` yields ``Split`` batches from
    either, so the trainer and the evaluator never tell them apart.
    """

    spec: DataSpec
    train: Split
    val: Split
    test: Split
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(
            self.spec, self.train.to(device), self.val.to(device), self.test.to(device), self.meta
        )
