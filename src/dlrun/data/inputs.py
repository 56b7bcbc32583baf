"""New data for a trained run: files or JSON values -> the tensors its model takes.

Readers turn each format into raw values (the cells of a CSV, pixels, lines of text, a
series); the run's contract (:mod:`dlrun.data.contract`) then applies the training
preprocessing through the loaders' own encoders, so a new row is encoded exactly as
training encoded its own. Each fallback (a column ignored, an image resized, a category
never seen) is one line in ``notes``; input that can't be used is one :class:`UserError`.

| the run's data | files                                                            |
| -------------- | ---------------------------------------------------------------- |
| table          | CSV with the training columns (target column optional), ``.npy`` |
| image          | a folder of PNG/JPEG (class subfolders give targets), one image, |
|                | ``.npy`` of pixels in [0, 1] or uint8                             |
| text           | ``.txt`` (a text per line), a folder of ``.txt``, CSV ``text``    |
| series         | CSV with the series' columns, ``.npy`` (T,) or (T, F)             |
| sequence       | ``.npy``/``.npz`` (N, T[, F]) + ``lengths``, CSV (a row each)      |
| array          | ``.npy``, or ``.npz`` (``x``, ``y``), rows shaped as in training  |

``data=image_folder``, ``text_folder`` and ``array`` runs read new inputs with their
loader's own code (Pillow decode, crop and resize; whole documents, word or character
tokens; the array layout and its saved statistics), so an input seen in training
becomes the very tensor it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.data.contract import Contract
from dlrun.data.spec import DataKind
from dlrun.data.table import Encoded, columns_used, encode_table, floats
from dlrun.errors import UserError
from dlrun.tasks import Targets, info

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ACCEPTS = {
    "table": "a CSV with the training columns or a .npy of raw features (N, F)",
    "image": "a folder of PNG/JPEG images, one image file, or a .npy of images",
    "text": "a .txt file (one text per line), a folder of .txt files, or a CSV with a "
    "'text' column",
    "series": "a CSV with the series' columns or a .npy of raw values (T,) or (T, F)",
    "sequence": "a .npy/.npz of sequences (N, T[, F]) or a CSV with one sequence per row",
    "raw": "a .npy/.npz of model-ready inputs",
    "array": "a .npy, or a .npz with x (and y for targets), of rows shaped like the "
    "training array's",
}
TEXT_COLUMN = "text"


@dataclass
class Inputs:
    """Model inputs for N rows, what each row is, and the targets of those that have one."""

    x: torch.Tensor
    names: list[str]
    lengths: torch.Tensor | None = None
    y: torch.Tensor | None = None  # targets in training units, of the rows in ``scored``
    scored: np.ndarray | None = None  # indices of the rows that have a target
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def read_inputs(path: Path, contract: Contract) -> Inputs:
    """Read ``path`` (a file or a folder) as new inputs for the run of ``contract``."""
    _check_predictable(contract)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    kind, suffix = contract.kind, path.suffix.lower()
    if path.is_dir() and kind in ("image", "text"):
        return _read_folder(path, contract)
    if suffix in (".npy", ".npz") and path.is_file():
        return _read_array(path, contract)
    if kind == "image" and suffix in IMAGE_SUFFIXES:
        return _images([_image_file(path, contract)], [path.name], contract, None)
    if kind == "text" and suffix == ".txt":
        lines = _text_lines(path)
        return _texts([t for _, t in lines], [f"line {n}" for n, _ in lines], contract, None)
    if suffix in (".csv", ".tsv", ".txt") and kind != "raw" and path.is_file():
        return _read_csv(path, contract)
    raise UserError(f"cannot read {path} for this run: it takes {ACCEPTS[kind]}")


def _check_predictable(contract: Contract) -> None:
    if info(contract.spec.task).per_token:
        raise UserError(
            "this run is a language model: it predicts every next character, not one "
            "answer per input; generate text with dlrun-generate run=<run> prompt=..."
        )
    kind = contract.kind
    if kind not in ACCEPTS:
        raise UserError(
            f"this run's data ({contract.spec.name}) was preprocessed as {kind!r}, which "
            "this version of dlrun cannot repeat on new inputs"
        )


def _image_folder(steps: dict[str, Any]) -> bool:
    """An image state saved by ``data=image_folder`` (decoded, cropped and resized by
    Pillow as the files were), not by a built-in image set."""
    return steps.get("type") == "image" and "input_size" not in steps


def _text_folder(steps: dict[str, Any]) -> bool:
    """A text state saved by ``data=text_folder`` (word or character tokens of whole
    documents), not by the built-in character data."""
    return steps.get("type") == "text" and "max_length" in steps


def from_values(values: Sequence[Any], contract: Contract) -> Inputs:
    """Inputs from JSON values, one per row (a request to the server).

    table: ``{"column": value, ...}`` or the raw features in column order; image: nested
    lists (C, H, W) or (H, W); text: a string; series: the last steps, (T,) or (T, F),
    one forecast each; sequence: (T,) or (T, F); raw: a model-ready nested list.
    """
    _check_predictable(contract)
    kind, names = contract.kind, [str(i) for i in range(len(values))]
    if not values:
        raise UserError("no inputs: send at least one")
    if kind == "table":
        return _encoded(_table_rows(values, contract), names)
    if kind == "image":
        return _images([_array(v, i) for i, v in enumerate(values)], names, contract, None)
    if kind == "text":
        if not all(isinstance(v, str) for v in values):
            raise UserError("each input must be a string of text")
        return _texts(list(values), names, contract, None)
    if kind == "series":
        return _last_windows(values, contract, names)
    if kind == "sequence":
        from dlrun.data.waveforms import encode_waves

        arrays = [_array(v, i) for i, v in enumerate(values)]
        return _encoded(encode_waves(contract.steps, arrays), names)
    if kind == "array":
        return _array_rows(np.stack([_array(v, i) for i, v in enumerate(values)]), contract, names)
    return _raw(np.stack([_array(v, i) for i, v in enumerate(values)]), None, contract, names)


def _array_rows(x: np.ndarray, contract: Contract, names: list[str]) -> Inputs:
    """Rows shaped like a ``data=array`` run's training rows, reshaped and standardised by
    that loader's own code (:func:`dlrun.data.arrays.reshape`, the saved Normaliser)."""
    from dlrun.data.arrays import reshape
    from dlrun.data.normalise import Normaliser

    steps = contract.steps
    row, size = _trained_row(steps), int(np.prod(steps["input_shape"]))
    if x.ndim < 2 or (tuple(x.shape[1:]) != row if row else int(np.prod(x.shape[1:])) != size):
        wanted = f"(N, {', '.join(map(str, row))})" if row else f"(N, ...) of {size} values a row"
        raise UserError(f"inputs have shape {tuple(x.shape)}; the run's rows were {wanted}")
    trained_uint8 = float(steps.get("scale", 1.0)) == 255.0
    if trained_uint8:
        if x.dtype.kind not in "iu" or x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise UserError("the run trained on uint8 pixels: give whole numbers from 0 to 255")
        x = x.astype(np.uint8)
    elif x.dtype.kind == "f" and not np.isfinite(x).all():
        raise UserError("inputs hold NaN or infinite values")
    if steps["layout"] == "tokens":
        _check_token_ids(x, contract.spec.vocab_size)
    tensor = reshape(torch.from_numpy(np.ascontiguousarray(x)), steps["layout"])
    if "mean" in steps:
        tensor = Normaliser.from_json(steps)(tensor)
    return Inputs(tensor, names)


