"""What the cheaper pictures still show: every mistake's tile and title in the gallery,
and every non-zero cell (and the whole diagonal) of the confusion matrix numbered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.image import imread

from dlrun.diagnostics.plots import TILE_PIXELS, image_grid
from dlrun.evaluation.plots import confusion_matrix


@pytest.fixture
def texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every string written with ``Axes.text`` or ``Axes.annotate`` while drawing."""
    seen: list[str] = []
    text, annotate = Axes.text, Axes.annotate
    monkeypatch.setattr(
        Axes, "text", lambda ax, x, y, s, *a, **k: seen.append(s) or text(ax, x, y, s, *a, **k)
    )
    monkeypatch.setattr(
        Axes, "annotate", lambda ax, s, *a, **k: seen.append(s) or annotate(ax, s, *a, **k)
    )
    return seen


def test_the_gallery_draws_each_image_with_its_title(tmp_path: Path, texts: list[str]) -> None:
    images = np.zeros((5, 1, 8, 8))
    images[:, :, :, 4:] = 1.0  # each tile: left half black, right half white
    titles = [f"#{i}: 3 → 8 (9{i}%)" for i in range(5)]
    image_grid(tmp_path / "g.png", images, titles, "Most confident mistakes")
    assert texts == titles
    picture = imread(tmp_path / "g.png")
    assert picture.shape[:2] == (int((2.8 * 2 + 0.4) * 100), int(3.0 * 4 * 100))  # 2 x 4
    dark = (picture[..., :3].mean(axis=-1) < 0.2).sum()
    # five tiles, each with a black half, enlarged to >= TILE_PIXELS before drawing
    assert dark > 5 * (TILE_PIXELS // 2) ** 2 / 4


def test_colour_images_keep_their_colours(tmp_path: Path) -> None:
    red = np.zeros((2, 3, 16, 16))
    red[:, 0] = 1.0
    red[:, :, 0, 0] = 0.5  # a range to scale within
    image_grid(tmp_path / "c.png", red, ["a", "b"], "red")
    rgb = imread(tmp_path / "c.png")[..., :3]
    reddish = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.1) & (rgb[..., 2] < 0.1)
    assert reddish.sum() > 1000


def test_the_confusion_matrix_numbers_non_zero_cells_and_the_diagonal(
    tmp_path: Path, texts: list[str]
) -> None:
    matrix = [[5, 0, 1], [0, 0, 0], [2, 0, 7]]  # class 1 never seen: its diagonal 0 shows
    confusion_matrix(tmp_path / "cm.png", matrix, ["a", "b", "c"])
    counts = [t for t in texts if "." not in t]
    shares = [t for t in texts if "." in t]
    assert sorted(counts) == sorted(["5", "1", "0", "2", "7"])
    # row-normalised: class 1 has no samples (its row is undefined, not zero)
    assert sorted(shares) == sorted(["0.83", "0.17", "0.22", "0.78"])
