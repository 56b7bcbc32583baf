"""Image readers and the verified downloader, on tiny files the tests write and serve
from a loopback HTTP server (never the real network)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dlrun.data import images
from dlrun.data.download import RemoteFile, download
from dlrun.data.spec import DataKind, Task
from dlrun.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"
N_TRAIN, N_TEST = 100, 20  # ten training images per class


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def labelled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10


def write_mnist(folder: Path, gz: bool = True) -> None:
    """A tiny MNIST in the official file layout; the test images are brighter."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, train_y = labelled(N_TRAIN, 1)
    test_x, test_y = labelled(N_TEST, 2)
    test_x = np.clip(test_x.astype(int) + 40, 0, 255).astype(np.uint8)
    for name, array in (
        ("train-images-idx3-ubyte", train_x),
        ("train-labels-idx1-ubyte", train_y),
        ("t10k-images-idx3-ubyte", test_x),
        ("t10k-labels-idx1-ubyte", test_y),
    ):
        write_idx(folder / f"{name}{suffix}", array)


def cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] = np.arange(n) % 10
    return records.tobytes()


def write_cifar_archive(path: Path, members: tuple[str, ...] | None = None) -> None:
    names = members or (*images.CIFAR10_TRAIN, images.CIFAR10_TEST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(names):
            data = cifar_batch(N_TEST, 10 + i)
            info = tarfile.TarInfo(f"{images.CIFAR10_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def mirror(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, folder it serves, list of requested paths) of a loopback server."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    requests: list[str] = []

    class Handler(_QuietHandler):
        timeout = 10

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def dead_mirror() -> str:
    """A URL on a loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def mnist_checksums(folder: Path) -> dict[str, str]:
    return {f.name: md5(folder / f.name) for f in images.MNIST.files}


# ---- readers -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trip(tmp_path, suffix):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"a{suffix}", array)
    assert np.array_equal(images.read_idx(tmp_path / f"a{suffix}"), array)


def test_read_idx_rejects_bad_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float32 magic
    with pytest.raises(UserError, match="magic"):
        images.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated"):
        images.read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="delete it"):
        images.read_idx(tmp_path / "broken.gz")


def test_read_cifar_batches(tmp_path):
    (tmp_path / "b.bin").write_bytes(cifar_batch(7, 0))
    x, y = images.read_cifar_batches([tmp_path / "b.bin"])
    assert x.shape == (7, 3, 32, 32) and x.dtype == np.uint8
    assert y.tolist() == list(range(7)) and y.dtype == np.int64
    records = np.frombuffer(cifar_batch(7, 0), dtype=np.uint8).reshape(7, 3073)
    assert np.array_equal(x[3, 1].ravel(), records[3, 1 + 1024 : 1 + 2048])  # green plane
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(UserError, match="multiple of 3073"):
        images.read_cifar_batches([tmp_path / "odd.bin"])


# ---- loaders from files already in place ----------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_local_files(tmp_path, dead_mirror, gz):
    write_mnist(tmp_path, gz=gz)
    bundle = images.load_mnist(0, root=str(tmp_path), mirror=dead_mirror)  # no download
    spec = bundle.spec
    assert (spec.task, spec.kind, spec.input_shape, spec.n_outputs) == (
        Task.MULTICLASS,
        DataKind.IMAGE,
        (1, 28, 28),
        10,
    )
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (90, 10, N_TEST)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert sorted(bundle.val.y.tolist()) == list(range(10))  # stratified
    # standardised with training statistics only: train centred, (brighter) test not
    assert abs(float(bundle.train.x.mean())) < 1e-4
    assert abs(float(bundle.train.x.std(unbiased=False)) - 1) < 1e-3
    assert float(bundle.test.x.mean()) > 0.3
    _, test_y = labelled(N_TEST, 2)
    assert bundle.test.y.tolist() == test_y.tolist()  # the official test set, in order


def test_same_seed_same_val_split_and_limit(tmp_path, dead_mirror):
    write_mnist(tmp_path)
    a = images.load_mnist(3, root=str(tmp_path), mirror=dead_mirror)
    b = images.load_mnist(3, root=str(tmp_path), mirror=dead_mirror)
    c = images.load_mnist(4, root=str(tmp_path), mirror=dead_mirror)
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    small = images.load_mnist(
        0, root=str(tmp_path), mirror=dead_mirror, limit=40, val_fraction=0.25
    )
    assert (len(small.train), len(small.val), len(small.test)) == (30, 10, N_TEST)
    with pytest.raises(UserError, match="limit"):
        images.load_mnist(0, root=str(tmp_path), mirror=dead_mirror, limit=5)


def test_cifar_from_extracted_batches(tmp_path, dead_mirror):
    folder = tmp_path / images.CIFAR10_DIR
    folder.mkdir()
    for i, name in enumerate((*images.CIFAR10_TRAIN, images.CIFAR10_TEST)):
        (folder / name).write_bytes(cifar_batch(N_TEST, i))
    bundle = images.load_cifar10(0, root=str(tmp_path), mirror=dead_mirror)
    assert bundle.spec.input_shape == (3, 32, 32) and bundle.spec.class_names[0] == "airplane"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (90, 10, N_TEST)
    channel_means = bundle.train.x.mean(dim=(0, 2, 3))
    assert channel_means.abs().max() < 1e-4
    assert len(bundle.meta["pixel_mean"]) == 3


def test_image_configs_instantiate(tmp_path):
    write_mnist(tmp_path / "mnist")
    write_mnist(tmp_path / "fashion_mnist", gz=False)
    write_cifar_archive(tmp_path / "cifar10" / images.CIFAR10_ARCHIVE.name)
    for name, shape in (
        ("mnist", (1, 28, 28)),
        ("fashion_mnist", (1, 28, 28)),
        ("cifar10", (3, 32, 32)),
    ):
        cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}})
        cfg.data = OmegaConf.load(CONFIGS / f"{name}.yaml")
        bundle = instantiate(cfg.data, seed=0)
        assert bundle.spec.input_shape == shape
    assert bundle.spec.class_names[-1] == "truck"


# ---- downloads -------------------------------------------------------------------------


def test_mnist_download_from_mirror_is_verified_and_cached(tmp_path, mirror):
    url, served, requests = mirror
    write_mnist(served)
    root = tmp_path / "data" / "mnist"
    bundle = images.load_mnist(0, root=str(root), mirror=url, checksums=mnist_checksums(served))
    assert len(bundle.test) == N_TEST
    assert sorted(p.name for p in root.iterdir()) == sorted(f.name for f in images.MNIST.files)
    assert len(requests) == 4
    images.load_mnist(0, root=str(root), mirror=url, checksums=mnist_checksums(served))
    assert len(requests) == 4  # present files are not fetched again


def test_checksum_mismatch_deletes_the_download(tmp_path, mirror):
    url, served, _ = mirror
    write_mnist(served)
    wrong = {f.name: "md5:" + "0" * 32 for f in images.MNIST.files}
    root = tmp_path / "mnist"
    with pytest.raises(UserError, match="checksum") as err:
        images.load_mnist(0, root=str(root), mirror=url, checksums=wrong)
    assert "was deleted" in str(err.value)
    assert list(root.iterdir()) == []  # neither the file nor a temporary part is left


def test_network_down_lists_every_file_to_place(tmp_path, dead_mirror):
    root = tmp_path / "mnist"
    write_mnist(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    (root / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UserError) as err:
        images.load_mnist(0, root=str(root), mirror=dead_mirror)
    message = str(err.value)
    assert message.startswith("Could not download mnist")
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f"{dead_mirror}{name}  ->  {root.resolve() / name}" in message
    assert "train-labels" not in message  # files already present are not listed
    assert not list(root.glob(".*part"))


def test_http_error_is_reported_like_network_failure(tmp_path, mirror):
    url, _, requests = mirror  # serves an empty folder: 404 for everything
    with pytest.raises(UserError, match="404") as err:
        images.load_fashion_mnist(0, root=str(tmp_path / "f"), mirror=url)
    assert str(err.value).count("  ->  ") == 4 and len(requests) == 1


def test_cifar_archive_download_and_extraction(tmp_path, mirror):
    url, served, _ = mirror
    archive = served / images.CIFAR10_ARCHIVE.name
    write_cifar_archive(archive)
    sha = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    root = tmp_path / "cifar10"
    bundle = images.load_cifar10(0, root=str(root), mirror=url, checksums={archive.name: sha})
    assert len(bundle.train) + len(bundle.val) == 5 * N_TEST
    assert (root / images.CIFAR10_DIR / "test_batch.bin").stat().st_size == N_TEST * 3073


def test_cifar_archive_without_batches_is_a_user_error(tmp_path, dead_mirror):
    write_cifar_archive(tmp_path / images.CIFAR10_ARCHIVE.name, members=("data_batch_1.bin",))
    with pytest.raises(UserError, match="not a readable CIFAR-10"):
        images.load_cifar10(0, root=str(tmp_path), mirror=dead_mirror)


def test_download_to_unwritable_root_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"data\.root"):
        download("x", blocker / "sub", [RemoteFile("a", "md5:0")], "http://127.0.0.1:1/")


def test_config_mirror_override_reaches_the_downloader(tmp_path, dead_mirror):
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}})
    cfg.data = OmegaConf.load(CONFIGS / "cifar10.yaml")
    cfg.data.mirror = dead_mirror
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.data, seed=0)
    assert isinstance(err.value.__cause__, UserError)
    assert f"{dead_mirror}cifar-10-binary.tar.gz" in str(err.value.__cause__)
