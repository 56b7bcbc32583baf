"""Which waveform is this? A generated sequence-classification set of variable length.

Each sample is a noisy sine, square, triangle or sawtooth wave of random period,
phase, amplitude and length. Sequences are right-padded with zeros to the longest
length and their true lengths travel in ``Split.lengths``, so recurrent models can pack
them and convolutional ones can mask or simply read the zeros. The waveform shape, not
the scale or speed, decides the class, so a model must learn shape; the majority
baseline is about 25 %.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.data.splits import cut_bundle, stratified_split
from dlrun.errors import UserError

CLASSES = ("sine", "square", "triangle", "sawtooth")


def load_waveforms(
    seed: int,
    n_samples: int = 1600,
    min_length: int = 40,
    max_length: int = 100,
    min_period: float = 8.0,
    max_period: float = 25.0,
    noise: float = 0.3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    generator_seed: int = 0,
) -> DataBundle:
    """``n_samples`` waveforms, float32 (N, max_length, 1) with int64 lengths (N,).

    ``generator_seed`` fixes the samples themselves; the run's ``seed`` picks the
    stratified split. Values are standardised with statistics of the training split's
    real (unpadded) steps; padding stays exactly zero.
    """
    if not 1 <= min_length <= max_length:
        raise UserError(
            f"Need 1 <= data.min_length ({min_length}) <= data.max_length ({max_length})."
        )
    rng = np.random.default_rng(generator_seed)
    labels = np.arange(n_samples) % len(CLASSES)
    rng.shuffle(labels)
    lengths = rng.integers(min_length, max_length + 1, n_samples)
    cycles = (
        np.arange(max_length)[None, :] / rng.uniform(min_period, max_period, (n_samples, 1))
        + rng.uniform(0.0, 1.0, (n_samples, 1))
    ) % 1.0
    amplitude = rng.uniform(0.5, 1.5, (n_samples, 1))
    values = amplitude * _shape(cycles, labels) + noise * rng.standard_normal(cycles.shape)
    real = np.arange(max_length)[None, :] < lengths[:, None]

    idx = stratified_split(labels, seed, val_fraction, test_fraction)
    train_steps = values[idx.train][real[idx.train]]
    scaled = np.where(real, (values - train_steps.mean()) / train_steps.std(), 0.0)
    spec = DataSpec(
        name="waveforms",
        task=Task.MULTICLASS,
        kind=DataKind.SEQUENCE,
        input_shape=(max_length, 1),
        n_outputs=len(CLASSES),
        class_names=CLASSES,
    )
    x = torch.from_numpy(scaled.astype(np.float32)).unsqueeze(-1)
    return cut_bundle(
        spec,
        x,
        torch.from_numpy(labels.astype(np.int64)),
        idx,
        {"padding": "right, zeros"},
        torch.from_numpy(lengths.astype(np.int64)),
    )


def _shape(cycles: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's waveform at phases ``cycles`` in [0, 1), peak amplitude 1."""
    shapes = np.stack(
        [
            np.sin(2 * math.pi * cycles),
            np.where(cycles < 0.5, 1.0, -1.0),
            4 * np.abs(cycles - 0.5) - 1,
            2 * cycles - 1,
        ]
    )
    return shapes[labels, np.arange(len(labels))]
