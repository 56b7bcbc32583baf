"""MNIST, Fashion-MNIST and CIFAR-10, read straight from their published binary files.

The formats are simple enough to read with numpy (IDX: a big-endian header then raw
bytes; CIFAR-10 binary: 3073-byte records of label + RGB planes), so there is no
torchvision dependency, and CIFAR's "python" version, a set of pickles that could run
code when loaded, is never touched. Missing files are downloaded into ``root`` with
checksum verification (see :mod:`dlrun.data.download`).

The validation split is carved (stratified, seeded) from the official training set; the
test split is the official test set, so test numbers compare with published ones.
Pixels are scaled to [0, 1] and standardised per channel with training-split statistics.
"""

from __future__ import annotations

import gzip
import os
import struct
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlrun.data.download import RemoteFile, download
from dlrun.data.pixels import image_state, pixel_stats, standardise_uint8
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Task
from dlrun.data.splits import SplitIndices, cut_bundle
from dlrun.errors import UserError

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_MIRROR = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class _IdxDataset:
    name: str
    files: tuple[RemoteFile, ...]  # train images, train labels, test images, test labels
    class_names: tuple[str, ...]


MNIST = _IdxDataset(
    "mnist",
    (
        RemoteFile("train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    tuple(str(d) for d in range(10)),
)
FASHION_MNIST = _IdxDataset(
    "fashion_mnist",
    (
        RemoteFile("train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile("train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz",
    "sha256:c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
CIFAR10_DIR = "cifar-10-batches-bin"  # the folder inside the archive
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = "test_batch.bin"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_RECORD = 1 + 3 * 32 * 32


def load_mnist(
    seed: int,
    root: str = "data/mnist",
    mirror: str = MNIST_MIRROR,
    checksums: Mapping[str, str] | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
) -> DataBundle:
    """MNIST digits, 1x28x28 (kept at 28 px: models that want 32 pad)."""
    return _load_idx(MNIST, seed, Path(root), mirror, checksums, limit, val_fraction)


def load_fashion_mnist(
    seed: int,
    root: str = "data/fashion_mnist",
    mirror: str = FASHION_MNIST_MIRROR,
    checksums: Mapping[str, str] | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
) -> DataBundle:
    """Zalando's Fashion-MNIST: MNIST's format and sizes, ten kinds of clothing."""
    return _load_idx(FASHION_MNIST, seed, Path(root), mirror, checksums, limit, val_fraction)


def load_cifar10(
    seed: int,
    root: str = "data/cifar10",
    mirror: str = CIFAR10_MIRROR,
    checksums: Mapping[str, str] | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
) -> DataBundle:
    """CIFAR-10, 3x32x32 colour images in ten classes, from the binary release.

    ``root`` may hold the ``.bin`` batches directly, the extracted ``cifar-10-batches-bin``
    folder, or just ``cifar-10-binary.tar.gz`` (its batch files are copied out by name).
    """
    folder = _cifar_folder(Path(root), mirror, checksums)
    train_x, train_y = read_cifar_batches([folder / name for name in CIFAR10_TRAIN])
    test_x, test_y = read_cifar_batches([folder / CIFAR10_TEST])
    return _image_bundle(
        "cifar10", train_x, train_y, test_x, test_y, CIFAR10_CLASSES, seed, limit, val_fraction
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped when the name ends in ``.gz``) as an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UserError(
            f"Cannot read {path} ({err}); delete it and run again to download a fresh copy."
        ) from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise UserError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number); "
            "delete it and run again to download a fresh copy."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(dims)):
        raise UserError(
            f"{path} is truncated: its header says {dims} but it holds "
            f"{body.size} bytes; delete it and run again."
        )
    return body.reshape(dims)


def read_cifar_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batches as uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    records = []
    for path in paths:
        data = np.fromfile(path, dtype=np.uint8)
        if data.size == 0 or data.size % _CIFAR_RECORD:
            raise UserError(
                f"{path} is not a CIFAR-10 binary batch ({data.size} bytes is not "
                f"a multiple of {_CIFAR_RECORD}); delete it and run again."
            )
        records.append(data.reshape(-1, _CIFAR_RECORD))
    table = np.concatenate(records)
    labels = table[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise UserError(f"{paths[0].parent} holds labels above 9: not CIFAR-10 binary batches.")
    return table[:, 1:].reshape(-1, 3, 32, 32), labels


def _load_idx(
    ds: _IdxDataset,
    seed: int,
    root: Path,
    mirror: str,
    checksums: Mapping[str, str] | None,
    limit: int | None,
    val_fraction: float,
) -> DataBundle:
    def present(remote: RemoteFile) -> Path | None:
        # accept the files as published (.gz) or already decompressed
        for path in (root / remote.name, root / remote.name.removesuffix(".gz")):
            if path.is_file():
                return path
        return None

    missing = [f for f in ds.files if present(f) is None]
    if missing:
        download(ds.name, root, missing, mirror, checksums)
    train_x, train_y, test_x, test_y = (read_idx(present(f) or root / f.name) for f in ds.files)
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"The IDX files in {root} do not pair up: images {images.shape}, "
                f"labels {labels.shape}; replace them with the originals."
            )
    return _image_bundle(
        ds.name,
        train_x[:, None],
        train_y.astype(np.int64),
        test_x[:, None],
        test_y.astype(np.int64),
        ds.class_names,
        seed,
        limit,
        val_fraction,
    )


def _cifar_folder(root: Path, mirror: str, checksums: Mapping[str, str] | None) -> Path:
    names = (*CIFAR10_TRAIN, CIFAR10_TEST)
    for folder in (root / CIFAR10_DIR, root):
        if all((folder / name).is_file() for name in names):
            return folder
    archive = root / CIFAR10_ARCHIVE.name
    if not archive.is_file():
        download("cifar10", root, [CIFAR10_ARCHIVE], mirror, checksums)
    return _extract_cifar(archive, root / CIFAR10_DIR, names)


def _extract_cifar(archive: Path, folder: Path, names: Sequence[str]) -> Path:
    """Copy the named batch files out of the archive.

    Members are looked up by their known names and written to paths we build, so a
    crafted archive cannot write outside ``folder`` (the risk of ``extractall``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                member = tar.extractfile(f"{CIFAR10_DIR}/{name}")
                if member is None:
                    raise KeyError(name)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
                with os.fdopen(fd, "wb") as out:
                    out.write(member.read())
                os.replace(tmp, folder / name)
    except (tarfile.TarError, KeyError, EOFError, OSError) as err:
        raise UserError(
            f"{archive} is not a readable CIFAR-10 binary archive ({err!r}); "
            "delete it and run again to download a fresh copy."
        ) from err
    return folder


def _image_bundle(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    class_names: tuple[str, ...],
    seed: int,
    limit: int | None,
    val_fraction: float,
) -> DataBundle:
    """Official train (optionally its first ``limit`` images) -> train + val; test as is."""
    from sklearn.model_selection import train_test_split

    if limit is not None:
        if limit < 2:
            raise UserError(f"data.limit must be at least 2 (got {limit}).")
        train_x, train_y = train_x[:limit], train_y[:limit]
    n = len(train_x)
    try:
        train, val = train_test_split(
            np.arange(n), test_size=val_fraction, random_state=seed, stratify=train_y
        )
    except ValueError as err:
        raise UserError(
            f"Cannot carve a stratified validation split from {n} training "
            f"images ({err}); raise data.limit or change data.val_fraction."
        ) from err
    idx = SplitIndices(np.sort(train), np.sort(val), np.arange(n, n + len(test_x)))
    images = np.concatenate([train_x, test_x])
    mean, std = pixel_stats(images, idx.train)
    x = standardise_uint8(images, mean, std)
    spec = DataSpec(
        name=name,
        task=Task.MULTICLASS,
        kind=DataKind.IMAGE,
        input_shape=tuple(train_x.shape[1:]),
        n_outputs=len(class_names),
        class_names=class_names,
    )
    meta = {
        "pixel_mean": mean,
        "pixel_std": std,
        "n_train_official": n,
        "preprocess": image_state(train_x.shape[1], train_x.shape[2:], mean, std),
    }
    labels = torch.from_numpy(np.concatenate([train_y, test_y]))
    return cut_bundle(spec, torch.from_numpy(x), labels, idx, meta)
