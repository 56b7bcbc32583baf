"""1-D CNN over time: the seeds' "Conv1D ... doesn't have to be image data".

Stacked Conv1d -> [BatchNorm] -> act layers slide over the time axis and find local
patterns wherever they occur (a motif in a series, a phrase in a sentence); a global max
or mean pool over time then gives one vector per sequence, and a linear layer the outputs
(classes, regression targets, or the ``n_outputs`` next values of a forecast). Token ids
are embedded first. No pooling between layers, so every step keeps its position and
padded batches can be masked exactly.

Padded batches (``lengths``): padded steps are zeroed before every conv, which is what
the convs' own zero padding does at a sequence's end, and left out of the final pool, so
a padded sequence gives the same output as the same sequence alone (with
``batch_norm: true`` in training mode the batch statistics still count padded steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import (
    Pool,
    SequenceInput,
    conv_block,
    pool_steps,
    require_choice,
    require_vocab,
    valid_steps,
)


class CNN1D(ModelFamily):
    accepts = frozenset({DataKind.SEQUENCE, DataKind.TOKENS})
    tiny: ClassVar = {"channels": [4, 4], "kernel_size": 3, "embed_dim": 4}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        require_vocab(spec, "cnn1d")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        channels: Sequence[int] = (64, 64),
        kernel_size: int = 5,
        embed_dim: int = 32,
        pool: Pool = "max",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise UserError(
                f"model=cnn1d needs an odd kernel_size (got {kernel_size}) "
                "so every layer keeps the sequence length"
            )
        require_choice("cnn1d", "pool", pool, ("max", "mean", "last"))
        act = resolve(act)
        self.inputs = SequenceInput(spec, embed_dim)
        self.pool: Pool = pool
        width = self.inputs.features
        self.convs = nn.ModuleList()
        for size in channels:
            self.convs.append(
                conv_block(width, size, kernel_size, act, batch_norm=batch_norm, dims=1)
            )
            width = size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, spec.n_outputs))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inputs(x).transpose(1, 2)  # (N, F, T): channels first for Conv1d
        mask = None if lengths is None else valid_steps(lengths.to(h.device), h.shape[2])
        for conv in self.convs:
            if mask is not None:
                h = h * mask.unsqueeze(1)
            h = conv(h)
        return self.head(pool_steps(h.transpose(1, 2), lengths, self.pool))
