"""LeNet-5 (LeCun et al., 1998) for 32x32 images, with the activation of your choice.

conv(6, 5x5) -> act -> pool -> conv(16, 5x5) -> act -> pool -> fc 120 -> fc 84 -> out:
the seeds' typical "Conv2D -> pooling -> dropout -> flatten -> dense -> dropout -> output".
Inputs of another size work too: the flattened width is measured, not hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve, widen
from dlrun.nn.blocks import dense, probe, require_choice, require_image_size


class LeNet5(ModelFamily):
    accepts = frozenset({DataKind.IMAGE})
    tiny: ClassVar = {"channels": [2, 3], "fc": [8, 8]}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """Two 5x5 convs and two 2x pools need 12 px (below 32 px the first conv pads)."""
        require_image_size(spec, 12, "lenet")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        channels: Sequence[int] = (6, 16),
        fc: Sequence[int] = (120, 84),
        pool: str = "max",
    ) -> None:
        super().__init__()
        require_choice("lenet", "pool", pool, ("max", "avg"))
        act = resolve(act)
        in_ch, height, _ = spec.input_shape
        pool_layer = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, widen(act, channels[0]), 5, padding=2 if height < 32 else 0),
            act(),
            pool_layer(2),
            nn.Conv2d(channels[0], widen(act, channels[1]), 5),
            act(),
            pool_layer(2),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        flat = probe(self.features, spec.input_shape)[0]
        self.head = nn.Sequential(
            dense(flat, fc[0], act, dropout),
            dense(fc[0], fc[1], act, dropout),
            nn.Linear(fc[1], spec.n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
