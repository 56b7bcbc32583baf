"""Linear model: one affine map from the flattened input to the outputs.

With the task's output activation and loss (dlrun.tasks) this is logistic regression
(binary, multilabel), multinomial logistic regression (multiclass) or least-squares
linear regression (regression, forecasts): the baseline a deep model should beat by more
than chance. There is no hidden layer, so the activation has nowhere to go: the family
takes ``act``, as every family does, and leaves it unused. ``dropout`` drops input
features while training.
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory
from dlrun.nn.blocks import valid_steps


class LinearModel(ModelFamily):
    """``outputs = W x + b`` on the flattened input (images and sequences included)."""

    accepts = frozenset({DataKind.TABULAR, DataKind.IMAGE, DataKind.SEQUENCE})

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(prod(spec.input_shape), spec.n_outputs, bias=bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:  # zero the padding: it must not change the output
            x = x * valid_steps(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
        return self.linear(self.dropout(x.flatten(1)))
