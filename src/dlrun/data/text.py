"""Character-level text: a language-modelling corpus and a snippet-classification set.

The default corpus is CPython's own documentation topics (``pydoc_data.topics``, about
465 KB of English and code), which ships with every Python, so both sets work offline
on any machine. Text is split in order (train first, then val, then test) before it is
cut into blocks, so no character appears in two splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.data.splits import temporal_bounds
from dlrun.data.table import Encoded
from dlrun.errors import UserError

SPLITS = ("train", "val", "test")
# Four help topics of similar size (20-25 K characters each) on different subjects.
DEFAULT_TOPICS = ("debugger", "formatstrings", "string-methods", "typesseq")


def load_text(
    seed: int,
    path: str | None = None,
    block_size: int = 64,
    stride: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> DataBundle:
    """Next-character prediction: x = a block of ``block_size`` ids, y = x shifted by one.

    ``path`` is a UTF-8 text file (default: the pydoc topics, joined in sorted topic
    order). ``stride`` (default ``block_size``) spaces the training blocks; smaller
    values overlap them for more samples. Val and test blocks never overlap, so each of
    their characters is predicted once. The seed has no effect (the split is in order).
    ``meta["unigram"]`` holds add-one-smoothed training character frequencies, a
    baseline no character-level model should lose to.
    """
    text, name = _corpus(path)
    vocab = tuple(sorted(set(text)))
    ids = encode(text, vocab)
    a, b = temporal_bounds(len(ids), val_fraction, test_fraction)
    parts = []
    for split, (start, stop) in zip(SPLITS, ((0, a), (a, b), (b, len(ids))), strict=True):
        step = (stride or block_size) if split == "train" else block_size
        chunk = _chunks(ids, start, stop, block_size + 1, step, f"the {split} text")
        parts.append(Split(torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])))
    counts = np.bincount(ids[:a], minlength=len(vocab)) + 1
    meta = {
        "corpus": str(path) if path else "pydoc_data.topics",
        "n_characters": len(ids),
        "unigram": (counts / counts.sum()).tolist(),
    }
    meta["preprocess"] = text_state(vocab, block_size, language_model=True)
    spec = DataSpec(
        name=name,
        task=Task.LANGUAGE_MODEL,
        kind=DataKind.TOKENS,
        input_shape=(block_size,),
        n_outputs=len(vocab),
        vocab_size=len(vocab),
        vocab=vocab,
    )
    return DataBundle(spec, *parts, meta=meta)


def load_text_classes(
    seed: int,
    topics: Sequence[str] = DEFAULT_TOPICS,
    block_size: int = 64,
    stride: int | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataBundle:
    """Which help topic is this snippet from? ``block_size`` characters -> one of ``topics``.

    Each topic's text is split in order into train/val/test stretches and cut into
    snippets inside its stretch, so a test snippet never overlaps a training one.
    ``stride`` (default ``block_size``) spaces training snippets only.
    """
    available = _pydoc_topics()
    topics = tuple(topics)
    unknown = [t for t in topics if t not in available]
    if unknown or len(topics) < 2:
        raise UserError(
            f"data.topics needs at least two of the pydoc topics (unknown: "
            f"{', '.join(unknown) or 'none'}); choose from: "
            f"{', '.join(sorted(available))}."
        )
    texts = [available[t] for t in topics]
    vocab = tuple(sorted(set("".join(texts))))
    xs: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    ys: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label, (topic, text) in enumerate(zip(topics, texts, strict=True)):
        ids = encode(text, vocab)
        a, b = temporal_bounds(len(ids), val_fraction, test_fraction)
        for split, (start, stop) in zip(SPLITS, ((0, a), (a, b), (b, len(ids))), strict=True):
            step = (stride or block_size) if split == "train" else block_size
            chunk = _chunks(ids, start, stop, block_size, step, f"topic {topic!r} ({split})")
            xs[split].append(chunk)
            ys[split].append(np.full(len(chunk), label, dtype=np.int64))
    parts = [
        Split(torch.from_numpy(np.concatenate(xs[s])), torch.from_numpy(np.concatenate(ys[s])))
        for s in SPLITS
    ]
    spec = DataSpec(
        name="text_classes",
        task=Task.MULTICLASS,
        kind=DataKind.TOKENS,
        input_shape=(block_size,),
        n_outputs=len(topics),
        class_names=topics,
        vocab_size=len(vocab),
        vocab=vocab,
    )
    meta = {"corpus": "pydoc_data.topics", "preprocess": text_state(vocab, block_size)}
    return DataBundle(spec, *parts, meta=meta)


def text_state(
    vocab: Sequence[str], block_size: int, language_model: bool = False
) -> dict[str, Any]:
    """What a new text needs to become token ids: the vocabulary and the block length."""
    return {
        "type": "text",
        "vocab": list(vocab),
        "block_size": block_size,
        "language_model": language_model,
    }


def encode_lines(state: dict[str, Any], lines: Sequence[str]) -> Encoded:
    """Token ids (N, block_size), right-padded with id 0, and each line's length.

    A character the model never saw is left out, a line longer than the block keeps
    its first ``block_size`` characters; both fallbacks are named in the notes.
    """
    vocab, block = state["vocab"], state["block_size"]
    lookup = {char: i for i, char in enumerate(vocab)}
    x = np.zeros((len(lines), block), dtype=np.int64)
    lengths = np.zeros(len(lines), dtype=np.int64)
    unknown: set[str] = set()
    cut = 0
    for row, line in enumerate(lines):
        ids = [lookup[c] for c in line if c in lookup]
        unknown.update(c for c in line if c not in lookup)
        if not ids:
            raise UserError(f"text {row + 1} has no character the model knows: {line[:40]!r}")
        cut += len(ids) > block
        ids = ids[:block]
        x[row, : len(ids)] = ids
        lengths[row] = len(ids)
    notes = []
    if unknown:
        shown = "".join(sorted(unknown))[:20]
        notes.append(f"characters the model never saw were left out: {shown!r}")
    if cut:
        notes.append(f"{cut} text(s) longer than {block} characters: the first {block} are used")
    return Encoded(x, notes, lengths=lengths)


def encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    """Characters -> int64 ids (positions in ``vocab``)."""
    lookup = {char: i for i, char in enumerate(vocab)}
    return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))


def _chunks(
    ids: np.ndarray, start: int, stop: int, length: int, stride: int, what: str
) -> np.ndarray:
    """Rows of ``length`` consecutive ids lying wholly inside ``ids[start:stop]``."""
    if stride < 1:
        raise UserError(f"data.stride must be at least 1 (got {stride}).")
    first = np.arange(start, stop - length + 1, stride)
    if len(first) == 0:
        raise UserError(
            f"{what} has {stop - start} characters, fewer than the "
            f"{length} one block needs; lower data.block_size or use more text."
        )
    return ids[first[:, None] + np.arange(length)]


def _corpus(path: str | None) -> tuple[str, str]:
    """(text, dataset name): the file at ``path``, or the pydoc topics when None."""
    if path is None:
        topics = _pydoc_topics()
        return "\n\n".join(topics[key] for key in sorted(topics)), "pydoc_topics"
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"Text file not found: {file} (set data.path to an existing "
            "UTF-8 file, or to null for the bundled corpus)."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"Cannot read {file} as UTF-8 text ({err}).") from err
    return text, file.stem


def _pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise UserError(
            "This Python lacks its bundled pydoc_data module; use a full CPython "
            "install (or, for data=text, set data.path to a UTF-8 file)."
        ) from err
    return topics
