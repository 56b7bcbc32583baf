"""``data=array``: a ``.npy`` / ``.npz`` array of any size and shape, memory-mapped.

``data.path`` holds the inputs (an ``.npz`` names them with ``data.inputs``, default the
first of x, X, inputs, features, data, images), ``data.targets`` the targets: a ``.npy``
file, or a key of the same ``.npz`` (default the first of y, Y, targets, target, labels,
label). The shape decides the kind of data, printed with the override to use:

- (N, F): tabular; (N, T) of integers with ``kind=tokens``: token ids;
- (N, C, H, W) (or channels-last (N, H, W, C), transposed per batch): images;
- (N, H, W): images of one channel when uint8 or square (H = W >= 8), else (N, T, F)
  sequences; ``kind=image|sequence`` decides otherwise.

The targets decide the task (``data.task`` overrides): integers or booleans are classes
(two: binary, more: multiclass; 2-D 0/1: multilabel), floats are regression (standardised
with training statistics; errors are reported in the data's units). Inputs are
standardised per feature (images: per channel, in [0, 1] units for uint8) with exact
statistics of the training rows, from one chunked pass that also refuses NaN or
infinite values anywhere. Rows are read memory-mapped: in memory the arrays are copied
once as float32 tensors, streamed each batch reads only its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.data.folders import class_split, looked_in
from dlrun.data.normalise import CHUNK_ROWS, Moments, Normaliser
from dlrun.data.npyfile import load_whole, npz_keys, open_npy, open_npz_member
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.data.splits import SplitIndices, encode_targets
from dlrun.data.stream import decide_stream, loader_settings, streamed_splits
from dlrun.errors import UserError
from dlrun.tasks import info

INPUT_KEYS = ("x", "X", "inputs", "features", "data", "images")
TARGET_KEYS = ("y", "Y", "targets", "target", "labels", "label")
KINDS = ("auto", "tabular", "image", "sequence", "tokens")
TASKS = ("auto", "multiclass", "binary", "multilabel", "regression")


class ArrayRows:
    """Rows of the inputs, reshaped per batch into what the model takes (a source)."""

    def __init__(self, rows: Any, layout: str) -> None:
        self.rows, self.layout = rows, layout  # MappedRows, or an in-memory ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray) -> tuple[torch.Tensor, None, list]:
        if isinstance(self.rows, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(self.rows[index]))
        else:
            x = self.rows[index][0]
        return reshape(x, self.layout), None, []

    def name(self, row: int) -> str:
        return f"row {row}"


def reshape(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Raw rows -> model layout: ``channel`` adds one, ``nhwc`` moves it, ``flat`` flattens."""
    if layout == "channel":
        return x.unsqueeze(1)
    if layout == "nhwc":
        return x.permute(0, 3, 1, 2).contiguous()
    if layout == "flat":
        return x.reshape(len(x), -1)
    if layout == "tokens":
        return x.long()
    return x


@dataclass(frozen=True)
class _Layout:
    kind: DataKind
    layout: str
    input_shape: tuple[int, ...]
    why: str


