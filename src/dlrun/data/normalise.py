"""Input standardisation fit on the training split, applied the same way everywhere.

One affine map per channel (images) or feature (tables, sequences):
``x -> (x / scale - mean) / std``, with ``scale`` 255 for 8-bit pixels and 1 otherwise.
It runs as two float32 operations (multiply, then add) on whatever device the batch is
on: once over the whole array for in-memory data, per batch on the training device for
streamed data (the pipeline ships compact raw values, uint8 pixels, and the device
converts them). Both paths call the same :meth:`Normaliser.__call__`, so a streamed run
sees bit for bit the inputs an in-memory run sees.

The statistics are saved with the run (``meta["preprocess"]``, written to
``preprocess.json``) so that predicting later uses the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# Statistics are exact below this many training samples and estimated from a seeded
# sample of this many above it (a mean to ~1% from 5,000 images), so a streamed run of
# a huge folder does not decode its whole training split before the first batch.
STATS_SAMPLES = 5000
CHUNK_ROWS = 4096  # rows per step of a pass over an array (bounded memory)


@dataclass(frozen=True)
class Normaliser:
    """``(x / scale - mean) / std`` along ``axis`` (1: channels of N,C,H,W; -1: features)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    axis: int = -1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A new float32 tensor; ``x`` (any real dtype) is left untouched."""
        import torch

        shape = [1] * x.dim()
        shape[self.axis] = len(self.mean)
        std = torch.tensor(self.std, dtype=torch.float64)
        mul = (1.0 / (self.scale * std)).to(torch.float32).reshape(shape).to(x.device)
        add = (-torch.tensor(self.mean, dtype=torch.float64) / std).to(torch.float32)
        out = x.to(torch.float32, copy=True)
        return out.mul_(mul).add_(add.reshape(shape).to(x.device))

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> Normaliser:
        """The normaliser whose :meth:`to_json` is ``state`` (a run's saved preprocessing)."""
        mean, std = tuple(map(float, state["mean"])), tuple(map(float, state["std"]))
        return cls(mean, std, float(state.get("scale", 1.0)), int(state.get("axis", -1)))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "axis": self.axis,
        }


def stats_rows(train: np.ndarray, seed: int, limit: int = STATS_SAMPLES) -> np.ndarray:
    """The training rows statistics are computed on: all of them, or a seeded sample."""
    if len(train) <= limit:
        return np.sort(train)
    return np.sort(np.random.default_rng(seed).choice(train, size=limit, replace=False))


def pixel_normaliser(images: np.ndarray) -> Normaliser:
    """Per-channel statistics of uint8 images (N, C, H, W) in [0, 1] units, exactly.

    Pixels take 256 values, so a histogram per channel gives exact moments without a
    float64 copy of the images.
    """
    import torch

    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        pixels = torch.from_numpy(np.ascontiguousarray(images[:, c]).reshape(-1))
        hist = torch.bincount(pixels, minlength=256).numpy().astype(np.float64)
        total = max(hist.sum(), 1.0)
        mean = float((hist * levels).sum() / total)
        std = float(np.sqrt((hist * (levels - mean) ** 2).sum() / total))
        means.append(mean)
        stds.append(std if std > 1e-12 else 1.0)
    return Normaliser(tuple(means), tuple(stds), 255.0, 1)


class Moments:
    """Running mean and variance along every axis but ``axis``, merged chunk by chunk.

    Chan et al.'s pairwise update, in float64: a pass over a memory-mapped array never
    holds more than one chunk, and the result matches numpy's ``mean``/``std`` of the
    whole array to rounding.
    """

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, chunk: np.ndarray) -> None:
        values = np.moveaxis(np.asarray(chunk, dtype=np.float64), self.axis, -1)
        values = values.reshape(-1, values.shape[-1])
        n = values.shape[0]
        if n == 0:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def normaliser(self, scale: float = 1.0) -> Normaliser:
        if self.mean is None or self.m2 is None:
            raise ValueError("no rows were added")
        std = np.sqrt(self.m2 / max(self.count, 1))
        std = np.where(std < 1e-12, 1.0, std)
        axis = 1 if self.axis == 1 else -1
        mean = self.mean / scale
        return Normaliser(tuple(map(float, mean)), tuple(map(float, std / scale)), scale, axis)
