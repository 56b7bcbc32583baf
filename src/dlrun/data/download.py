"""Fetch dataset files from a mirror, verified, or say exactly what to place by hand.

A download streams into a temporary file next to its destination while hashing it, and
only a file whose checksum matches is renamed into place (an atomic rename on the same
file system). So an interrupted or corrupt download never leaves a file that a later
run would trust. When the network is unreachable (offline machines fail name resolution
in milliseconds) the error lists every missing file with its URL and destination, so
the user can copy them in by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import UserError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Failures that mean "could not get the bytes", as opposed to a bad file or a bug.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


@dataclass(frozen=True)
class RemoteFile:
    """One file on a mirror: its name there (and on disk) and its expected checksum."""

    name: str
    checksum: str  # "<algorithm>:<hex digest>", e.g. "md5:..." or "sha256:..."


def url_for(mirror: str, name: str) -> str:
    return f"{mirror.rstrip('/')}/{name}"


def download(
    dataset: str,
    root: Path,
    files: Sequence[RemoteFile],
    mirror: str,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> None:
    """Download ``files`` from ``mirror`` into ``root``, verifying each checksum.

    ``checksums`` overrides expected checksums by file name (for a private mirror that
    serves repacked files). Raises :class:`UserError` when the network fails (listing
    every file still missing) or when a checksum does not match.
    """
    overrides = dict(checksums or {})
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"Cannot create the data folder {root} ({err}); set data.root to a writable folder."
        ) from err
    for i, remote in enumerate(files):
        url = url_for(mirror, remote.name)
        expected = overrides.get(remote.name, remote.checksum)
        try:
            _fetch(url, root / remote.name, expected, timeout)
        except _NETWORK_ERRORS as err:
            raise UserError(offline_message(dataset, root, files[i:], mirror, err)) from err


def offline_message(
    dataset: str, root: Path, files: Sequence[RemoteFile], mirror: str, err: BaseException
) -> str:
    """The text shown when files cannot be downloaded: what to put where, from where."""
    # HTTPError's str() has the status code; URLError's ``reason`` is the socket error
    reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
    lines = [
        f"Could not download {dataset} ({reason}). If this machine is offline, download "
        f"these files on another machine and put them in {root.resolve()}:",
        *(f"  {url_for(mirror, f.name)}  ->  {root.resolve() / f.name}" for f in files),
        "then run again (or point data.root at a folder that already holds them).",
    ]
    return "\n".join(lines)


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> None:
    algorithm, _, want = expected.partition(":")
    digest = hashlib.new(algorithm, usedforsecurity=False)
    log.info("downloading %s -> %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != want.lower():
            raise UserError(
                f"Downloaded {url} but its {algorithm} checksum is {got}, expected {want}; "
                "the file was deleted. The mirror may serve a corrupt or different file: "
                f"retry, set data.mirror to another mirror, or place a verified copy at {dest}."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