def _array_with_targets(inputs: Inputs, y: np.ndarray | None, contract: Contract) -> Inputs:
    """Targets given as an array (``y`` of a ``.npz``), as ``data=array`` reads them."""
    if y is None:
        return inputs
    y, record = np.asarray(y), info(contract.spec.task)
    if len(y) != len(inputs):
        raise UserError(f"y has {len(y)} rows but x has {len(inputs)}")
    if record.scaled:  # every output column, in the data's units
        inputs.y = _scaled(y.reshape(len(y), -1).astype(np.float64), contract)
        inputs.scored = np.arange(len(y))
        return inputs
    if record.targets is Targets.LABELS:  # 0/1 columns -> label sets
        names = contract.spec.class_names
        values = ["|".join(names[j] for j in np.flatnonzero(row)) for row in y]
    else:
        values = list(y.reshape(len(y)))
    return _with_targets(inputs, values, contract)


def _trained_row(steps: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of one row of the training array (None: any shape of that many values)."""
    shape, layout = tuple(steps["input_shape"]), steps["layout"]
    if layout == "channel":
        return shape[1:]
    if layout == "nhwc":
        return (shape[1], shape[2], shape[0])
    return None if layout == "flat" else shape


# --- files --------------------------------------------------------------------------


def _read_folder(folder: Path, contract: Contract) -> Inputs:
    """Images (or .txt files) in ``folder``; class-named subfolders give their targets."""
    suffixes = IMAGE_SUFFIXES if contract.kind == "image" else frozenset({".txt"})
    classes = set(contract.spec.class_names)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    labelled = sorted(p for p in folder.iterdir() if p.is_dir() and p.name in classes)
    targets: list[str] | None = None
    if labelled and not files:
        pairs = [(p, d.name) for d in labelled for p in sorted(d.iterdir())]
        pairs = [(p, name) for p, name in pairs if p.suffix.lower() in suffixes]
        files, targets = [p for p, _ in pairs], [c for _, c in pairs]
    if not files:
        what = "images (PNG/JPEG)" if contract.kind == "image" else ".txt files"
        raise UserError(f"{folder} holds no {what} (or class subfolders of them)")
    names = [str(p.relative_to(folder)) for p in files]
    if contract.kind == "image":
        return _images([_image_file(p, contract) for p in files], names, contract, targets)
    return _texts([_text_file(p, contract) for p in files], names, contract, targets)


def _image_file(path: Path, contract: Contract) -> np.ndarray:
    """An image file as the run's loader read its own: ``data=image_folder`` decodes,
    crops and resizes with Pillow exactly as in training; a built-in set's run takes
    the pixels as they are (resized later, if need be, as its images were)."""
    steps = contract.steps
    if not _image_folder(steps):
        return _read_image(path)
    from dlrun.data.imagefile import ImageError, decode

    try:
        return decode(str(path), int(steps["size"][0]), bool(steps["crop"]), steps["channels"])
    except ImageError as exc:
        raise UserError(f"{path}: {exc}") from None


def _text_file(path: Path, contract: Contract) -> str:
    """A .txt file's text: a whole document as ``data=text_folder`` read its own."""
    if not _text_folder(contract.steps):
        return path.read_text(encoding="utf-8", errors="replace").strip()
    from dlrun.data.text_folder import TextError, read_document

    try:
        return read_document(str(path))[0]
    except TextError as exc:
        raise UserError(f"{path}: {exc}") from None


def _read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (C, H, W): grey stays one channel, colour becomes RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = "L" if image.mode in ("L", "1", "I", "I;16", "F") else "RGB"
            pixels = np.asarray(image.convert(mode))
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"{path} is not a readable image ({type(exc).__name__})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-empty lines of a UTF-8 file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} as UTF-8 text ({type(exc).__name__})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise UserError(f"{path} has no text")
    return lines


def _read_csv(path: Path, contract: Contract) -> Inputs:
    from dlrun.data.csvfile import read_csv

    table = read_csv(str(path))
    kind, target = contract.kind, _target_column(contract)
    if kind == "sequence":  # a row per sequence, its steps left to right, then blanks
        cells = [[table.columns[h][i] for h in table.header] for i in range(len(table))]
        steps = [[c for c in row if not _missing(c)] for row in cells]
        sequences = [floats(row, f"row {i + 1}") for i, row in enumerate(steps)]
        return _read_array_values(sequences, contract)
    needed = [TEXT_COLUMN] if kind == "text" else _columns_needed(contract)
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise UserError(
            f"{path} lacks column(s) the model was trained on: {', '.join(missing)} "
            f"(it has: {', '.join(table.header)})"
        )
    extra = [c for c in table.header if c not in needed and c != target]
    names = [f"row {i}" for i in range(1, len(table) + 1)]
    targets = table.columns.get(target) if target else None
    if kind == "text":
        inputs = _texts(table.columns[TEXT_COLUMN], names, contract, targets)
    elif kind == "series":
        values = np.column_stack([floats(table.columns[c], c) for c in needed])
        inputs = _series(values, contract)
    else:
        encoded = encode_table(contract.steps, {c: table.columns[c] for c in needed})
        inputs = _with_targets(_encoded(encoded, names), targets, contract)
    if extra:
        inputs.notes.append(f"column(s) the model does not use were ignored: {', '.join(extra)}")
    return inputs


def _columns_needed(contract: Contract) -> list[str]:
    steps = contract.steps
    return list(steps["columns"]) if contract.kind == "series" else columns_used(steps)


def _target_column(contract: Contract) -> str | None:
    """The CSV column that holds targets (tables: the training target; text: ``target``)."""
    if contract.kind == "table":
        return contract.steps.get("target")
    return "target" if contract.kind == "text" else None


def _read_array(path: Path, contract: Contract) -> Inputs:
    """A ``.npy`` (inputs) or ``.npz`` (``x``, optional ``y`` and ``lengths``)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = dict(loaded) if path.suffix.lower() == ".npz" else {"x": loaded}
    except (OSError, ValueError) as exc:  # object arrays would need pickle: refused
        raise UserError(f"{path} is not a numeric .npy/.npz ({exc})") from None
    if "x" not in arrays and contract.kind == "array":  # the names data=array reads
        from dlrun.data.arrays import INPUT_KEYS, TARGET_KEYS

        found = [k for k in INPUT_KEYS if k in arrays][:1] + [
            k for k in TARGET_KEYS if k in arrays
        ][:1]
        arrays = {**arrays, **dict(zip(("x", "y"), (arrays[k] for k in found), strict=False))}
    if "x" not in arrays:
        raise UserError(f"{path} has no array named 'x' (it has: {', '.join(arrays)})")
    x, lengths = arrays["x"], arrays.get("lengths")
    if contract.kind == "array":
        inputs = _array_rows(x, contract, [f"row {i}" for i in range(1, len(x) + 1)])
        return _array_with_targets(inputs, arrays.get("y"), contract)
    if contract.kind == "sequence":
        rows = list(x) if lengths is None else [r[:n] for r, n in zip(x, lengths, strict=True)]
        return _read_array_values(rows, contract, arrays.get("y"))
    inputs = _from_array(x, lengths, contract)
    if arrays.get("y") is not None and contract.kind != "series":
        inputs = _with_targets(inputs, list(arrays["y"]), contract)
    return inputs


def _from_array(x: np.ndarray, lengths: np.ndarray | None, contract: Contract) -> Inputs:
    kind = contract.kind
    if kind == "table":
        rows = x.reshape(1, -1) if x.ndim == 1 else x
        names = [f"row {i}" for i in range(1, len(rows) + 1)]
        return _encoded(_table_rows(list(rows), contract), names)
    if kind == "image":
        channels = contract.steps["channels"]
        batch = x[None] if x.ndim == 2 or (x.ndim == 3 and channels > 1) else x
        images = batch if batch.ndim == 4 else list(batch)
        return _images(images, _numbered(len(batch)), contract, None)
    if kind == "text":
        if x.dtype.kind == "U":
            return _texts([str(t) for t in x.reshape(-1)], _numbered(x.size), contract, None)
        return _raw(x.astype(np.int64), lengths, contract, _numbered(len(x)))
    if kind == "series":
        return _series(x.reshape(len(x), -1).astype(np.float64), contract)
    return _raw(x, lengths, contract, _numbered(len(x)))


def _read_array_values(
    sequences: list[np.ndarray], contract: Contract, y: np.ndarray | None = None
) -> Inputs:
    from dlrun.data.waveforms import encode_waves

    inputs = _encoded(encode_waves(contract.steps, sequences), _numbered(len(sequences)))
    return inputs if y is None else _with_targets(inputs, list(y), contract)


# --- encoders -----------------------------------------------------------------------


def _encoded(encoded: Encoded, names: list[str]) -> Inputs:
    x = torch.from_numpy(np.ascontiguousarray(encoded.x))
    lengths = None if encoded.lengths is None else torch.from_numpy(encoded.lengths)
    return Inputs(x, names, lengths, notes=list(encoded.notes))


def _images(images: Any, names: list[str], contract: Contract, targets: list | None) -> Inputs:
    """Standardised as in training. An image_folder state is the same arithmetic as a
    built-in set's (per channel, [0, 1] units) whose model input is the image size."""
    from dlrun.data.pixels import encode_images

    state = {"input_size": contract.steps.get("size"), **contract.steps}
    return _with_targets(_encoded(encode_images(state, images), names), targets, contract)


def _texts(texts: list[str], names: list[str], contract: Contract, targets: list | None) -> Inputs:
    if _text_folder(contract.steps):
        from dlrun.data.text_folder import encode_documents

        encoded = encode_documents(contract.steps, texts)
    else:
        from dlrun.data.text import encode_lines

        encoded = encode_lines(contract.steps, texts)
    return _with_targets(_encoded(encoded, names), targets, contract)


def _series(values: np.ndarray, contract: Contract) -> Inputs:
    """Every window of one series; the rows whose next steps are known get targets."""
    from dlrun.data.series import encode_series

    encoded = encode_series(contract.steps, values)
    window = contract.steps["window"]
    names = [f"after step {window + i}" for i in range(len(encoded.x))]
    inputs = _encoded(encoded, names)
    if encoded.y is not None and len(encoded.y):
        inputs.y = torch.from_numpy(encoded.y)
        inputs.scored = np.arange(len(encoded.y))
    return inputs


def _last_windows(values: Sequence[Any], contract: Contract, names: list[str]) -> Inputs:
    """One forecast per series: the one after its last step."""
    columns = contract.steps["columns"]
    parts = []
    for i, value in enumerate(values):
        if isinstance(value, dict):
            missing = [c for c in columns if c not in value]
            if missing:
                raise UserError(f"input {i} lacks the series column(s) {', '.join(missing)}")
            value = np.column_stack([floats(value[c], c) for c in columns])
        array = _array(value, i).astype(np.float64)
        parts.append(_series(array.reshape(len(array), -1), contract))
    x = torch.stack([p.x[-1] for p in parts])
    notes = sorted({n for p in parts for n in p.notes})
    return Inputs(x, names, notes=notes)


def _table_rows(rows: Sequence[Any], contract: Contract) -> Encoded:
    """Table rows given as ``{column: value}`` objects or lists of raw features."""
    used = columns_used(contract.steps)
    columns: dict[str, list[Any]] = {c: [] for c in used}
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            missing = [c for c in used if c not in row]
            if missing:
                raise UserError(f"input {i} lacks column(s) {', '.join(missing)}")
            values = [row[c] for c in used]
        else:
            values = list(np.asarray(row).reshape(-1)) if not isinstance(row, list) else row
            if len(values) != len(used):
                raise UserError(
                    f"input {i} has {len(values)} values; the model takes {len(used)} "
                    f"columns: {', '.join(used)}"
                )
        for column, value in zip(used, values, strict=True):
            columns[column].append(value)
    return encode_table(contract.steps, columns)


def _raw(x: np.ndarray, lengths: np.ndarray | None, contract: Contract, names: list) -> Inputs:
    """Model-ready inputs: checked against the training shape and dtype only."""
    spec = contract.spec
    dtype = torch.int64 if spec.kind is DataKind.TOKENS else torch.float32
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise UserError(
            f"inputs have shape {tuple(x.shape)}; the model takes (N, "
            f"{', '.join(map(str, spec.input_shape))})"
        )
    if dtype == torch.int64:
        _check_token_ids(x, spec.vocab_size)
    tensor = torch.as_tensor(np.ascontiguousarray(x)).to(dtype)
    steps = torch.full((len(x),), x.shape[1], dtype=torch.int64) if contract.lengths else None
    given = None if lengths is None else torch.as_tensor(lengths, dtype=torch.int64)
    return Inputs(tensor, names, given if given is not None else steps)


def _check_token_ids(x: np.ndarray, vocab_size: int) -> None:
    if x.min(initial=0) < 0 or x.max(initial=0) >= vocab_size:
        raise UserError(f"token ids must lie in [0, {vocab_size})")


def _with_targets(inputs: Inputs, targets: Sequence[Any] | None, contract: Contract) -> Inputs:
    """Attach the rows' targets (names, values in original units, ``a|b`` label sets)."""
    if targets is None:
        return inputs
    rows = [i for i, t in enumerate(targets) if not _missing(t)]
    if len(rows) < len(targets):
        inputs.notes.append(f"{len(targets) - len(rows)} row(s) without a target are not scored")
    if rows:
        inputs.y = encode_targets(contract, [targets[i] for i in rows])
        inputs.scored = np.array(rows)
    return inputs


def encode_targets(contract: Contract, values: Sequence[Any]) -> torch.Tensor:
    """Targets in the units the model was trained in (class ids, 0/1, scaled values)."""
    spec, record = contract.spec, info(contract.spec.task)
    if record.scaled:
        column = np.array([floats([v], "target")[0] for v in values]).reshape(len(values), -1)
        return _scaled(column, contract)
    lookup = _class_lookup(spec.class_names)
    if record.targets is Targets.LABELS:
        hot = np.zeros((len(values), spec.n_outputs), dtype=np.float32)
        for row, value in enumerate(values):
            for label in str(value).split("|"):
                if label.strip():
                    hot[row, _class_index(lookup, label, spec.class_names)] = 1.0
        return torch.from_numpy(hot)
    codes = [_class_index(lookup, v, spec.class_names) for v in values]
    dtype = torch.float32 if record.targets is Targets.BINARY else torch.int64
    return torch.tensor(codes, dtype=dtype)


def _scaled(column: np.ndarray, contract: Contract) -> torch.Tensor:
    """Regression targets (N, outputs) in the units the model trained on."""
    scaler = contract.meta.get("target_scaler")
    if scaler:
        column = (column - np.array(scaler["mean"])) / np.array(scaler["std"])
    return torch.from_numpy(column.astype(np.float32))


def _class_lookup(names: Sequence[str]) -> dict[str, int]:
    return {str(name): i for i, name in enumerate(names)}


def _class_index(lookup: dict[str, int], value: Any, names: Sequence[str]) -> int:
    """A target given by class name (numbers are matched as ``1`` or ``1.0``)."""
    text = str(value).strip()
    if text not in lookup:
        with contextlib.suppress(ValueError):
            text = format(float(text), "g")
    if text not in lookup:
        raise UserError(f"target {value!r} is not a class the model knows: {', '.join(names)}")
    return lookup[text]


# --- small helpers ------------------------------------------------------------------


def _array(value: Any, index: int) -> np.ndarray:
    """A JSON value as a numeric array; ragged or non-numeric lists are refused."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise UserError(f"input {index} is ragged: every row must have the same length") from None
    if array.dtype.kind not in "biuf":
        raise UserError(f"input {index} must hold numbers, got {array.dtype.name} values")
    return array


def _missing(value: Any) -> bool:
    from dlrun.data.csvfile import is_missing

    return value is None or (isinstance(value, str) and is_missing(value))


def _numbered(n: int) -> list[str]:
    return [f"item {i}" for i in range(n)]