def load_array(
    seed: int,
    path: str | None = None,
    targets: str | None = None,
    inputs: str | None = None,
    kind: str = "auto",
    task: str = "auto",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    stream: bool | str = "auto",
    num_workers: int | str = "auto",
    prefetch_factor: int = 2,
) -> DataBundle:
    """Inputs in ``path`` and targets in ``targets`` as a dataset (see the module doc)."""
    if kind not in KINDS or task not in TASKS:
        raise UserError(
            f"data.kind must be one of {', '.join(KINDS)} and data.task one of "
            f"{', '.join(TASKS)} (got {kind!r}, {task!r})."
        )
    file = _file(path)
    rows, y_raw, notes = _open(file, inputs, targets)
    if len(y_raw) != len(rows):
        raise UserError(f"data.path has {len(rows)} rows but data.targets has {len(y_raw)}.")
    shape = _layout_of(rows, kind)
    resolved, labels, class_names = _task(task, y_raw)
    idx = _split(resolved, labels, seed, val_fraction, test_fraction)
    y, n_outputs, target_meta = encode_targets(labels, resolved, idx.train, len(class_names))
    source = ArrayRows(rows, shape.layout)
    normaliser = _fit(source, idx.train, shape.kind)
    held = "int64 token ids" if shape.kind is DataKind.TOKENS else "float32 tensors"
    streamed, how = decide_stream(stream, len(rows) * int(np.prod(shape.input_shape)) * 4, held)
    notes += [shape.why, f"{len(rows):,} rows: {how}"]
    spec = DataSpec(
        name=file.stem,
        task=resolved,
        kind=shape.kind,
        input_shape=shape.input_shape,
        n_outputs=n_outputs,
        class_names=class_names,
        vocab_size=_vocab_size(source, shape.kind),
    )
    preprocess = {"type": "array", "kind": str(shape.kind), "layout": shape.layout}
    preprocess["input_shape"] = list(shape.input_shape)
    if normaliser is not None:
        preprocess.update(normaliser.to_json())
    if class_names:
        preprocess["class_names"] = list(class_names)
    meta = {**target_meta, "preprocess": preprocess, "notes": notes, "skipped": []}
    meta["source"] = {
        "path": str(file),
        "rows": len(rows),
        "split_sizes": [len(idx.train), len(idx.val), len(idx.test)],
    }
    if streamed:
        settings = loader_settings(num_workers, prefetch_factor)
        parts = streamed_splits(source, idx, y, normaliser, settings, meta["skipped"])
        return DataBundle(spec, *parts, meta=meta)
    return DataBundle(spec, *_in_memory(source, y, idx, normaliser), meta=meta)


def _file(path: str | None) -> Path:
    if path is None:
        raise UserError("Set data.path to a .npy or .npz file (and data.targets to the targets).")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise UserError(f"data.path={file} does not exist{looked_in(file)}.")
    if file.suffix.lower() not in (".npy", ".npz"):
        raise UserError(f"data.path={file} is not a .npy or .npz file.")
    return file


def _open(file: Path, inputs: str | None, targets: str | None) -> tuple[Any, np.ndarray, list[str]]:
    """(input rows, targets in memory, notes) from the files and keys the user named."""
    notes: list[str] = []
    if file.suffix.lower() == ".npy":
        if targets is None:
            raise UserError(f"Set data.targets to a .npy file of targets, one per row of {file}.")
        rows: Any = open_npy(file)
    else:
        keys = npz_keys(file)
        key = _pick(inputs, INPUT_KEYS, keys, file, "data.inputs", exclude=targets)
        rows, mapped = open_npz_member(file, key)
        if not mapped:
            notes.append(
                f"{file}[{key}] is compressed, so it was read into memory; save it with "
                "np.save or np.savez (uncompressed) to have it memory-mapped"
            )
        if targets is None or targets in keys:
            target_key = _pick(targets, TARGET_KEYS, keys, file, "data.targets", exclude=key)
            return rows, load_whole(file, target_key), notes
        return (
            rows,
            _target_file(targets, f" nor one of the arrays in {file}: {', '.join(keys)}"),
            notes,
        )
    return rows, _target_file(targets), notes


def _target_file(targets: str | None, nor: str = "") -> np.ndarray:
    target_file = Path(str(targets)).expanduser()
    if not target_file.is_file() or target_file.suffix.lower() != ".npy":
        raise UserError(f"data.targets={targets} is not a .npy file{nor}.")
    return load_whole(target_file)


