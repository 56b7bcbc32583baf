"""Image augmentation applied to whole batches on the training device.

Every transform the seeds' regularization notes call for — random crop with padding,
horizontal flip, small rotation and translation — is an affine map, so one
``affine_grid`` + ``grid_sample`` call does them all for the whole batch at once,
on the GPU when there is one. A random crop of an image zero-padded by ``p`` pixels is
exactly an integer shift in [-p, p] with zeros coming in, which is how it is drawn here.
Only training batches are augmented; validation and test never are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dlrun.config import AugmentSettings


class BatchAugment:
    """Random affine augmentation of (N, C, H, W) batches, seeded and checkpointable.

    ``settings`` is ``regularization.augmentation`` (its ``enabled`` is the caller's).
    """

    def __init__(self, settings: AugmentSettings, seed: int) -> None:
        self.settings = settings
        self.generator = torch.Generator().manual_seed(seed + 7919)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        n, _, height, width = x.shape
        gen = self.generator

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=gen) * (high - low) + low

        angle = uniform(-s.rotate_degrees, s.rotate_degrees) * (math.pi / 180)
        # Shifts in normalised coordinates, where the image spans [-1, 1] (2 units).
        shift_x = uniform(-s.translate, s.translate) * 2
        shift_y = uniform(-s.translate, s.translate) * 2
        if s.crop_padding:
            pad = s.crop_padding
            shift_x += torch.randint(-pad, pad + 1, (n,), generator=gen) * (2 / width)
            shift_y += torch.randint(-pad, pad + 1, (n,), generator=gen) * (2 / height)
        flip = torch.ones(n)
        if s.hflip:
            flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, shift_x], dim=1),
                torch.stack([sin * flip, cos, shift_y], dim=1),
            ],
            dim=1,
        ).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @property
    def active(self) -> bool:
        s = self.settings
        return bool(s.crop_padding or s.hflip or s.rotate_degrees or s.translate)
