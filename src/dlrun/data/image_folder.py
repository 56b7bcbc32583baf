"""``data=image_folder``: a folder of images sorted into class subfolders.

As Keras' ``image_dataset_from_directory``: ``root/<class>/*.png|jpg|bmp|gif|...`` (or
``train/``, ``val/``, ``test/`` folders of class folders), every image resized to
``size`` x ``size`` (``crop=true`` centre-crops first instead of stretching), with 1 or
3 channels (``auto``: 1 when the sampled training images are all grayscale) and
per-channel standardisation fit on the training split.

Three ways to hold the pixels, one result: in memory as float32 tensors (decoded once,
the fast path for data that fits), streamed through a DataLoader (decoded per batch in
worker processes), or from the decoded-image cache (``data.cache=true``, decoded once
per folder and reused by later runs, in memory or streamed). Clean folders give bit
for bit the same batches in every mode.

Bad files never stop a run: other file types and empty class folders are listed and
ignored; an unreadable or truncated image is skipped when the folder is decoded up front
(in memory, or the cache) and replaced by another image of its class when found while
streaming. Every one is named in ``meta["skipped"]`` (the log, report.md, metrics.json).
"""

from __future__ import annotations

import numpy as np
import torch

from dlrun.data.folders import (
    Folder,
    class_targets,
    folder_meta,
    n_class_outputs,
    scan,
    without_rows,
)
from dlrun.data.imagefile import IMAGE_EXTENSIONS, ImageFiles, is_gray
from dlrun.data.normalise import Normaliser, pixel_normaliser, stats_rows
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split
from dlrun.data.splits import SplitIndices
from dlrun.data.stream import (
    LoaderSettings,
    decide_stream,
    loader_settings,
    read_rows,
    streamed_splits,
)
from dlrun.errors import UserError

NORMALISE_CHUNK = 1024  # images standardised per step of the in-memory path


def load_image_folder(
    seed: int,
    root: str | None = None,
    size: int = 32,
    crop: bool = False,
    channels: int | str = "auto",
    positive_class: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    stream: bool | str = "auto",
    cache: bool = False,
    cache_dir: str = "data/cache",
    num_workers: int | str = "auto",
    prefetch_factor: int = 2,
) -> DataBundle:
    """Images in class folders under ``root``: multiclass, or binary for two classes."""
    folder = scan(root, IMAGE_EXTENSIONS, "image")
    idx = folder.split(seed, val_fraction, test_fraction)
    settings = loader_settings(num_workers, prefetch_factor)
    n_channels = _channels(channels, folder, stats_rows(idx.train, seed))
    reader = ImageFiles(folder.paths, size, bool(crop), n_channels)
    streamed, how = decide_stream(stream, len(folder) * n_channels * size * size * 4)
    notes = [*folder.notes, f"{len(folder):,} images, {n_channels}x{size}x{size}: {how}"]
    source, raw, bad = _pixels(folder, reader, streamed, cache, cache_dir, settings, notes)
    skipped = folder.skipped + [{"path": folder.paths[r], "reason": why} for r, why in bad]
    idx = without_rows(idx, [row for row, _ in bad])
    sample = stats_rows(idx.train, seed)
    normaliser = pixel_normaliser(
        raw[sample] if raw is not None else _sample(source, sample, settings)
    )
    task, y, names = class_targets(folder.labels, folder.class_names, positive_class)
    spec = DataSpec(
        name=folder.root.name,
        task=task,
        kind=DataKind.IMAGE,
        input_shape=(n_channels, size, size),
        n_outputs=n_class_outputs(task, names),
        class_names=names,
    )
    preprocess = {
        "type": "image",
        "size": [size, size],
        "crop": bool(crop),
        "channels": n_channels,
        "resample": "bilinear",
        **normaliser.to_json(),
    }
    meta = folder_meta(folder, idx, notes, skipped, preprocess, names, "image")
    if raw is not None:
        return DataBundle(spec, *_tensors(raw, y, idx, normaliser), meta=meta)
    return DataBundle(
        spec, *streamed_splits(source, idx, y, normaliser, settings, skipped), meta=meta
    )


def _channels(channels: int | str, folder: Folder, sample: np.ndarray) -> int:
    """``data.channels`` as a number; ``auto`` reads the headers of the stats sample."""
    if channels in (1, 3):
        return int(channels)
    if channels != "auto":
        raise UserError(f"data.channels must be auto, 1 or 3 (got {channels!r}).")
    gray = [is_gray(folder.paths[row]) for row in sample]
    return 1 if all(g is not False for g in gray) and any(gray) else 3


def _pixels(
    folder: Folder,
    reader: ImageFiles,
    streamed: bool,
    cache: bool,
    cache_dir: str,
    settings: LoaderSettings,
    notes: list[str],
) -> tuple[object, np.ndarray | None, list[tuple[int, str]]]:
    """(source for streaming, decoded uint8 array when in memory, failed rows)."""
    if cache:
        from dlrun.data.image_cache import cached_images

        rows, bad, line = cached_images(folder, reader, cache_dir, settings)
        notes.append(line)
        return rows, None if streamed else np.asarray(rows.array), bad
    if streamed:
        return reader, None, []  # unreadable files show up (and are replaced) per batch
    raw, bad = read_rows(reader, np.arange(len(folder)), settings)
    return reader, raw, bad


def _sample(source: object, rows: np.ndarray, settings: LoaderSettings) -> np.ndarray:
    """The statistics sample read through the pipeline, without rows that failed."""
    pixels, failed = read_rows(source, rows, settings)
    keep = np.ones(len(rows), dtype=bool)
    keep[[pos for pos, _ in failed]] = False
    return pixels[keep]


def _tensors(
    raw: np.ndarray, labels: torch.Tensor, idx: SplitIndices, normaliser: Normaliser
) -> list[Split]:
    """The three splits as standardised float32 tensors (in chunks: no float64 copy)."""
    out = []
    for rows in (idx.train, idx.val, idx.test):
        x = torch.empty((len(rows), *raw.shape[1:]), dtype=torch.float32)
        for start in range(0, len(rows), NORMALISE_CHUNK):
            part = rows[start : start + NORMALISE_CHUNK]
            x[start : start + len(part)] = normaliser(torch.from_numpy(raw[part]))
        out.append(Split(x, labels[torch.from_numpy(rows)]))
    if len(out[0]) == 0:
        raise UserError("No readable training images are left; see the skipped files above.")
    return out
