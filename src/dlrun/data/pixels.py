"""Pixels -> model inputs: the image loaders' scaling, fit once and applied anywhere.

Every image set is scaled to [0, 1] and standardised per channel with statistics of the
training split; the digits are then resized to the size the model wants. That state is
a few numbers (:func:`image_state`), and :func:`encode_images` applies it to new
images (a PNG, a ``.npy``, a JSON request) exactly as training applied it to its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dlrun.data.splits import Standardizer
from dlrun.data.table import Encoded
from dlrun.errors import UserError

# ITU-R 601-2 luma, the weights PIL's convert("L") uses: colour -> one grey channel.
LUMA = np.array([0.299, 0.587, 0.114])


def image_state(
    channels: int,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The preprocessing of images of ``size`` (H, W) with ``channels``; ``input_size``
    is the model's (after a bilinear resize, as ``data=digits`` does)."""
    return {
        "type": "image",
        "channels": channels,
        "size": list(size),
        "input_size": list(input_size or size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "pixels": "values in [0, 1], or uint8 0-255; channels first (C, H, W) or (H, W)",
    }


def pixel_stats(images: np.ndarray, train: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``images`` (N, C, H, W) over the ``train`` rows,
    on the [0, 1] scale.

    Pixels take only 256 values, so exact statistics come from a histogram (no float64
    copy of the images: CIFAR-10 would need 1.5 GB).
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        pixels = torch.from_numpy(np.ascontiguousarray(images[train, c]).reshape(-1))
        hist = torch.bincount(pixels, minlength=256).numpy()  # numpy's is 30x slower on uint8
        mean = float((hist * levels).sum() / hist.sum())
        std = float(np.sqrt((hist * (levels - mean) ** 2).sum() / hist.sum())) or 1.0
        means.append(mean)
        stds.append(std)
    return means, stds


def standardise_uint8(
    images: np.ndarray, means: Sequence[float], stds: Sequence[float]
) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 standardised: one fused multiply-add per pixel."""
    per_channel = (1, len(means), 1, 1)
    scale = (1.0 / (255.0 * np.array(stds))).astype(np.float32).reshape(per_channel)
    shift = (-np.array(means) / np.array(stds)).astype(np.float32).reshape(per_channel)
    x = np.empty(images.shape, dtype=np.float32)
    np.multiply(images, scale, out=x)
    x += shift
    return x


def encode_images(state: dict[str, Any], images: Sequence[np.ndarray] | np.ndarray) -> Encoded:
    """Model inputs (N, C, h, w) float32 from images in [0, 1] or uint8.

    An image with another channel count is converted (colour -> luma, grey -> repeated)
    and one of another size is resized (bilinear, antialiased) to the training images'
    size; each fallback is named once in the notes.
    """
    channels, size = state["channels"], tuple(state["size"])
    notes: list[str] = []
    batch = _as_batch(images, channels, size, notes)
    if batch.dtype == np.uint8:
        x = standardise_uint8(batch, state["mean"], state["std"])
    else:
        shape = (1, channels, 1, 1)
        scaler = Standardizer(
            np.array(state["mean"]).reshape(shape), np.array(state["std"]).reshape(shape)
        )
        if channels == 1:  # one channel: the loader's scalar statistics, same arithmetic
            scaler = Standardizer(np.array(state["mean"][0]), np.array(state["std"][0]))
        x = scaler.transform(batch)
    out = torch.from_numpy(np.ascontiguousarray(x))
    if tuple(state["input_size"]) != size:
        out = torch.nn.functional.interpolate(out, size=tuple(state["input_size"]), mode="bilinear")
    return Encoded(out.numpy(), notes)


def _as_batch(
    images: Sequence[np.ndarray] | np.ndarray, channels: int, size: tuple[int, ...], notes: list
) -> np.ndarray:
    """(N, C, H, W) of the training channels and size, uint8 kept when nothing changes."""
    batched = isinstance(images, np.ndarray) and images.ndim == 4
    if batched and images.shape[1:] == (channels, *size):
        return _checked_range(images)
    fixed, converted, resized = [], 0, set()
    for image in images:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise UserError(
                f"an image must be (H, W) or (C, H, W); got an array of shape {array.shape}"
            )
        if array.shape[0] != channels:
            array, converted = _convert_channels(array, channels), converted + 1
        if array.shape[1:] != size:
            resized.add(f"{array.shape[1]}x{array.shape[2]}")
            array = _resize(_to_unit(array), size)
        fixed.append(_checked_range(array))
    if converted:
        notes.append(f"{converted} image(s) converted to {channels} channel(s) as in training")
    if resized:
        notes.append(
            f"images of size {', '.join(sorted(resized))} resized to {size[0]}x{size[1]} "
            "(the training images' size)"
        )
    if not fixed:
        raise UserError("no images to predict")
    if len({a.dtype for a in fixed}) > 1:
        fixed = [_to_unit(a) for a in fixed]
    return np.stack(fixed)


def _convert_channels(array: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1 and array.shape[0] in (3, 4):
        grey = np.tensordot(LUMA, _to_unit(array[:3]), axes=1)
        return grey[None]
    if channels == 3 and array.shape[0] == 1:
        return np.repeat(array, 3, axis=0)
    if channels == 3 and array.shape[0] == 4:
        return array[:3]  # drop alpha
    raise UserError(
        f"an image has {array.shape[0]} channels; the model was trained on {channels} "
        "(channels come first: (C, H, W))"
    )


def _resize(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    out = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True)
    return out[0].clamp(0.0, 1.0).numpy()


def _to_unit(array: np.ndarray) -> np.ndarray:
    """Pixels on the [0, 1] scale as float (uint8 divided by 255)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32, copy=False)


def _checked_range(array: np.ndarray) -> np.ndarray:
    """uint8 as is; other integers must be 0-255, floats pixel values in [0, 1]."""
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise UserError(f"image pixels must be numbers; got {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError("integer image pixels must lie in 0-255")
        return array.astype(np.uint8)
    values = array.astype(np.float32, copy=False)
    if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise UserError(
            "image pixels must lie in [0, 1] (or be uint8 0-255); got values from "
            f"{float(np.nanmin(values)):g} to {float(np.nanmax(values)):g}"
        )
    return values
