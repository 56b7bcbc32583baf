"""Pictures of a run's health and of the diagnostic tools, drawn like the run's others
(matplotlib's object API on the Agg canvas, fixed margins: :mod:`dlrun.evaluation.plots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.evaluation.plots import LEGEND_UP_TO, new_figure


def gradient_norms(path: Path, recorded: dict[str, Any]) -> None:
    """Left: each layer's gradient norm over training (log scale). Right: the median
    norm per layer from input to output, the picture of vanishing gradients."""
    layers: list[str] = recorded["layers"]
    norms = np.asarray(recorded["norms"], dtype=float)
    steps = np.asarray(recorded["steps"], dtype=float)
    floor = _floor(norms)
    fig = new_figure(12, 4.8, left=0.9, bottom=1.1, wspace=0.3)
    over_time, per_layer = fig.subplots(1, 2)
    colours = _colours(len(layers))
    named = set(np.linspace(0, len(layers) - 1, min(len(layers), LEGEND_UP_TO)).astype(int))
    for j, name in enumerate(layers):
        label = name if j in named else None
        over_time.plot(steps, np.maximum(norms[:, j], floor), color=colours[j],
                       lw=1.4 if label else 0.6, label=label)  # fmt: skip
    over_time.set(yscale="log", xlabel="optimizer step", ylabel="gradient norm",
                  title="Per-layer gradient norm (input layers dark, output light)")  # fmt: skip
    over_time.legend(fontsize=7, ncol=2)
    median = np.maximum(np.median(norms, axis=0), floor)
    per_layer.plot(range(len(layers)), median, color="grey", lw=1, zorder=1)
    per_layer.scatter(range(len(layers)), median, c=colours, s=40, zorder=2)
    per_layer.set(yscale="log", xlabel="layer (input → output)", ylabel="median norm",
                  title="Median gradient norm per layer")  # fmt: skip
    _layer_ticks(per_layer, layers)
    fig.savefig(path)


def _floor(values: np.ndarray) -> float:
    """Zeros drawn at a visible floor on a log axis (a step activation's exact zeros)."""
    positive = values[values > 0]
    return float(positive.min() / 10) if positive.size else 1e-12


def _colours(n: int) -> Sequence[Any]:
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _layer_ticks(ax: Any, layers: Sequence[str]) -> None:
    step = max(1, len(layers) // 12)
    ticks = list(range(0, len(layers), step))
    ax.set_xticks(ticks, [layers[i] for i in ticks], rotation=45, ha="right", fontsize=7)


TILE_PIXELS = 64  # small images are enlarged (pixels repeated) to at least this size


def image_grid(
    path: Path, images: Any, titles: Sequence[str], suptitle: str, cmap: str = "gray"
) -> None:
    """Images ``(N, C, H, W)`` in a grid, each scaled to its own range, with a title.

    The tiles are pasted into one array and drawn as one image with one set of axes:
    sixteen axes, each with its own title to lay out, took three times as long to draw.
    """
    from matplotlib import colormaps

    tiles = [_rgb(displayable(image), colormaps[cmap]) for image in images]
    scale = -(-TILE_PIXELS // max(max(t.shape[:2]) for t in tiles))  # room for the gaps
    tiles = [t.repeat(scale, axis=0).repeat(scale, axis=1) for t in tiles]
    n = len(tiles)
    cols = min(n, 4)
    rows = -(-n // cols)
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    gap_x, gap_y = round(0.08 * w), round(0.18 * h)  # each title sits in the gap above
    canvas = np.ones((rows * (h + gap_y), cols * w + (cols - 1) * gap_x, 3))
    fig = new_figure(3.0 * cols, 2.8 * rows + 0.4, left=0.1, right=0.1, bottom=0.1, top=0.6)
    ax = fig.subplots()
    for i, (tile, title) in enumerate(zip(tiles, titles, strict=False)):
        row, col = divmod(i, cols)
        top, left = row * (h + gap_y) + gap_y, col * (w + gap_x)
        canvas[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
        ax.annotate(title, (left + w / 2, top), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(suptitle, fontsize=10)
    fig.savefig(path)


def _rgb(image: np.ndarray, colour: Any) -> np.ndarray:
    """An ``(H, W)`` image in [0, 1] through the colour map, as ``(H, W, 3)``."""
    return colour(image)[..., :3] if image.ndim == 2 else image


def displayable(image: Any) -> np.ndarray:
    """A ``(C, H, W)`` tensor as an ``(H, W)`` or ``(H, W, 3)`` array in [0, 1]."""
    array = np.asarray(image, dtype=float)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1)
    low, high = np.nanmin(array), np.nanmax(array)
    return (array - low) / (high - low) if high > low else np.zeros_like(array)
