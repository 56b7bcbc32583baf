"""The decoded-image cache (``data.cache=true``): a folder decoded once, memory-mapped.

Decoding and resizing dominate the cost of reading small images; the cache does it once
into an uncompressed uint8 ``.npy`` of shape (N, C, size, size) under
``data.cache_dir/images/``, so later epochs and later runs (sweep jobs, k-fold folds,
resumed runs) read rows straight from the page cache. Rows that failed to decode are
listed in the cache's manifest, so a later run skips and reports them without trying.

The cache is keyed by every file's path, size and modification time plus the decode
settings (size, crop, channels): change, add or remove a file and the next run rebuilds
it. One cache per (folder, settings): a rebuild replaces the previous one, which is
deleted once the new one is in place (a run still reading the old file keeps its open
map). Builds are serialised with a lock file, so sweep jobs started together decode the
folder once; files are written to temporary names and renamed into place, so a run
killed mid-build leaves no half cache behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.folders import Folder
from dlrun.data.imagefile import ImageFiles
from dlrun.data.stream import LoaderSettings, MappedRows, read_rows
from dlrun.errors import UserError

CACHE_VERSION = 1  # bump when decode() changes what a cached row holds


def cached_images(
    folder: Folder,
    reader: ImageFiles,
    cache_dir: str,
    settings: LoaderSettings,
) -> tuple[MappedRows, list[tuple[int, str]], str]:
    """The cache of ``folder`` decoded by ``reader``: (rows, failed rows, a line for the log)."""
    decoding = [reader.size, reader.crop, reader.channels]
    key = folder.fingerprint(CACHE_VERSION, *decoding)
    base = Path(str(cache_dir)).expanduser() / "images"
    stem = hashlib.sha256(json.dumps([str(folder.root), decoding]).encode()).hexdigest()[:16]
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _locked(base / f"{stem}.lock"):
            found = _open(base, stem, key)
            if found is not None:
                rows, bad = found
                return rows, bad, f"decoded images read from the cache {rows.path}"
            started = time.perf_counter()
            rows, bad = _build(base, stem, key, folder, reader, settings)
    except OSError as err:
        raise UserError(
            f"Cannot write the image cache in {base} ({err.strerror or err}); set "
            "data.cache_dir to a writable folder, or data.cache=false."
        ) from err
    seconds = time.perf_counter() - started
    return rows, bad, f"decoded {len(folder):,} images into the cache {rows.path} in {seconds:.1f}s"


def _open(base: Path, stem: str, key: str) -> tuple[MappedRows, list[tuple[int, str]]] | None:
    """The cache for ``key`` when its manifest and array are both in place, else None."""
    try:
        manifest = json.loads((base / f"{stem}.json").read_text())
        if manifest.get("key") != key or manifest.get("version") != CACHE_VERSION:
            return None
        rows = _mapped(base / manifest["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if list(rows.shape) != manifest.get("shape"):
        return None
    return rows, [(int(r), str(reason)) for r, reason in manifest.get("bad", [])]


def _mapped(path: Path) -> MappedRows:
    array = np.load(path, mmap_mode="r")
    return MappedRows(str(path), str(array.dtype), array.shape, int(array.offset))


def _build(
    base: Path, stem: str, key: str, folder: Folder, reader: ImageFiles, settings: LoaderSettings
) -> tuple[MappedRows, list[tuple[int, str]]]:
    """Decode every file into a new array, then rename it and its manifest into place."""
    name = f"{stem}-{key[:16]}.npy"
    tmp = base / f".{name}.{os.getpid()}.part"
    shape = (len(folder), reader.channels, reader.size, reader.size)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _, bad = read_rows(reader, np.arange(len(folder)), settings, into=array)
        array.flush()
        del array
        os.replace(tmp, base / name)
    finally:
        tmp.unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "version": CACHE_VERSION,
        "key": key,
        "file": name,
        "shape": list(shape),
        "root": str(folder.root),
        "bad": [[row, reason] for row, reason in bad],
        "paths_of_bad": [folder.paths[row] for row, _ in bad],
    }
    part = base / f".{stem}.json.{os.getpid()}.part"
    part.write_text(json.dumps(manifest, indent=1))
    os.replace(part, base / f"{stem}.json")
    for old in base.glob(f"{stem}-*.npy"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return _mapped(base / name), bad


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (waits for another process building the cache)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the renames still keep the cache whole
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
