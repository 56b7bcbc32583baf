"""The pictures of ``dlrun-inspect`` (:mod:`.inspection`), drawn like the run's others."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrun.evaluation.plots import new_figure


def _show(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) tensor as something imshow draws: grey for one channel, RGB for
    three, the channel mean otherwise; min-max scaled, since inputs are standardised."""
    a = image.detach().float().cpu()
    a = a[0] if a.shape[0] == 1 else a.permute(1, 2, 0) if a.shape[0] == 3 else a.mean(0)
    low, high = float(a.min()), float(a.max())
    return ((a - low) / max(high - low, 1e-12)).numpy()


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = min(count, columns)
    return math.ceil(count / columns), columns


def filters(path: Path, named_conv: tuple[str, nn.Conv2d]) -> None:
    """Every filter of the first convolution, one tile each (what it looks for)."""
    name, conv = named_conv
    weight = conv.weight.detach()
    rows, cols = _grid(weight.shape[0], 8)
    fig = new_figure(1.2 * cols, 1.2 * rows + 0.5, left=0.1, bottom=0.1, top=0.5, hspace=0.1)
    fig.suptitle(f"First-layer filters ({name}, {tuple(weight.shape[1:])})")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for i in range(weight.shape[0]):
        axes[i].imshow(_show(weight[i]), cmap="gray", interpolation="nearest")
    fig.savefig(path)


def feature_maps(
    path: Path, model: nn.Module, convs: list[tuple[str, nn.Module]], x: torch.Tensor, per: int
) -> None:
    """For each chosen image (a block of rows): the image, then the first ``per``
    channels of each convolution's output, early layers first."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(_keep(outputs, n)) for n, m in convs]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    rows = len(x) * len(convs)
    fig = new_figure(1.1 * (per + 1), 1.1 * rows + 0.5, left=0.1, bottom=0.1, top=0.5, hspace=0.3)
    fig.suptitle("Feature maps (first column: the input; rows: convolutions, early first)")
    axes = np.asarray(fig.subplots(rows, per + 1)).reshape(rows, per + 1)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(len(x)):
        for j, (name, _) in enumerate(convs):
            row = axes[i * len(convs) + j]
            if j == 0:
                row[0].imshow(_show(x[i]), cmap="gray")
            row[1].set_title(name, fontsize=6, loc="left")
            maps = outputs[name][i]
            for k in range(min(per, maps.shape[0])):
                row[k + 1].imshow(maps[k].cpu().numpy(), cmap="viridis")
    fig.savefig(path)


def _keep(store: dict[str, torch.Tensor], name: str) -> Any:
    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        store[name] = output.detach()

    return hook


def grad_cam_grid(
    path: Path,
    images: torch.Tensor,
    rows: list[tuple[str, list[int], torch.Tensor]],
    pred: torch.Tensor,
    conf: torch.Tensor,
    truth: torch.Tensor,
    names: Sequence[str],
) -> None:
    """One row of images per group (confidently right, confidently wrong), each with
    its Grad-CAM heat map laid over it and its predicted and true class."""
    cols = max((len(p) for _, p, _ in rows), default=1)
    fig = new_figure(1.9 * cols, 2.2 * max(len(rows), 1) + 0.4, left=0.1, bottom=0.1, top=0.5)
    fig.suptitle("Grad-CAM: where the evidence for the predicted class lies")
    axes = np.asarray(fig.subplots(max(len(rows), 1), cols)).reshape(max(len(rows), 1), cols)
    for ax in axes.ravel():
        ax.axis("off")
    label = (lambda c: names[c]) if names else str
    for r, (title, picks, cams) in enumerate(rows):
        for c, (i, cam) in enumerate(zip(picks, cams, strict=True)):
            ax = axes[r, c]
            ax.imshow(_show(images[i]), cmap="gray")
            ax.imshow(cam.cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            guess, true = label(int(pred[i])), label(int(truth[i]))
            ax.set_title(f"{title} #{i}\n{guess} ({float(conf[i]):.0%}), true {true}", fontsize=7)
    fig.savefig(path)


def attribution_bars(path: Path, names: list[str], mean_abs: list[float], signed: list[float]):
    """Features by mean |attribution| (largest on top), coloured by the mean's sign."""
    order = np.argsort(mean_abs)[-25:]  # the 25 that matter most
    fig = new_figure(7, 0.3 * len(order) + 1.2, left=2.2, bottom=0.6)
    ax = fig.subplots()
    colours = ["C3" if signed[i] < 0 else "C0" for i in order]
    ax.barh([names[i] for i in order], [mean_abs[i] for i in order], color=colours)
    ax.set(xlabel="mean |integrated gradients| (blue: pushes towards, red: away from)",
           title="Feature attributions")  # fmt: skip
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(path)
