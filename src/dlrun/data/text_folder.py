"""``data=text_folder``: ``.txt`` files sorted into class subfolders, for text classifiers.

As Keras' ``text_dataset_from_directory`` followed by ``TextVectorization``: each file
is one document; it is split into word tokens (runs of letters/digits, and each
punctuation mark; lower-cased by default) or characters (``tokens=char``), and mapped
to ids with a vocabulary built on the training split only (the ``max_vocab`` most
frequent tokens seen at least ``min_count`` times; ties in alphabetical order). Id 0 is
padding, id 1 stands for any token outside the vocabulary. Documents are cut to
``max_length`` tokens (or to the longest training document, when shorter) and padded
on the right; their true lengths travel in ``Split.lengths``, which the token models
(cnn1d, rnn/lstm/gru, gpt) use to ignore the padding.

Files that are not text (NUL bytes), hold no tokens, or cannot be read are skipped and
named; files that are not valid UTF-8 are read with replacement characters and counted
in the notes. The vocabulary and settings are saved as ``preprocess.json``;
:func:`encode_documents` (or :func:`encode_text`, one text) turns new text into the
same ids.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import torch

from dlrun.data.folders import (
    Folder,
    class_targets,
    folder_meta,
    n_class_outputs,
    scan,
    without_rows,
)
from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split
from dlrun.data.splits import SplitIndices
from dlrun.data.stream import decide_stream, loader_settings, streamed_splits
from dlrun.data.table import Encoded
from dlrun.errors import UserError

TEXT_EXTENSIONS = (".txt",)
WORD_PATTERN = r"\w+|[^\w\s]"
PAD, UNK = "<pad>", "<unk>"


class TextError(Exception):
    """A file that cannot be used as a document; the message says why."""


def load_text_folder(
    seed: int,
    root: str | None = None,
    tokens: str = "word",
    lowercase: bool = True,
    max_length: int = 256,
    max_vocab: int = 20000,
    min_count: int = 1,
    positive_class: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    stream: bool | str = "auto",
    num_workers: int | str = "auto",
    prefetch_factor: int = 2,
) -> DataBundle:
    """Text files in class folders under ``root``: a TOKENS classification dataset."""
    if tokens not in ("word", "char"):
        raise UserError(f"data.tokens must be word or char (got {tokens!r}).")
    folder = scan(root, TEXT_EXTENSIONS, "text")
    idx = folder.split(seed, val_fraction, test_fraction)
    settings = loader_settings(num_workers, prefetch_factor)
    rules = {"tokens": tokens, "lowercase": bool(lowercase), "pattern": WORD_PATTERN}
    streamed, how = decide_stream(stream, len(folder) * max_length * 8, "int64 token ids")
    reading = _read_all(folder, idx.train if streamed else np.arange(len(folder)), rules)
    idx = without_rows(idx, list(reading.bad))
    if not len(idx.train):
        raise UserError(f"data.root={folder.root} has no readable training documents.")
    vocab = build_vocab([reading.docs[r] for r in idx.train], max_vocab, min_count)
    longest = max(len(reading.docs[r]) for r in idx.train)
    preprocess = {**rules, "vocab": list(vocab), "max_length": min(max_length, longest)}
    preprocess.update(pad_id=0, unk_id=1, type="text")
    notes = [*folder.notes, f"{len(folder):,} documents, vocabulary of {len(vocab):,}: {how}"]
    notes += reading.notes(preprocess["max_length"])
    skipped = folder.skipped + [
        {"path": folder.paths[r], "reason": why} for r, why in reading.bad.items()
    ]
    task, y, names = class_targets(folder.labels, folder.class_names, positive_class)
    spec = DataSpec(
        name=folder.root.name,
        task=task,
        kind=DataKind.TOKENS,
        input_shape=(preprocess["max_length"],),
        n_outputs=n_class_outputs(task, names),
        class_names=names,
        vocab_size=len(vocab),
        vocab=vocab,
    )
    meta = folder_meta(folder, idx, notes, skipped, preprocess, names, "text")
    if not streamed:
        return DataBundle(spec, *_in_memory(reading.docs, y, idx, preprocess), meta=meta)
    source = TextFiles(folder.paths, preprocess)
    return DataBundle(spec, *streamed_splits(source, idx, y, None, settings, skipped), meta=meta)


def tokenize(text: str, rules: dict[str, Any]) -> list[str]:
    """Words (``\\w+`` runs and single punctuation marks) or characters of ``text``."""
    if rules.get("lowercase", True):
        text = text.lower()
    if rules["tokens"] == "char":
        return list(text)
    return re.findall(rules.get("pattern", WORD_PATTERN), text)


def build_vocab(docs: list[list[str]], max_vocab: int, min_count: int) -> tuple[str, ...]:
    """``<pad>``, ``<unk>``, then the most frequent training tokens (ties alphabetical)."""
    if max_vocab < 3 or min_count < 1:
        raise UserError(
            f"data.max_vocab must be >= 3 and data.min_count >= 1 (got {max_vocab}, {min_count})."
        )
    counts = Counter(token for doc in docs for token in doc)
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return (PAD, UNK, *ranked[: max_vocab - 2])


def encode_text(text: str, preprocess: dict[str, Any]) -> tuple[np.ndarray, int]:
    """New text as the run saw its documents: ``(ids padded to max_length, length)``."""
    encoded = encode_documents(preprocess, [text])
    assert encoded.lengths is not None
    return encoded.x[0], int(encoded.lengths[0])


def encode_documents(preprocess: dict[str, Any], texts: list[str]) -> Encoded:
    """New documents for a run of ``data=text_folder``: ids (N, max_length) and lengths,
    each text tokenised and cut as training did; the fallbacks are named in the notes."""
    lookup = {token: i for i, token in enumerate(preprocess["vocab"])}
    length = int(preprocess["max_length"])
    x = np.zeros((len(texts), length), dtype=np.int64)
    lengths = np.ones(len(texts), dtype=np.int64)
    cut = unknown = total = 0
    for row, text in enumerate(texts):
        tokens = tokenize(text, preprocess)
        if not tokens:
            raise UserError(f"text {row + 1} has no {preprocess['tokens']} tokens: {text[:40]!r}")
        x[row], lengths[row] = _encode(tokens, lookup, length)
        cut += len(tokens) > length
        unknown += sum(t not in lookup for t in tokens[:length])
        total += min(len(tokens), length)
    notes = []
    if unknown:
        notes.append(f"{unknown} of {total} tokens are not in the run's vocabulary (<unk>)")
    if cut:
        notes.append(f"{cut} text(s) longer than {length} tokens: the first {length} are used")
    return Encoded(x, notes, lengths=lengths)


def read_document(path: str) -> tuple[str, bool]:
    """(text, whether it was valid UTF-8); :class:`TextError` when it isn't a document."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise TextError(f"cannot read ({err.strerror or err})") from err
    if b"\x00" in data:
        raise TextError("not a text file (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def document_tokens(path: str, rules: dict[str, Any]) -> tuple[list[str], bool]:
    """The tokens of one file and whether it was valid UTF-8 (:class:`TextError`: unusable)."""
    text, valid = read_document(path)
    tokens = tokenize(text, rules)
    if not tokens:
        raise TextError("empty: no tokens")
    return tokens, valid


def _encode(tokens: list[str], lookup: dict[str, int], length: int) -> tuple[np.ndarray, int]:
    ids = np.zeros(length, dtype=np.int64)
    kept = tokens[:length]
    ids[: len(kept)] = [lookup.get(t, 1) for t in kept]
    return ids, max(len(kept), 1)


class _Reading:
    """Documents read up front: tokens by row, rows that failed, and what to note."""

    def __init__(self) -> None:
        self.docs: dict[int, list[str]] = {}
        self.bad: dict[int, str] = {}
        self.not_utf8: list[str] = []

    def notes(self, length: int) -> list[str]:
        out = []
        longer = sum(len(doc) > length for doc in self.docs.values())
        if longer:
            out.append(f"{longer:,} documents are longer than {length} tokens: cut to their start")
        if self.not_utf8:
            names = ", ".join(self.not_utf8[:5]) + (" ..." if len(self.not_utf8) > 5 else "")
            out.append(
                f"{len(self.not_utf8)} file(s) are not valid UTF-8 and were read with "
                f"replacement characters: {names}"
            )
        return out


def _read_all(folder: Folder, rows: np.ndarray, rules: dict[str, Any]) -> _Reading:
    reading = _Reading()
    for row in rows:
        path = folder.paths[int(row)]
        try:
            tokens, valid = document_tokens(path, rules)
        except TextError as err:
            reading.bad[int(row)] = str(err)
            continue
        if not valid:
            reading.not_utf8.append(path)
        reading.docs[int(row)] = tokens
    return reading


def _in_memory(
    docs: dict[int, list[str]], y: torch.Tensor, idx: SplitIndices, preprocess: dict[str, Any]
) -> list[Split]:
    lookup = {token: i for i, token in enumerate(preprocess["vocab"])}
    out = []
    for rows in (idx.train, idx.val, idx.test):
        encoded = [_encode(docs[int(r)], lookup, preprocess["max_length"]) for r in rows]
        x = np.zeros((len(rows), preprocess["max_length"]), dtype=np.int64)
        for i, (ids, _) in enumerate(encoded):
            x[i] = ids
        lengths = torch.tensor([n for _, n in encoded], dtype=torch.int64)
        out.append(Split(torch.from_numpy(x), y[torch.from_numpy(rows)], lengths))
    return out


class TextFiles:
    """A streamed source of text documents encoded with a saved vocabulary."""

    def __init__(self, paths: list[str], preprocess: dict[str, Any]) -> None:
        self.paths, self.preprocess = paths, preprocess
        self._lookup: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lookup": None}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
        if self._lookup is None:
            self._lookup = {t: i for i, t in enumerate(self.preprocess["vocab"])}
        length = int(self.preprocess["max_length"])
        x = np.zeros((len(rows), length), dtype=np.int64)
        lengths = np.ones(len(rows), dtype=np.int64)
        bad: list[tuple[int, str]] = []
        for i, row in enumerate(rows):
            try:
                tokens, _ = document_tokens(self.paths[int(row)], self.preprocess)
            except TextError as err:
                bad.append((i, str(err)))
                continue
            x[i], lengths[i] = _encode(tokens, self._lookup, length)
        return torch.from_numpy(x), torch.from_numpy(lengths), bad

    def name(self, row: int) -> str:
        return self.paths[row]
