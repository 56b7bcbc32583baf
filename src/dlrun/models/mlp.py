"""Multi-layer perceptron: flatten, then Linear -> [BatchNorm] -> act -> Dropout blocks."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import SoftmaxAsLogits, dense, valid_steps
from dlrun.tasks import Targets, info


class MLP(ModelFamily):
    """Takes any fixed-size input (images and sequences are flattened).

    Padded sequences (``lengths``) have their padding zeroed first, so what a loader puts
    there cannot change the output; the padded positions still occupy input features.
    ``softmax_outputs`` (multilabel data only) ends the net with a softmax over the labels
    instead of the task's sigmoid per label (:class:`~dlrun.nn.blocks.SoftmaxAsLogits`):
    the wrong output layer the softmax-vs-sigmoid lesson trains on purpose.
    """

    accepts = frozenset({DataKind.TABULAR, DataKind.IMAGE, DataKind.SEQUENCE})
    tiny: ClassVar = {"hidden": [8, 8]}

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        hidden: Sequence[int] = (128, 64),
        batch_norm: bool = False,
        softmax_outputs: bool = False,
    ) -> None:
        super().__init__()
        if softmax_outputs and info(spec.task).targets is not Targets.LABELS:
            raise UserError(
                f"model=mlp model.softmax_outputs=true is for multilabel data; {spec.name} "
                f"is a {spec.task} task, whose output activation is already its own"
            )
        act = resolve(act)
        layers: list[nn.Module] = [nn.Flatten()]
        width = prod(spec.input_shape)
        for size in hidden:
            layers.append(dense(width, size, act, dropout, batch_norm))
            width = size
        layers.append(nn.Linear(width, spec.n_outputs))
        if softmax_outputs:
            layers.append(SoftmaxAsLogits())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            x = x * valid_steps(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
        return self.net(x)
