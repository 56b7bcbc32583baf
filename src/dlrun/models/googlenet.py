"""GoogLeNet (Szegedy et al., 2014): a stack of inception modules.

An inception module runs four branches side by side on the same input, a 1x1 conv, a 3x3
conv and a 5x5 conv (each after a 1x1 "reduce" that keeps them cheap) and a 3x3 max pool
followed by a 1x1 projection, and concatenates them: the network picks per layer which
receptive field is useful (the seeds' "groups of convolution layers").

Kept from the paper: the branch widths of Table 1 (scaled by ``width``), max pools between
the 3x, 4x and 5x groups, global average pooling, dropout before the classifier. Changed:
BatchNorm after every conv (as in every later version; ``batch_norm: false`` removes it)
and no auxiliary classifiers (BatchNorm makes them unnecessary, and they would need a
second loss in the trainer). ``stages`` keeps the first 1, 2 or 3 module groups, so a CPU
run can use a short network. Inputs under 64 px get a 3x3 conv and one 2x pool as the
stem instead of the paper's 8x downsampling, which would leave 4x4 of a 32 px digit.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import conv_block, require_image_size

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of modules 3a .. 5b.
STAGES: tuple[tuple[tuple[int, int, int, int, int, int], ...], ...] = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)

LARGE_INPUT_PX = 64


class Inception(nn.Module):
    """Four parallel branches over one input, concatenated along channels."""

    def __init__(
        self, in_ch: int, widths: tuple[int, ...], act: ActFactory, batch_norm: bool
    ) -> None:
        super().__init__()
        n1, r3, n3, r5, n5, proj = widths

        def conv(cin: int, cout: int, k: int) -> nn.Sequential:
            return conv_block(cin, cout, k, act, batch_norm=batch_norm)

        self.branches = nn.ModuleList(
            [
                conv(in_ch, n1, 1),
                nn.Sequential(conv(in_ch, r3, 1), conv(r3, n3, 3)),
                nn.Sequential(conv(in_ch, r5, 1), conv(r5, n5, 5)),
                nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(in_ch, proj, 1)),
            ]
        )
        self.out_channels = n1 + n3 + n5 + proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class GoogLeNet(ModelFamily):
    accepts = frozenset({DataKind.IMAGE})
    tiny: ClassVar = {"width": 0.0625}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """The stem pool and two pools between module groups need 8 px for small images."""
        require_image_size(spec, 8, "googlenet")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        width: float = 1.0,
        stages: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= stages <= len(STAGES):
            raise UserError(f"model=googlenet takes stages 1 to {len(STAGES)}, got {stages}")
        act = resolve(act)

        def scale(n: int) -> int:
            return max(1, round(n * width))

        in_ch, height, width_px = spec.input_shape
        stem_ch = scale(192)
        if min(height, width_px) >= LARGE_INPUT_PX:  # the paper's 224 px stem, /8
            stem: list[nn.Module] = [
                conv_block(in_ch, scale(64), 7, act, stride=2, batch_norm=batch_norm),
                nn.MaxPool2d(3, 2, padding=1),
                conv_block(scale(64), stem_ch, 3, act, batch_norm=batch_norm),
                nn.MaxPool2d(3, 2, padding=1),
            ]
        else:  # one 3x3 conv and one 2x pool: module 3a sees 16x16 of a 32 px digit
            stem = [
                conv_block(in_ch, stem_ch, 3, act, batch_norm=batch_norm),
                nn.MaxPool2d(3, 2, padding=1),
            ]
        layers, channels = stem, stem_ch
        for index, group in enumerate(STAGES[:stages]):
            if index > 0:
                layers.append(nn.MaxPool2d(3, 2, padding=1))
            for widths in group:
                module = Inception(channels, tuple(scale(n) for n in widths), act, batch_norm)
                layers.append(module)
                channels = module.out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, spec.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
