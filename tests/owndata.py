"""Users' own data written for tests: tiny image folders, text folders and arrays.

Images are small (8-20 px) so a folder of dozens decodes in milliseconds; each class
gets its own colour and pattern, so a model can learn them in a couple of epochs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

FORMATS = ("png", "jpg", "bmp", "gif")


def image(rng: np.random.Generator, label: int, height: int, width: int, mode: str) -> object:
    """A Pillow image whose brightness pattern depends on ``label``."""
    from PIL import Image

    base = np.zeros((height, width, 3), dtype=np.float64)
    base[..., label % 3] = 150 + 20 * label
    stripes = (np.arange(width)[None, :] // (1 + label)) % 2
    pixels = base + 80 * stripes[..., None] + rng.normal(0, 10, base.shape)
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return picture.convert(mode) if mode != "RGB" else picture


def write_images(
    root: Path,
    counts: dict[str, int],
    *,
    formats: Iterable[str] = ("png",),
    sizes: Iterable[tuple[int, int]] = ((12, 12),),
    mode: str = "RGB",
    seed: int = 0,
) -> Path:
    """``root/<class>/<i>.<fmt>``, cycling through ``formats`` and (height, width) ``sizes``."""
    rng = np.random.default_rng(seed)
    formats, sizes = list(formats), list(sizes)
    for label, (name, count) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            fmt = formats[i % len(formats)]
            height, width = sizes[i % len(sizes)]
            picture = image(rng, label, height, width, mode)
            if fmt == "gif" and mode != "L":
                picture = picture.convert("P")
            picture.save(folder / f"{i:03d}.{fmt}")
    return root


TOPICS = {
    "food": "bread soup cake salt taste cook meal",
    "sport": "ball goal team match score win play",
    "tech": "code data chip cloud robot app net",
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "it"]


def write_texts(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """``root/<topic>/<i>.txt``: short documents of topic words and filler."""
    rng = np.random.default_rng(seed)
    for topic, words in TOPICS.items():
        folder = root / topic
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            n = int(rng.integers(4, 20))
            tokens = rng.choice(words.split() + FILLER, n)
            (folder / f"{i:03d}.txt").write_text(" ".join(tokens) + ".", encoding="utf-8")
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a share of its bytes (a half-copied image)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path
