"""AlexNet (Krizhevsky et al., 2012): five convolutions, then three dense layers with dropout.

The seeds' "deeper than LeNet" step: conv-pool, conv-pool, three stacked convs, pool, and
a dropout-regularised classifier. The original 224 px stem (11x11 stride 4, 3x3/2 pools)
would shrink a 32 px digit to nothing, so inputs under 64 px get the small-image stem used
for CIFAR (3x3 stride 1, 2x2 pools). Channel and dense widths are parameters: the default
config is sized for a CPU, the paper's are (64, 192, 384, 256, 256) and (4096, 4096).
BatchNorm is off by default (AlexNet predates it; it used local response normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import conv_block, dense, probe, require_image_size

LARGE_INPUT_PX = 64  # from this size on, the original strided stem is used


class AlexNet(ModelFamily):
    accepts = frozenset({DataKind.IMAGE})
    tiny: ClassVar = {"channels": [2, 3, 3, 3, 2], "fc": [8, 8]}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """Three 2x pools on the small-image path need 8 px."""
        require_image_size(spec, 8, "alexnet")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        channels: Sequence[int] = (64, 192, 384, 256, 256),
        fc: Sequence[int] = (4096, 4096),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        act = resolve(act)
        in_ch, height, width = spec.input_shape
        large = min(height, width) >= LARGE_INPUT_PX
        c1, c2, c3, c4, c5 = channels

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2) if large else nn.MaxPool2d(2)

        self.features = nn.Sequential(
            conv_block(in_ch, c1, 11, act, stride=4, batch_norm=batch_norm)
            if large
            else conv_block(in_ch, c1, 3, act, batch_norm=batch_norm),
            pool(),
            conv_block(c1, c2, 5, act, batch_norm=batch_norm),
            pool(),
            conv_block(c2, c3, 3, act, batch_norm=batch_norm),
            conv_block(c3, c4, 3, act, batch_norm=batch_norm),
            conv_block(c4, c5, 3, act, batch_norm=batch_norm),
            pool(),
            nn.Flatten(),
        )
        flat = probe(self.features, spec.input_shape)[0]
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            dense(flat, fc[0], act, dropout),
            dense(fc[0], fc[1], act),
            nn.Linear(fc[1], spec.n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
