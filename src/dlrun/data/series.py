"""Time series as forecasting windows: the last ``window`` steps predict the next ``horizon``.

The series is split in time before any window is cut: train is the earliest stretch,
then val, then test, and a window never straddles two stretches, so no target the model
is scored on was ever inside a training window. Every channel is standardised with the
training stretch's statistics; the target channel's scaler goes to
``meta["target_scaler"]`` (one entry per horizon step) so errors are reported in the
series' own units, and ``meta["target_channel"]`` tells a persistence baseline which
input channel to repeat. The run's ``seed`` does not change a temporal split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import torch

from dlrun.data.csvfile import read_csv, to_numbers
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.data.splits import Standardizer, temporal_bounds
from dlrun.data.table import Encoded
from dlrun.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Windowing:
    """How every loader here cuts its series: ``window`` steps in, ``horizon`` steps to
    forecast, a training window every ``stride`` steps, and the last ``val_fraction`` and
    ``test_fraction`` of the series held out (one value, so three loaders pass it alike)."""

    window: int
    horizon: int
    stride: int
    val_fraction: float
    test_fraction: float


def load_sine(
    seed: int,
    n_points: int = 2000,
    periods: Sequence[float] = (24.0, 70.0),
    noise: float = 0.1,
    window: int = 50,
    horizon: int = 1,
    stride: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    generator_seed: int = 0,
) -> DataBundle:
    """A sum of sines with the given ``periods`` (in steps, random phases) plus noise.

    ``generator_seed`` fixes the series itself, so runs with different seeds compare
    models on the same problem.
    """
    rng = np.random.default_rng(generator_seed)
    steps = np.arange(n_points)
    phases = rng.uniform(0.0, 2 * math.pi, len(periods))
    waves = [np.sin(2 * math.pi * steps / p + phi) for p, phi in zip(periods, phases, strict=True)]
    signal = np.sum(waves, axis=0)
    values = signal + noise * rng.standard_normal(n_points)
    cut = Windowing(window, horizon, stride, val_fraction, test_fraction)
    return forecast_bundle("sine", values[:, None], cut, columns=("value",))


def load_sunspots(
    seed: int,
    window: int = 20,
    horizon: int = 1,
    stride: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataBundle:
    """Yearly mean sunspot numbers 1700-2008 (309 values), bundled with statsmodels."""
    try:
        from statsmodels.datasets import sunspots
    except ImportError as err:
        raise UserError(
            "data=sunspots needs the optional statsmodels package: pip install 'dlrun[series]'."
        ) from err
    frame = sunspots.load_pandas().data
    values = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)[:, None]
    years = [int(year) for year in frame["YEAR"]]
    cut = Windowing(window, horizon, stride, val_fraction, test_fraction)
    return forecast_bundle("sunspots", values, cut, years, columns=("SUNACTIVITY",))


def load_csv_series(
    seed: int,
    path: str | None = None,
    column: str | None = None,
    date_column: str | None = None,
    features: Sequence[str] = (),
    delimiter: str = ",",
    window: int = 30,
    horizon: int = 1,
    stride: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataBundle:
    """Forecast numeric ``column`` of a CSV, optionally helped by other ``features`` columns.

    Rows are taken in file order, or sorted by ``date_column`` (ISO 8601 dates or plain
    numbers such as years) when given. Missing values are filled with the last value
    seen (never a later one, which would leak the future); rows before every channel
    has a first value are dropped.
    """
    table = read_csv(path, delimiter)
    if column is None:
        raise UserError(
            f"Set data.column to the series to forecast; {table.path} has: "
            f"{', '.join(table.header)}."
        )
    names = [column, *features]
    values = np.column_stack(
        [table.numeric(name, "column" if i == 0 else "features") for i, name in enumerate(names)]
    )
    times: list | None = None
    if date_column is not None:
        times = _parse_times(table.column(date_column, "date_column"), date_column)
        try:
            order = sorted(range(len(times)), key=times.__getitem__)
        except TypeError as err:  # e.g. dates with and without time zones
            raise UserError(f"The dates in {date_column!r} cannot be ordered ({err}).") from err
        values, times = values[order], [times[i] for i in order]
    start, values, filled = _forward_fill(values, names)
    if times is not None:
        times = times[start:]
    cut = Windowing(window, horizon, stride, val_fraction, test_fraction)
    bundle = forecast_bundle(table.path.stem, values, cut, times, columns=names)
    bundle.meta.update(path=str(table.path), channels=names, filled_values=filled)
    return bundle


def forecast_bundle(
    name: str,
    values: np.ndarray,
    cut: Windowing,
    times: Sequence | None = None,
    columns: Sequence[str] = (),
    target_channel: int = 0,
) -> DataBundle:
    """Split ``values`` (T, F) in time, standardise on train, cut windows in each part.

    ``cut.stride`` thins the training windows only; val and test keep every window so
    each of their steps is scored. ``columns`` names the channels (for new series by
    name); ``target_channel`` is the one forecast.
    """
    window, horizon, stride = cut.window, cut.horizon, cut.stride
    if window < 1 or horizon < 1 or stride < 1:
        raise UserError(
            f"data.window ({window}), data.horizon ({horizon}) and data.stride "
            f"({stride}) must be at least 1."
        )
    a, b = temporal_bounds(len(values), cut.val_fraction, cut.test_fraction)
    bounds = dict(zip(SPLITS, ((0, a), (a, b), (b, len(values))), strict=True))
    scaler = Standardizer.fit(values[:a])
    scaled = scaler.transform(values)
    parts = []
    for split, (start, stop) in bounds.items():
        step = stride if split == "train" else 1
        x, y, _ = windows(scaled, start, stop, window, horizon, step, target_channel)
        if len(x) == 0:
            raise UserError(
                f"The {split} part of {name} has {stop - start} steps, fewer than "
                f"window + horizon = {window + horizon}; lower data.window or "
                "use a longer series."
            )
        parts.append(Split(torch.from_numpy(x), torch.from_numpy(y)))
    channel = target_channel
    mean, std = float(scaler.mean[channel]), float(scaler.std[channel])
    meta: dict = {
        "target_scaler": {"mean": [mean] * horizon, "std": [std] * horizon},
        "target_channel": target_channel,
        "window": window,
        "horizon": horizon,
        "split_bounds": {split: list(bound) for split, bound in bounds.items()},
        "preprocess": series_state(columns, values.shape[1], scaler, window, horizon, channel),
    }
    if times is not None:
        meta["split_times"] = {
            split: [str(times[start]), str(times[stop - 1])]
            for split, (start, stop) in bounds.items()
        }
    shape = (window, values.shape[1])
    spec = DataSpec(name, Task.FORECAST, DataKind.SEQUENCE, input_shape=shape, n_outputs=horizon)
    return DataBundle(spec, *parts, meta=meta)


def series_state(
    columns: Sequence[str],
    n_channels: int,
    scaler: Standardizer,
    window: int,
    horizon: int,
    target_channel: int,
) -> dict[str, Any]:
    """What a new series needs to become model inputs: its channels by name, the
    training statistics, the window and which channel is forecast."""
    return {
        "type": "series",
        "columns": list(columns) or [f"channel_{i}" for i in range(n_channels)],
        "mean": scaler.mean.tolist(),
        "std": scaler.std.tolist(),
        "window": window,
        "horizon": horizon,
        "target_channel": target_channel,
    }


def windows(
    values: np.ndarray,
    start: int,
    stop: int,
    window: int,
    horizon: int,
    stride: int = 1,
    target_channel: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows lying wholly inside ``values[start:stop]``.

    Returns inputs (N, window, F) float32, targets (N, horizon) float32 (the next
    ``horizon`` values of ``target_channel``) and the time index of each first target.
    """
    first = np.arange(start + window, stop - horizon + 1, stride)
    x = values[first[:, None] + np.arange(-window, 0)]
    y = values[first[:, None] + np.arange(horizon), target_channel]
    return x.astype(np.float32), y.astype(np.float32), first


