"""LeNet-5 (LeCun et al., 1998) for 32x32 images, with the activation of your choice.

conv(6, 5x5) -> act -> pool -> conv(16, 5x5) -> act -> pool -> fc 120 -> fc 84 -> out:
the seeds' typical "Conv2D -> pooling -> dropout -> flatten -> dense -> dropout -> output".
Inputs of another size work too: the flattened width is measured, not hard-coded.
"""

from __future__ import annotations

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.nn.activations import ActFactory, resolve


class LeNet5(nn.Module):
    accepts = frozenset({DataKind.IMAGE})

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        """Two 5x5 convs and two 2x pools need at least 10 px (28 px MNIST is padded)."""
        if min(spec.input_shape[1:]) < 10:
            raise UserError(
                f"model=lenet needs images of at least 10x10 px; {spec.name} has "
                f"{spec.input_shape[1]}x{spec.input_shape[2]} (data=digits resizes to 32)"
            )

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        channels: tuple[int, int] = (6, 16),
        fc: tuple[int, int] = (120, 84),
        pool: str = "max",
    ) -> None:
        super().__init__()
        act = resolve(act)
        in_ch, height, width = spec.input_shape
        pool_layer = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, channels[0], 5, padding=2 if height < 32 else 0),
            act(),
            pool_layer(2),
            nn.Conv2d(channels[0], channels[1], 5),
            act(),
            pool_layer(2),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_ch, height, width)).shape[1]
        self.head = nn.Sequential(
            nn.Linear(flat, fc[0]),
            act(),
            nn.Dropout(dropout),
            nn.Linear(fc[0], fc[1]),
            act(),
            nn.Dropout(dropout),
            nn.Linear(fc[1], spec.n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
