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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.data.splits import cut_bundle, stratified_split
from dlrun.data.table import Encoded
from dlrun.errors import UserError

CLASSES = ("sine", "square", "triangle", "sawtooth")


def _generate(
    rng: np.random.Generator,
    n_samples: int,
    length_range: tuple[int, int],
    period_range: tuple[float, float],
    noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced labels, lengths and (N, max_length) values, drawn in a fixed order so a
    ``generator_seed`` always gives the same samples."""
    (min_length, max_length), (min_period, max_period) = length_range, period_range
    labels = np.arange(n_samples) % len(CLASSES)
    rng.shuffle(labels)
    lengths = rng.integers(min_length, max_length + 1, n_samples)
    cycles = (
        np.arange(max_length)[None, :] / rng.uniform(min_period, max_period, (n_samples, 1))
        + rng.uniform(0.0, 1.0, (n_samples, 1))
    ) % 1.0
    amplitude = rng.uniform(0.5, 1.5, (n_samples, 1))
    values = amplitude * _shape(cycles, labels) + noise * rng.standard_normal(cycles.shape)
    return labels, lengths, values


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
    labels, lengths, values = _generate(
        rng, n_samples, (min_length, max_length), (min_period, max_period), noise
    )
    real = np.arange(max_length)[None, :] < lengths[:, None]

    idx = stratified_split(labels, seed, val_fraction, test_fraction)
    train_steps = values[idx.train][real[idx.train]]
    state = {
        "type": "sequence",
        "max_length": max_length,
        "features": 1,
        "mean": float(train_steps.mean()),
        "std": float(train_steps.std()),
        "padding": "right, zeros",
    }
    scaled = _scale(state, values, real)
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
        {"padding": "right, zeros", "preprocess": state},
        torch.from_numpy(lengths.astype(np.int64)),
    )


def _scale(state: dict[str, Any], values: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Standardise the real steps with the training statistics; padding stays zero."""
    return np.where(real, (values - state["mean"]) / state["std"], 0.0)


def encode_waves(state: dict[str, Any], sequences: Sequence[np.ndarray]) -> Encoded:
    """Right-padded inputs (N, max_length, F) and lengths from sequences of raw values
    ((T,) or (T, F), any T up to the training ``max_length``)."""
    longest, features = state["max_length"], state["features"]
    x = np.zeros((len(sequences), longest, features), dtype=np.float64)
    real = np.zeros((len(sequences), longest, features), dtype=bool)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        steps = np.asarray(sequence, dtype=np.float64).reshape(len(sequence), -1)
        if steps.shape[1] != features or not 1 <= len(steps) <= longest:
            raise UserError(
                f"sequence {row + 1} has shape {steps.shape}; the model takes 1 to "
                f"{longest} steps of {features} value(s)"
            )
        if not np.isfinite(steps).all():
            raise UserError(f"sequence {row + 1} has a missing or infinite value")
        x[row, : len(steps)] = steps
        real[row, : len(steps)] = True
        lengths[row] = len(steps)
    return Encoded(_scale(state, x, real).astype(np.float32), lengths=lengths)


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
