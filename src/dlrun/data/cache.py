"""Arrays scikit-learn computed once, kept on disk so later runs need not import it.

Importing scikit-learn to read a bundled dataset or to draw a stratified split costs
about a second on 2 CPU cores (it pulls SciPy), far more than the work itself.
scikit-learn stays the source of truth: the first use of a dataset (or a split) calls
it, and the result is saved as ``.npz`` under the cache dir, in a folder named after the
scikit-learn and NumPy versions that made it (the key), with a file name that hashes
the arguments. Later runs load the arrays back (milliseconds).

The cache dir is ``$DLRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlrun``, else
``~/.cache/dlrun`` (where pip, torch and Hugging Face keep theirs). Files are written
to a temporary name and renamed into place, so concurrent runs (a parallel sweep,
pytest-xdist) never read half a file; a file that can't be read back is rebuilt from
scikit-learn; a cache dir that can't be written is simply not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """Where the arrays live (see the module docstring)."""
    explicit = os.environ.get("DLRUN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dlrun"


def _versions() -> str | None:
    """``sklearn-<v>_numpy-<v>``: arrays made by another version are never reused."""
    try:
        sklearn = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        return None
    return f"sklearn-{sklearn}_numpy-{np.__version__}"


def _path(kind: str, key: Mapping[str, Any]) -> Path | None:
    versions = _versions()
    if versions is None:
        return None
    text = json.dumps({"kind": kind, **key}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir() / versions / f"{kind}-{digest}.npz"


def _load(path: Path) -> Arrays | None:
    """The arrays in ``path``, or None when it is missing or unreadable (truncated, bad CRC)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _store(path: Path, arrays: Arrays) -> None:
    """Write atomically (temp file + rename); a failure just leaves no cache file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def cached(
    kind: str,
    key: Mapping[str, Any],
    build: Callable[[], Arrays],
    check: Callable[[Arrays], bool] = lambda arrays: True,
) -> Arrays:
    """``build()``'s arrays, from the cache when a valid copy for ``kind`` + ``key`` exists.

    ``build`` is the scikit-learn call (imported inside it); ``check`` rejects a cached
    copy that loads but can't be right, which is then rebuilt like a missing one.
    """
    path = _path(kind, key)
    arrays = _load(path) if path is not None and path.is_file() else None
    if arrays is not None and check(arrays):
        return arrays
    arrays = {name: np.asarray(value) for name, value in build().items()}
    if path is not None:
        _store(path, arrays)
    return arrays


def sklearn_dataset(loader: str, fields: tuple[str, ...], **kwargs: Any) -> Arrays:
    """``sklearn.datasets.<loader>(**kwargs)``'s ``fields`` (e.g. ``data``, ``target``)."""

    def build() -> Arrays:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(**kwargs)
        return {field: np.asarray(bunch[field]) for field in fields}

    key = {"loader": loader, "fields": list(fields), "kwargs": kwargs}
    return cached("dataset", key, build, lambda arrays: set(arrays) == set(fields))
