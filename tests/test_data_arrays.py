"""data=array: .npy / .npz of any shape, memory-mapped, with the task read from the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.data.arrays import load_array
from dlrun.data.npyfile import open_npz_member
from dlrun.data.spec import DataKind, Task
from dlrun.data.stream import MappedRows, StreamedSplit
from dlrun.errors import UserError
from tests.conftest import run_in_process

RNG = np.random.default_rng(0)


def save(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return str(tmp_path / "x.npy"), str(tmp_path / "y.npy")


@pytest.mark.parametrize(
    ("shape", "dtype", "kind", "input_shape"),
    [
        ((60, 7), np.float32, DataKind.TABULAR, (7,)),
        ((60, 12, 12), np.uint8, DataKind.IMAGE, (1, 12, 12)),
        ((60, 10, 10), np.float64, DataKind.IMAGE, (1, 10, 10)),
        ((60, 25, 3), np.float32, DataKind.SEQUENCE, (25, 3)),
        ((60, 3, 9, 9), np.uint8, DataKind.IMAGE, (3, 9, 9)),
        ((60, 9, 9, 3), np.uint8, DataKind.IMAGE, (3, 9, 9)),  # channels-last
    ],
    ids=["tabular", "gray-uint8", "square-float", "sequence", "nchw", "nhwc"],
)
def test_the_shape_decides_the_kind(
    tmp_path: Path, shape: tuple[int, ...], dtype: type, kind: DataKind, input_shape: tuple
) -> None:
    x = (RNG.random(shape) * 200).astype(dtype)
    path, targets = save(tmp_path, x, np.arange(60) % 3)
    bundle = load_array(0, path=path, targets=targets, stream=False)
    assert bundle.spec.kind is kind and bundle.spec.input_shape == input_shape
    assert bundle.train.x.shape[1:] == input_shape
    assert any(str(shape) in note for note in bundle.meta["notes"])
    axis = (0, 2, 3) if kind is DataKind.IMAGE else tuple(range(bundle.train.x.dim() - 1))
    assert torch.allclose(bundle.train.x.mean(dim=axis), torch.zeros(1), atol=1e-4)
    json.dumps(bundle.meta)


def test_channels_last_rows_are_transposed_not_reinterpreted(tmp_path: Path) -> None:
    x = np.zeros((30, 5, 6, 3), dtype=np.uint8)
    x[..., 2] = 255  # only the third channel is lit
    path, targets = save(tmp_path, x, np.arange(30) % 2)
    bundle = load_array(0, path=path, targets=targets, stream=False)
    pre = bundle.meta["preprocess"]
    assert pre["layout"] == "nhwc" and bundle.spec.input_shape == (3, 5, 6)
    assert pre["mean"] == [0.0, 0.0, 1.0]


def test_kind_can_be_forced(tmp_path: Path) -> None:
    path, targets = save(tmp_path, RNG.random((40, 16, 16)), np.arange(40) % 2)
    bundle = load_array(0, path=path, targets=targets, kind="sequence", stream=False)
    assert bundle.spec.kind is DataKind.SEQUENCE and bundle.spec.input_shape == (16, 16)
    flat = load_array(0, path=path, targets=targets, kind="tabular", stream=False)
    assert flat.spec.input_shape == (256,)
    ids, _ = save(tmp_path, RNG.integers(0, 50, (40, 8)), np.arange(40) % 2)
    tokens = load_array(0, path=ids, targets=targets, kind="tokens", stream=False)
    assert tokens.spec.kind is DataKind.TOKENS and tokens.spec.vocab_size == 50
    assert tokens.train.x.dtype == torch.int64


@pytest.mark.parametrize(
    ("y", "task", "given", "n_outputs"),
    [
        (np.arange(60) % 4, Task.MULTICLASS, "auto", 4),
        (np.arange(60) % 2 == 0, Task.BINARY, "auto", 1),
        (np.array([3, 7] * 30), Task.BINARY, "auto", 1),
        (RNG.normal(size=60), Task.REGRESSION, "auto", 1),
        (RNG.normal(size=(60, 2)), Task.REGRESSION, "auto", 2),
        (RNG.integers(0, 2, (60, 3)), Task.MULTILABEL, "auto", 3),
        ((np.arange(60) % 3).astype(np.float32), Task.MULTICLASS, "multiclass", 3),
        (np.arange(60) % 3, Task.REGRESSION, "regression", 1),
    ],
    ids=["ints", "bools", "two-values", "floats", "2-outputs", "multilabel", "forced-classes",
         "forced-regression"],
)  # fmt: skip
def test_the_targets_decide_the_task(
    tmp_path: Path, y: np.ndarray, task: Task, given: str, n_outputs: int
) -> None:
    path, targets = save(tmp_path, RNG.random((60, 4)).astype(np.float32), y)
    bundle = load_array(0, path=path, targets=targets, task=given, stream=False)
    assert bundle.spec.task is task and bundle.spec.n_outputs == n_outputs
    if task is Task.REGRESSION:
        assert "target_scaler" in bundle.meta


def test_npz_keys_are_found_by_convention_or_named(tmp_path: Path) -> None:
    x, y = RNG.random((50, 3)), np.arange(50) % 2
    np.savez(tmp_path / "d.npz", features=x, labels=y, extra=np.zeros((50, 2)))
    bundle = load_array(0, path=str(tmp_path / "d.npz"), stream=False)
    assert bundle.spec.input_shape == (3,) and bundle.spec.task is Task.BINARY
    named = load_array(0, path=str(tmp_path / "d.npz"), inputs="extra", targets="labels")
    assert named.spec.input_shape == (2,)
    with pytest.raises(UserError, match=r"not in .*d\.npz; it holds: features, labels, extra"):
        load_array(0, path=str(tmp_path / "d.npz"), inputs="x")
    with pytest.raises(UserError, match=r"y is not a \.npy file nor one of .*: features, labels"):
        load_array(0, path=str(tmp_path / "d.npz"), targets="y")


def test_stored_npz_members_are_memory_mapped_and_compressed_ones_noted(tmp_path: Path) -> None:
    x = RNG.random((40, 6)).astype(np.float32)
    np.savez(tmp_path / "plain.npz", x=x, y=np.arange(40) % 2)
    mapped, is_mapped = open_npz_member(tmp_path / "plain.npz", "x")
    assert is_mapped and isinstance(mapped, MappedRows)
    assert np.array_equal(mapped[np.array([3, 1, 2])][0].numpy(), x[[3, 1, 2]])
    np.savez_compressed(tmp_path / "small.npz", x=x, y=np.arange(40) % 2)
    bundle = load_array(0, path=str(tmp_path / "small.npz"), stream=False)
    assert any("compressed" in note for note in bundle.meta["notes"])
    plain = load_array(0, path=str(tmp_path / "plain.npz"), stream=False)
    assert torch.equal(plain.train.x, bundle.train.x)


def test_streamed_arrays_read_rows_from_the_map(tmp_path: Path) -> None:
    path, targets = save(tmp_path, RNG.random((80, 5)).astype(np.float32), np.arange(80) % 2)
    bundle = load_array(0, path=path, targets=targets, stream=True, num_workers=0)
    assert isinstance(bundle.train, StreamedSplit)
    assert isinstance(bundle.train.source.rows, MappedRows)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((10, 2)), np.zeros(9, dtype=int), "10 rows but data.targets has 9"),
        (np.zeros((10, 2)), np.zeros(10, dtype=int), "single class"),
        (np.array([[1.0, np.nan]] * 10), np.arange(10) % 2, "NaN or infinite"),
        (np.zeros(10), np.arange(10) % 2, "2 to 4 dimensions"),
        (np.zeros((10, 2)), np.array([0.5, 1.0] * 5), None),  # floats: regression, fine
        (np.zeros((10, 2)), np.array([np.nan, 1.0] * 5), "NaN or infinite"),
        (np.array(["a", "b"] * 5).reshape(10, 1), np.arange(10) % 2, "dtype <U1"),
    ],
    ids=["rows", "one-class", "nan-input", "1-d", "ok", "nan-target", "strings"],
)
def test_bad_arrays_are_one_clear_error(
    tmp_path: Path, x: np.ndarray, y: np.ndarray, message: str | None
) -> None:
    path, targets = save(tmp_path, x, y)
    if message is None:
        load_array(0, path=path, targets=targets, stream=False)
        return
    with pytest.raises(UserError, match=message):
        load_array(0, path=path, targets=targets, stream=False)


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    with pytest.raises(UserError, match="Python objects"):
        load_array(0, path=str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy"))


@pytest.mark.parametrize(
    ("path", "targets", "message"),
    [
        (None, None, "Set data.path"),
        ("missing.npy", None, "does not exist"),
        ("x.npy", None, "Set data.targets"),
        ("x.npy", "nope.npy", "is not a .npy file"),
        ("x.csv", None, "not a .npy or .npz"),
    ],
)
def test_missing_files_and_targets_are_one_clear_error(
    tmp_path: Path, path: str | None, targets: str | None, message: str
) -> None:
    save(tmp_path, np.zeros((10, 2)), np.arange(10) % 2)
    (tmp_path / "x.csv").write_text("a,b\n")
    full = None if path is None else str(tmp_path / path)
    target = None if targets is None else str(tmp_path / targets)
    with pytest.raises(UserError, match=message):
        load_array(0, path=full, targets=target)


def test_an_array_run_end_to_end_writes_its_preprocessing(tmp_path: Path) -> None:
    x = RNG.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    path, targets = save(tmp_path, x * 5 + 3, y)
    metrics = run_in_process(
        tmp_path / "run", "model=mlp", "data=array", f"data.path={path}",
        f"data.targets={targets}", "trainer.epochs=2",
    )  # fmt: skip
    assert metrics["task"] == "binary" and metrics["data"]["n_skipped"] == 0
    saved = json.loads((tmp_path / "run" / "preprocess.json").read_text())
    assert saved["type"] == "array" and saved["kind"] == "tabular"
    assert np.allclose(saved["mean"], 3, atol=2) and np.allclose(saved["std"], 5, atol=2)


def test_moments_over_chunks_match_numpy() -> None:
    from dlrun.data.normalise import Moments

    data = RNG.normal(3, 2, size=(1000, 4, 5))
    moments = Moments(axis=-1)
    for start in range(0, 1000, 137):
        moments.add(data[start : start + 137])
    norm = moments.normaliser()
    assert np.allclose(norm.mean, data.reshape(-1, 5).mean(axis=0), rtol=1e-12)
    assert np.allclose(norm.std, data.reshape(-1, 5).std(axis=0), rtol=1e-12)
