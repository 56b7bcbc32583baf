"""ResNet (He et al., 2015): deep CNNs that stay trainable through skip connections.

Each block learns a residual ``F(x)`` and outputs ``act(F(x) + x)``, so the identity is
easy to represent and gradients reach early layers unattenuated (the seeds' answer to
vanishing gradients). ``depth`` picks the paper's layouts: 18 and 34 use basic blocks
(two 3x3 convs), 50 uses bottlenecks (1x1 reduce, 3x3, 1x1 expand by 4).

For CPU-sized runs: ``width`` is the base channel count (64 in the paper; stages use
width, 2x, 4x, 8x), and inputs under 64 px get the CIFAR stem (3x3 stride 1, no max pool)
instead of 7x7 stride 2 + max pool, which would throw away most of a 32 px digit.
``batch_norm: false`` builds the same network without normalisation (convs get biases).
``skip: false`` builds the paper's *plain* network of the same depth: every block is
``act(F(x))``, no shortcut. Its parameters are the residual net's minus the 1x1
projection shortcuts of the three downsampling blocks (which a plain net has no use
for), as in He et al.'s plain-vs-residual comparison; the identity shortcuts carry no
parameters. It exists to show what the skips buy (``lessons/skip_connections``).

Maxout after the addition: the block's last conv emits ``k`` pieces per channel and the
skip is repeated to each piece, so ``max_j(F_j(x) + x) = x + max_j F_j(x)``: the identity
path is kept exactly, and the conv really has ``k`` times the parameters.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, pieces, resolve, widen
from dlrun.nn.blocks import conv_block, require_image_size

LAYOUTS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
LARGE_INPUT_PX = 64


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _conv_norm(cin: int, cout: int, k: int, stride: int, batch_norm: bool) -> nn.Sequential:
    """Conv -> BatchNorm without an activation: the last layer before the addition."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=not batch_norm)
    return nn.Sequential(conv, _norm(cout, batch_norm))


class Residual(nn.Module):
    """``act(body(x) + shortcut(x))``; one class for basic and bottleneck blocks.
    ``skip=False``: ``act(body(x))``, the plain block of the same depth."""

    def __init__(
        self,
        cin: int,
        mid: int,
        cout: int,
        stride: int,
        bottleneck: bool,
        act: ActFactory,
        batch_norm: bool,
        skip: bool = True,
    ) -> None:
        super().__init__()
        self.pieces = pieces(act)
        last_out = widen(act, cout)
        if bottleneck:
            self.body = nn.Sequential(
                conv_block(cin, mid, 1, act, batch_norm=batch_norm),
                conv_block(mid, mid, 3, act, stride=stride, batch_norm=batch_norm),
                _conv_norm(mid, last_out, 1, 1, batch_norm),
            )
        else:
            self.body = nn.Sequential(
                conv_block(cin, mid, 3, act, stride=stride, batch_norm=batch_norm),
                _conv_norm(mid, last_out, 3, 1, batch_norm),
            )
        self.shortcut: nn.Module | None = None  # a plain block: no path around the body
        if skip:
            identity = stride == 1 and cin == cout
            self.shortcut = (
                nn.Identity() if identity else _conv_norm(cin, cout, 1, stride, batch_norm)
            )
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.act(self.body(x))
        skip = self.shortcut(x)
        if self.pieces > 1:  # maxout: every piece gets the skip (see the module docstring)
            skip = skip.repeat_interleave(self.pieces, dim=1)
        return self.act(self.body(x) + skip)


class ResNet(ModelFamily):
    accepts = frozenset({DataKind.IMAGE})
    tiny: ClassVar = {"width": 2}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """Three stride-2 stages need 8 px to leave a map worth pooling."""
        require_image_size(spec, 8, "resnet")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        depth: int = 18,
        width: int = 64,
        batch_norm: bool = True,
        skip: bool = True,
    ) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise UserError(f"model=resnet takes depth 18, 34 or 50, got {depth}")
        act = resolve(act)
        kind, counts = LAYOUTS[depth]
        bottleneck = kind == "bottleneck"
        expansion = 4 if bottleneck else 1
        in_ch, height, width_px = spec.input_shape
        if min(height, width_px) >= LARGE_INPUT_PX:
            stem: list[nn.Module] = [
                conv_block(in_ch, width, 7, act, stride=2, batch_norm=batch_norm),
                nn.MaxPool2d(3, 2, padding=1),
            ]
        else:
            stem = [conv_block(in_ch, width, 3, act, batch_norm=batch_norm)]
        layers, channels = stem, width
        for stage, count in enumerate(counts):
            mid = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                cout = mid * expansion
                block = Residual(channels, mid, cout, stride, bottleneck, act, batch_norm, skip)
                layers.append(block)
                channels = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, spec.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
