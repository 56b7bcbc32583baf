"""Opening ``.npy`` and ``.npz`` arrays memory-mapped, without ever unpickling.

``np.load(mmap_mode="r")`` maps a ``.npy`` but silently reads an ``.npz`` member whole.
A member that ``np.savez`` stored uncompressed is a plain ``.npy`` inside the zip, so it
is mapped here at its offset in the file; a compressed member (``np.savez_compressed``)
cannot be mapped and is read into memory, which the loader notes. Object arrays
(pickles) are refused: a data file must never run code when it is opened.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dlrun.data.stream import MappedRows
from dlrun.errors import UserError

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


def open_npy(path: Path) -> MappedRows:
    """A ``.npy`` file as memory-mapped rows."""
    with _read_errors(path, " as a .npy array"):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(array, np.memmap):  # a 0-byte array numpy can't map
        raise UserError(f"{path} holds no rows.")
    _check_dtype(array.dtype, path)
    return MappedRows(str(path), array.dtype.str, array.shape, int(array.offset), _fortran(array))


def npz_keys(path: Path) -> list[str]:
    """The array names in an ``.npz`` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f"Cannot read {path} as an .npz archive ({err}).") from err


def open_npz_member(path: Path, key: str) -> tuple[MappedRows | np.ndarray, bool]:
    """(member ``key`` mapped in place, or read whole when compressed; whether mapped)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with np.load(path, allow_pickle=False) as npz:
                array = _loaded(npz, key, path)
            return array, False
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(info.header_offset + _LOCAL_HEADER + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = reader(handle)
        offset = handle.tell()
    _check_dtype(dtype, path, key)
    return MappedRows(str(path), dtype.str, shape, offset, fortran), True


def load_whole(path: Path, key: str | None = None) -> np.ndarray:
    """A small array (the targets) read into memory: a ``.npy`` or an ``.npz`` member."""
    with _read_errors(path):
        if key is None:
            return np.asarray(np.load(path, allow_pickle=False))
        with np.load(path, allow_pickle=False) as npz:
            return _loaded(npz, key, path)


@contextlib.contextmanager
def _read_errors(path: Path, how: str = "") -> Iterator[None]:
    """numpy's refusals of a file as one line: pickles (ValueError) or unreadable bytes."""
    try:
        yield
    except ValueError as err:
        raise UserError(
            f"{path} holds Python objects ({err}); dlrun reads numeric arrays only."
        ) from err
    except OSError as err:
        raise UserError(f"Cannot read {path}{how} ({err}).") from err


def _loaded(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        array = npz[key]
    except ValueError as err:
        raise UserError(
            f"{path}[{key}] holds Python objects; dlrun reads numeric arrays only."
        ) from err
    _check_dtype(array.dtype, path, key)
    return array


def _check_dtype(dtype: np.dtype, path: Path, key: str | None = None) -> None:
    where = f"{path}[{key}]" if key else str(path)
    if dtype.kind not in "biuf":
        raise UserError(
            f"{where} has dtype {dtype}; dlrun reads arrays of booleans, integers or floats."
        )


def _fortran(array: np.ndarray) -> bool:
    return bool(array.flags.f_contiguous and not array.flags.c_contiguous)