def _pick(
    given: str | None,
    names: tuple[str, ...],
    keys: list[str],
    file: Path,
    what: str,
    exclude: str | None,
) -> str:
    """The npz key the user gave, or the first conventional name present."""
    if given is not None:
        if given not in keys:
            raise UserError(f"{what}={given} is not in {file}; it holds: {', '.join(keys)}.")
        return given
    found = [k for k in names if k in keys and k != exclude]
    if not found:
        raise UserError(f"Set {what} to one of the arrays in {file}: {', '.join(keys)}.")
    return found[0]


def _layout_of(rows: Any, kind: str) -> _Layout:
    """What the input shape means (see the module doc), and a line saying so."""
    shape = tuple(rows.shape)
    dtype = np.dtype(rows.dtype)
    sample = shape[1:]
    if len(shape) < 2 or len(shape) > 4:
        raise UserError(f"data.path has shape {shape}; dlrun reads arrays of 2 to 4 dimensions.")
    if kind == "auto":
        kind = _auto_kind(shape, dtype)
    return _layout(kind, shape, dtype, sample)


def _auto_kind(shape: tuple[int, ...], dtype: np.dtype) -> str:
    if len(shape) == 2:
        return "tabular"
    if len(shape) == 4:
        return "image"
    square = shape[1] == shape[2] and shape[1] >= 8
    return "image" if dtype == np.uint8 or square else "sequence"


def _layout(kind: str, shape: tuple[int, ...], dtype: np.dtype, sample: tuple[int, ...]) -> _Layout:
    other = {"image": "sequence", "sequence": "image", "tabular": "tokens", "tokens": "tabular"}
    hint = f" (data.kind={other[kind]} to read it otherwise)" if len(shape) in (2, 3) else ""
    if kind == "tabular":
        flat = int(np.prod(sample))
        layout = "flat" if len(shape) > 2 else "plain"
        return _Layout(
            DataKind.TABULAR, layout, (flat,), f"{shape} {dtype}: tabular, {flat} features{hint}"
        )
    if kind == "tokens":
        if len(shape) != 2 or dtype.kind not in "iub":
            raise UserError(
                f"data.kind=tokens needs a 2-D integer array; data.path is {shape} {dtype}."
            )
        return _Layout(DataKind.TOKENS, "tokens", sample, f"{shape} {dtype}: token ids{hint}")
    if kind == "sequence":
        if len(shape) != 3:
            raise UserError(f"data.kind=sequence needs (N, T, F); data.path is {shape}.")
        return _Layout(
            DataKind.SEQUENCE,
            "plain",
            sample,
            f"{shape} {dtype}: sequences of {shape[1]} steps x {shape[2]} features{hint}",
        )
    if len(shape) == 3:
        return _Layout(
            DataKind.IMAGE,
            "channel",
            (1, *sample),
            f"{shape} {dtype}: images 1x{shape[1]}x{shape[2]}{hint}",
        )
    if len(shape) != 4:
        raise UserError(f"data.kind=image needs (N, H, W) or (N, C, H, W); data.path is {shape}.")
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        chw = (shape[3], shape[1], shape[2])
        return _Layout(
            DataKind.IMAGE, "nhwc", chw, f"{shape} {dtype}: channels-last images, read as {chw}"
        )
    return _Layout(DataKind.IMAGE, "plain", sample, f"{shape} {dtype}: images {sample}")


