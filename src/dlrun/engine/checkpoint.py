"""Checkpoints that are written atomically and can never run code when loaded.

Saving goes to a temp file in the same directory and is renamed over the target, so a
crash mid-save (even ``kill -9``) leaves the previous checkpoint intact. There is no
fsync: it guards only against power loss and costs more than a small model's epoch.
Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are
accepted, so a checkpoint from anywhere cannot execute code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dlrun.errors import UserError, write_error


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file + rename)."""
    with _refused_write_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(state, fh)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # on a read-only disk this fails too
                Path(tmp).unlink(missing_ok=True)
            raise


def copy_checkpoint(source: Path, target: Path) -> None:
    """Make ``target`` hold what ``source`` holds now, atomically.

    A hard link costs microseconds instead of copying megabytes; it stays correct because
    :func:`save_checkpoint` never writes into an existing file: it renames a new one over
    it, so the link keeps the old contents. Filesystems without hard links get a copy.
    """
    with _refused_write_names(target):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            try:
                os.unlink(tmp)
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def _refused_write_names(path: Path) -> Iterator[None]:
    """Raise a refused write (full disk, read-only folder) as an ``OSError`` naming
    ``path``: torch reports a full disk as ``RuntimeError: ... unexpected pos``, and the
    temp file's name means nothing to a user."""
    try:
        yield
    except Exception as exc:
        refused = write_error(exc)
        if refused is None:
            raise
        raise OSError(refused.errno, refused.strerror, str(path)) from exc


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or corrupt file is a :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged/foreign file
        # torch's own text suggests weights_only=False, exactly what must never be done
        # with a file of unknown origin, so only the kind of failure is passed on.
        raise UserError(
            f"checkpoint {path} is corrupt or not a dlrun checkpoint ({type(exc).__name__}); "
            "it was not loaded"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} is not a dlrun checkpoint (no model weights)")
    return state


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load weights, turning an architecture mismatch into one clear message."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"checkpoint {path} does not fit this model ({first}); "
            "was it saved by a run with another model config?"
        ) from exc
