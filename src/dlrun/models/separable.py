"""Depthwise-separable CNN in the style of MobileNet v1 (Howard et al., 2017).

A standard KxK conv mixes space and channels at once (K*K*Cin*Cout weights). A separable
conv splits that into a depthwise KxK conv (one filter per channel: where) and a 1x1
pointwise conv (mixing channels: what), for K*K*Cin + Cin*Cout weights, 8-9x fewer for
3x3. The layout is MobileNet's 13 blocks; ``width`` is its width multiplier (alpha).
Inputs under 64 px get a stride-1 stem, so a 32 px digit is downsampled 16x, not 32x.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import conv_block, require_image_size

# (output channels, stride) of MobileNet v1's separable blocks, Table 1.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
LARGE_INPUT_PX = 64


def separable(cin: int, cout: int, stride: int, act: ActFactory, batch_norm: bool) -> nn.Sequential:
    """Depthwise 3x3 -> BN -> act, then pointwise 1x1 -> BN -> act."""
    return nn.Sequential(
        conv_block(cin, cin, 3, act, stride=stride, groups=cin, batch_norm=batch_norm),
        conv_block(cin, cout, 1, act, batch_norm=batch_norm),
    )


class SeparableCNN(ModelFamily):
    accepts = frozenset({DataKind.IMAGE})
    tiny: ClassVar = {"width": 0.0625}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """Four stride-2 blocks on the small-image path need 8 px."""
        require_image_size(spec, 8, "separable")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        width: float = 1.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        act = resolve(act)

        def scale(n: int) -> int:
            return max(1, round(n * width))

        in_ch, height, width_px = spec.input_shape
        stem_stride = 2 if min(height, width_px) >= LARGE_INPUT_PX else 1
        channels = scale(32)
        layers = [conv_block(in_ch, channels, 3, act, stride=stem_stride, batch_norm=batch_norm)]
        for cout, stride in BLOCKS:
            layers.append(separable(channels, scale(cout), stride, act, batch_norm))
            channels = scale(cout)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, spec.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
