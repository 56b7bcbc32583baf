"""The pictures of a run, drawn with matplotlib's object API onto the Agg canvas.

``matplotlib.figure.Figure`` is used instead of ``pyplot``: no global figure registry to
leak memory across runs, no GUI backend to pick, and safe in worker processes. Each
function takes plain arrays (metrics are computed elsewhere) and writes one PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.monitor import lower_is_better

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlrun.evaluation.metrics import Curve

DPI = 100
ANNOTATE_UP_TO = 20  # classes; beyond that the numbers in the cells are unreadable
LEGEND_UP_TO = 12  # curves named in a legend; more are drawn thin and unnamed
SERIES_POINTS = 300  # samples drawn in a one-step forecast plot
WINDOWS = 4  # windows drawn in a multi-step forecast plot


def confusion_matrix(path: Path, matrix: Sequence[Sequence[int]], names: Sequence[str]) -> None:
    """Two annotated heat maps: counts, and rows normalised to 1 (recall on the diagonal).

    Cells off the diagonal that are exactly zero stay blank (the confusions stand out,
    and a hundred "0"s were most of the picture's drawing time); the diagonal always
    shows its number, zero included.
    """
    counts = np.asarray(matrix, dtype=float)
    support = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(support > 0, counts / support, np.nan)
    k = len(names)
    label = 0.08 * max(len(str(name)) for name in names)  # inches the tick labels take
    side = min(max(3.5, 0.4 * k + 1), 12)  # inches of one square heat map
    slot = 1.2 * side  # heat map + its colour bar
    gap = 0.8 + label  # between the colour bar and the next panel's tick labels
    fig = new_figure(
        0.7 + label + 2 * slot + gap + 0.6,
        side + label + 1.15,
        left=0.7 + label,
        bottom=0.7 + label,
        right=0.6,
        wspace=gap / slot,
    )
    panels = fig.subplots(1, 2)
    rotate = k > 15 or label > 0.3
    for ax, values, title, fmt in (
        (panels[0], counts, "Counts", "{:.0f}"),
        (panels[1], normalised, "Row-normalised (share of each true class)", "{:.2f}"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel="Predicted", ylabel="True")
        ax.set_xticks(
            range(k), names, rotation=45 if rotate else 0, ha="right" if rotate else "center"
        )
        ax.set_yticks(range(k), names)
        if k <= ANNOTATE_UP_TO:
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value) and (value != 0 or i == j):  # blank: off-diagonal 0
                    color = "white" if value > 0.6 * top else "black"
                    ax.text(
                        j,
                        i,
                        fmt.format(value),
                        ha="center",
                        va="center",
                        color=color,
                        fontsize=8 if k > 10 else 10,
                    )
    fig.savefig(path)


def curves(path: Path, kind: str, lines: list[Curve], chance: float | None = None) -> None:
    """ROC (``kind="roc"``) or PR curves, area in the legend; a note when none is defined."""
    roc = kind == "roc"
    fig = new_figure(6.5, 6)
    ax = fig.subplots()
    xlabel, ylabel = (
        ("False positive rate", "True positive rate") if roc else ("Recall", "Precision")
    )
    ax.set(
        xlabel=xlabel,
        ylabel=ylabel,
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="ROC curve" if roc else "Precision-recall curve",
    )
    named = len(lines) <= LEGEND_UP_TO
    for curve in lines:
        label = f"{curve.label} ({'AUC' if roc else 'AP'} = {_area(curve.area)})"
        if curve.label == "macro":
            ax.plot(curve.x, curve.y, color="black", lw=2.5, label=label)
        else:
            ax.plot(
                curve.x,
                curve.y,
                lw=1.5 if named else 0.7,
                alpha=1 if named else 0.5,
                label=label if named else None,
                drawstyle="default" if roc else "steps-post",
            )
    if roc:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    elif chance is not None:
        ax.axhline(chance, ls="--", color="grey", label=f"chance (prevalence {chance:.2f})")
    if not lines:
        ax.text(
            0.5,
            0.5,
            "undefined on this split:\nit lacks positive or negative samples",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.legend(loc="lower right" if roc else "lower left", fontsize=8)
    fig.savefig(path)


def learning_curves(
    path: Path, history: list[dict[str, Any]], metric: str, monitor: str | None
) -> None:
    """Train vs val loss and metric per epoch, with the best epoch of ``monitor`` marked.

    The best epoch is where ``monitor`` (default ``val_loss``, else ``loss``) is lowest,
    or highest for a higher-is-better metric such as accuracy.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = np.array([_number(row.get("epoch", i + 1)) for i, row in enumerate(history)])

    def column(key: str) -> np.ndarray:
        return np.array([_number(row.get(key)) for row in history])

    keys = {key for row in history for key in row}
    watched = [k for k in (monitor, "val_loss", "loss") if k and np.isfinite(column(k)).any()]
    best = None
    if watched:
        pick = np.nanargmin if lower_is_better(watched[0]) else np.nanargmax
        best = int(pick(column(watched[0])))
    fig = new_figure(11, 4.5)
    for ax, name in zip(fig.subplots(1, 2), ("loss", metric), strict=True):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in keys:
                ax.plot(
                    epochs,
                    column(key),
                    style,
                    marker="o",
                    ms=3,
                    label="train" if key == name else "val",
                )
        if best is not None:
            ax.axvline(
                epochs[best],
                color="grey",
                ls=":",
                label=f"best epoch {epochs[best]:g} ({watched[0]})",
            )
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.savefig(path)


def pred_vs_actual(path: Path, target: np.ndarray, pred: np.ndarray, rmse: float) -> None:
    """Predicted against actual values with the identity line; points on it are perfect."""
    fig = new_figure(6, 6)
    ax = fig.subplots()
    ax.scatter(target, pred, s=12, alpha=0.6)
    low, high = _span(target, pred)
    ax.plot([low, high], [low, high], ls="--", color="grey", label="perfect")
    ax.set(xlabel="actual", ylabel="predicted", title=f"Predicted vs actual (RMSE {_area(rmse)})")
    ax.legend()
    fig.savefig(path)


def residuals(path: Path, target: np.ndarray, pred: np.ndarray) -> None:
    """Residuals against predictions (should be structureless) and their histogram."""
    error = pred - target
    fig = new_figure(11, 4.5)
    left, right = fig.subplots(1, 2)
    left.scatter(pred, error, s=12, alpha=0.6)
    left.axhline(0, color="grey", ls="--")
    left.set(xlabel="predicted", ylabel="residual (predicted - actual)", title="Residuals")
    right.hist(error, bins=30)
    right.axvline(0, color="grey", ls="--")
    right.set(xlabel="residual", ylabel="count", title="Residual distribution")
    fig.savefig(path)


def forecast(
    path: Path,
    history: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    baseline: np.ndarray,
) -> None:
    """Actual vs model vs baseline: a series for one-step forecasts, windows otherwise.

    ``history`` is (N, T) of the target channel, ``target``/``pred``/``baseline`` are
    (N, H), all in the same units.
    """
    horizon = target.shape[1]
    if horizon == 1:
        n = min(len(target), SERIES_POINTS)
        fig = new_figure(12, 4.5)
        ax = fig.subplots()
        steps = np.arange(n)
        ax.plot(steps, target[:n, 0], color="black", label="actual")
        ax.plot(steps, pred[:n, 0], label="model")
        ax.plot(steps, baseline[:n, 0], ls=":", label="baseline")
        ax.set(xlabel="test window", ylabel="value", title="One-step-ahead forecast")
        ax.legend()
        fig.savefig(path)
        return
    shown = np.linspace(0, len(target) - 1, min(WINDOWS, len(target))).astype(int)
    fig = new_figure(12, 3 * len(shown))
    axes = np.atleast_1d(fig.subplots(len(shown), 1))
    for ax, i in zip(axes, shown, strict=True):
        past = np.arange(-history.shape[1] + 1, 1)
        future = np.arange(1, horizon + 1)
        ax.plot(past, history[i], color="grey", label="input")
        ax.plot(future, target[i], color="black", marker="o", ms=3, label="actual")
        ax.plot(future, pred[i], marker="o", ms=3, label="model")
        ax.plot(future, baseline[i], ls=":", label="baseline")
        ax.set(title=f"window {i}", ylabel="value")
    axes[0].legend(fontsize=8, ncol=4)
    axes[-1].set_xlabel("step (0 = last observed)")
    fig.savefig(path)


def new_figure(
    width: float,
    height: float,
    *,
    left: float = 0.8,
    bottom: float = 0.6,
    right: float = 0.25,
    top: float = 0.45,
    wspace: float = 0.25,
    hspace: float = 0.45,
) -> Figure:
    """A figure with fixed margins in inches.

    Fixed margins instead of constrained or tight layout: those measure every text
    extent and doubled the drawing time of the whole evaluation.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(
        left=left / width,
        bottom=bottom / height,
        right=1 - right / width,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )
    return fig


def _span(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a) for a in arrays])
    return float(np.nanmin(values)), float(np.nanmax(values))


def _area(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _number(value: Any) -> float:
    """A history cell as a float; blanks (no val loss that epoch) become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