def encode_series(state: dict[str, Any], values: np.ndarray) -> Encoded:
    """Every window of a new series (T, F) in its raw units, and the targets that follow.

    Row i forecasts the ``horizon`` steps after step ``window + i`` from the ``window``
    steps before it; the last row forecasts past the end of the series (the future), so
    only the rows whose next steps are in the series get targets. Gaps are filled with
    the last value seen, as in training.
    """
    window, horizon = state["window"], state["horizon"]
    start, values, filled = _forward_fill(values, state["columns"])
    notes = [f"{filled} missing value(s) filled with the last value seen"] if filled else []
    if start:
        notes.append(f"the first {start} step(s) were dropped: not every column has a value")
    if len(values) < window:
        raise UserError(f"the series has {len(values)} steps; the model reads windows of {window}")
    scaled = Standardizer(np.array(state["mean"]), np.array(state["std"])).transform(values)
    first = np.arange(window, len(values) + 1)
    x = scaled[first[:, None] + np.arange(-window, 0)]
    known = first[first + horizon <= len(values)]
    y = scaled[known[:, None] + np.arange(horizon), state["target_channel"]]
    return Encoded(x.astype(np.float32), notes, y=y.astype(np.float32))


def _parse_times(cells: list[str], column: str) -> list:
    numbers = to_numbers(cells)
    if numbers is not None and not np.isnan(numbers).any():
        return numbers.tolist()
    times = []
    for row, cell in enumerate(cells):
        try:
            times.append(datetime.fromisoformat(cell.strip()))
        except ValueError:
            raise UserError(
                f"Column {column!r} (data.date_column) must hold ISO 8601 dates "
                f"such as 2024-01-31 or numbers, but data row {row + 1} has "
                f"{cell!r}."
            ) from None
    return times


def _forward_fill(values: np.ndarray, names: list[str]) -> tuple[int, np.ndarray, int]:
    """(first kept row, values with gaps filled by the last seen value, cells filled)."""
    valid = ~np.isnan(values)
    empty = [name for name, ok in zip(names, valid.any(axis=0), strict=True) if not ok]
    if empty:
        raise UserError(f"Column(s) {', '.join(empty)} have no values.")
    start = int(valid.argmax(axis=0).max())
    values, valid = values[start:].copy(), valid[start:]
    rows = np.arange(len(values))[:, None]
    last_seen = np.maximum.accumulate(np.where(valid, rows, 0), axis=0)
    filled = int((~valid).sum())
    return start, np.take_along_axis(values, last_seen, axis=0), filled
