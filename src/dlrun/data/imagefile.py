"""Reading one image file with Pillow into a fixed-size uint8 array.

The one decode function every path uses (in-memory, streamed, cache, and a later
``dlrun-predict``): open, convert to grayscale (``L``) or ``RGB``, optionally centre-crop
to the target's aspect, resize with Pillow's antialiasing bilinear filter, and return
``(C, H, W)`` uint8. Converting before resizing makes a grayscale file read as 1
channel identical to channel 0 of the same file read as RGB.

Modes: palette images (GIF, some PNGs) and alpha channels are converted by Pillow
(alpha dropped, as Keras does); 16-bit and 32-bit integer grayscale is scaled to 8 bits
(Pillow's own ``convert("L")`` would clip it); CMYK and YCbCr convert to RGB. Animated
GIFs give their first frame. A file Pillow cannot identify or decode fully (truncated,
corrupt) raises :class:`ImageError` with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageError(Exception):
    """A file that is not a readable image; the message says why."""


def decode(path: str, size: int, crop: bool, channels: int) -> np.ndarray:
    """``path`` as a ``(channels, size, size)`` uint8 array (see the module doc)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode smaller
            pixels = _resized(_converted(im, channels), size, crop)
    except Exception as err:
        raise ImageError(_reason(err)) from err
    array = np.asarray(pixels, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def is_gray(path: str) -> bool | None:
    """Whether the file's header says grayscale (None: not an image Pillow knows)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in GRAY_MODES
    except Exception:
        return None


def _converted(im: Any, channels: int) -> Any:
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit gray: scale, don't clip
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
        im = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow warns when converting such palettes directly
    return im.convert("L" if channels == 1 else "RGB")


def _resized(im: Any, size: int, crop: bool) -> Any:
    from PIL import Image

    width, height = im.size
    if width < 1 or height < 1:
        raise ValueError("the image has no pixels")
    box = None
    if crop and width != height:  # the centred square of the shorter side
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    if im.size == (size, size) and box is None:
        im.load()
        return im
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if type(err).__name__ == "UnidentifiedImageError":
        return "not an image Pillow can read"
    return f"unreadable image ({text[:160]})"


class ImageFiles:
    """A streamed source of image files (see :mod:`dlrun.data.stream`)."""

    def __init__(self, paths: list[str], size: int, crop: bool, channels: int) -> None:
        self.paths, self.size, self.crop, self.channels = paths, size, crop, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, None, list[tuple[int, str]]]:
        out = np.zeros((len(rows), self.channels, self.size, self.size), dtype=np.uint8)
        bad: list[tuple[int, str]] = []
        for i, row in enumerate(rows):
            try:
                out[i] = decode(self.paths[int(row)], self.size, self.crop, self.channels)
            except ImageError as err:
                bad.append((i, str(err)))
        return torch.from_numpy(out), None, bad

    def name(self, row: int) -> str:
        return self.paths[row]