def _task(task: str, raw: np.ndarray) -> tuple[Task, np.ndarray, tuple[str, ...]]:
    """(task, targets for :func:`_targets`, class names) from the targets' values."""
    y = raw.reshape(len(raw)) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if y.ndim not in (1, 2):
        raise UserError(f"data.targets has shape {raw.shape}; use (N,) or (N, outputs).")
    floats = y.dtype.kind == "f"
    if floats and not np.isfinite(y).all():
        raise UserError(
            f"data.targets holds {int((~np.isfinite(y)).sum())} NaN or infinite values."
        )
    if task == "auto":
        task = (
            ("regression" if floats else "multilabel")
            if y.ndim == 2
            else ("regression" if floats else "classes")
        )
    if task == "regression":
        return Task.REGRESSION, y.astype(np.float64), ()
    if floats and not np.array_equal(y, np.round(y)):
        raise UserError(
            f"data.task={task} needs whole-number targets; these are fractional (use regression)."
        )
    if task == "multilabel" or y.ndim == 2:
        if y.ndim != 2 or not np.isin(y, (0, 1)).all():
            raise UserError("data.task=multilabel needs (N, labels) targets of 0 and 1.")
        return Task.MULTILABEL, y.astype(np.float32), tuple(str(i) for i in range(y.shape[1]))
    values, labels = np.unique(y, return_inverse=True)
    if len(values) < 2:
        raise UserError(
            f"data.targets holds a single class ({values[0]!r}); a classifier needs two or more."
        )
    names = tuple(str(v.item()) for v in values)
    if task == "binary" or (task == "classes" and len(values) == 2):
        if len(values) != 2:
            raise UserError(f"data.task=binary needs two classes; the targets have {len(values)}.")
        return Task.BINARY, labels.astype(np.int64), names
    return Task.MULTICLASS, labels.astype(np.int64), names


def _split(
    task: Task, labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> SplitIndices:
    """Per-class split for classes, a seeded shuffled split otherwise."""
    if info(task).single_label:
        return class_split(labels, seed, val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = max(1, round(len(order) * test_fraction))
    n_val = max(1, round(len(order) * val_fraction))
    if len(order) - n_test - n_val < 1:
        raise UserError(f"data.path has {len(order)} rows: too few for train, val and test.")
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return SplitIndices(np.sort(train), np.sort(val), np.sort(test))


def _fit(source: ArrayRows, train: np.ndarray, kind: DataKind) -> Normaliser | None:
    """Training statistics in one chunked pass over every row (refusing NaN/inf)."""
    if kind is DataKind.TOKENS:
        return None
    axis = 1 if kind is DataKind.IMAGE else -1
    moments = Moments(axis)
    is_train = np.zeros(len(source), dtype=bool)
    is_train[train] = True
    floats = np.dtype(source.rows.dtype).kind == "f"
    for start in range(0, len(source), CHUNK_ROWS):
        index = np.arange(start, min(start + CHUNK_ROWS, len(source)))
        block = source[index][0].numpy()
        if floats and not np.isfinite(block).all():
            bad = index[~np.isfinite(block.reshape(len(block), -1)).all(axis=1)]
            raise UserError(
                f"data.path has {len(bad)}+ rows with NaN or infinite values (first: row "
                f"{bad[0]}); clean or drop them first."
            )
        moments.add(block[is_train[index]])
    scale = 255.0 if np.dtype(source.rows.dtype) == np.uint8 else 1.0
    return moments.normaliser(scale)


def _vocab_size(source: ArrayRows, kind: DataKind) -> int:
    if kind is not DataKind.TOKENS:
        return 0
    low, high = 0, 0
    for start in range(0, len(source), CHUNK_ROWS):
        block = source[np.arange(start, min(start + CHUNK_ROWS, len(source)))][0]
        low, high = min(low, int(block.min())), max(high, int(block.max()))
    if low < 0:
        raise UserError("data.kind=tokens needs token ids >= 0; data.path has negative values.")
    return high + 1


def _in_memory(
    source: ArrayRows, y: torch.Tensor, idx: SplitIndices, normaliser: Normaliser | None
) -> list[Split]:
    """The three splits as tensors, read and standardised chunk by chunk."""
    out = []
    for rows in (idx.train, idx.val, idx.test):
        parts = []
        for start in range(0, len(rows), CHUNK_ROWS):
            block = source[rows[start : start + CHUNK_ROWS]][0]
            parts.append(block if normaliser is None else normaliser(block))
        x = torch.cat(parts) if parts else torch.empty(0)
        out.append(Split(x, y[torch.from_numpy(rows)]))
    return out
