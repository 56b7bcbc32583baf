"""A folder of class subfolders, as Keras' ``*_dataset_from_directory`` reads it.

``root/<class>/<file>`` (split here, stratified and seeded), or ``root/train/<class>/``,
``root/val/<class>/`` and ``root/test/<class>/`` when the user has split already (a
missing ``val`` or ``test`` is carved from ``train``). Files are listed once with their
sizes and modification times (the decoded-image cache is keyed by them), in sorted
order, so a split is a pure function of the folder and the seed.

Nothing is dropped silently: files with other extensions, hidden files and empty class
folders are recorded in :attr:`Folder.skipped` / :attr:`Folder.notes`, which the run
prints and writes into report.md and metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.spec import Task
from dlrun.data.splits import SplitIndices
from dlrun.errors import UserError
from dlrun.tasks import Targets, info

SPLIT_DIRS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val"}


@dataclass
class Folder:
    """The usable files of a class-folder tree, their labels and what was left out."""

    root: Path
    paths: list[str]  # absolute, one per sample
    labels: np.ndarray  # int64 class ids
    class_names: tuple[str, ...]
    stats: list[tuple[int, int]]  # (size in bytes, mtime in ns) per file
    given_split: np.ndarray | None = None  # 0 train, 1 val, 2 test (pre-split folders)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self, *settings: Any) -> str:
        """A key that changes when any file's name, size or mtime, or a setting, does."""
        digest = hashlib.sha256(json.dumps([str(self.root), list(settings)]).encode())
        for path, (size, mtime) in zip(self.paths, self.stats, strict=True):
            digest.update(f"{path}\0{size}\0{mtime}\n".encode())
        return digest.hexdigest()

    def split(self, seed: int, val_fraction: float, test_fraction: float) -> SplitIndices:
        """The user's split when the folder has one, else a stratified, seeded one."""
        if self.given_split is None:
            return class_split(self.labels, seed, val_fraction, test_fraction)
        parts = [np.flatnonzero(self.given_split == i) for i in range(3)]
        train, val, test = parts
        missing = [name for name, part in (("val", val), ("test", test)) if not len(part)]
        if missing:
            carved = class_split(
                self.labels[train],
                seed,
                val_fraction if "val" in missing else 0.0,
                test_fraction if "test" in missing else 0.0,
            )
            self.notes.append(
                f"{' and '.join(missing)} carved from {self.root / 'train'} "
                "(stratified, seeded): the folder has no such subfolder"
            )
            val = val if len(val) else train[carved.val]
            test = test if len(test) else train[carved.test]
            train = train[carved.train]
        return SplitIndices(np.sort(train), np.sort(val), np.sort(test))


def scan(root: str | None, extensions: Iterable[str], what: str) -> Folder:
    """List ``root``'s class folders (or its train/val/test folders of class folders)."""
    base = _root(root, what)
    wanted = {e.lower() for e in extensions}
    skipped: list[dict[str, str]] = []
    split_dirs = _split_dirs(base)
    if split_dirs:
        return _scan_presplit(base, split_dirs, wanted, what, skipped)
    classes, empty = _class_files(base, wanted, skipped)
    folder = _folder(base, classes, skipped, what)
    folder.notes += _empty_notes(empty, what)
    return folder


def class_split(
    labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> SplitIndices:
    """Stratified three-way split that works for any class size.

    Each class is shuffled (seeded) and cut on its own: ``round(n * fraction)`` samples
    to val and test, but at least one each when the class has three or more, so a rare
    class is present in every split. A class of one or two samples cannot be: it goes to
    train (and test, with two); the loaders note it. Unlike scikit-learn's stratified
    splitter this never refuses a class with a single member.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if n >= 3:  # at least one in each split asked for, at least one to train on
            n_test = max(1, n_test) if test_fraction > 0 else 0
            n_val = max(1, n_val) if val_fraction > 0 else 0
            n_val = min(n_val, n - n_test - 1)
        else:
            n_test, n_val = (1 if n == 2 and test_fraction > 0 else 0), 0
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return SplitIndices(train, val, test)


def rare_class_notes(labels: np.ndarray, class_names: tuple[str, ...], what: str) -> list[str]:
    """Lines about classes too small for every split, and about heavy imbalance."""
    counts = np.bincount(labels, minlength=len(class_names))
    notes = [
        f"class {class_names[c]!r} has only {n} {what}(s): it cannot be in every split, so "
        "its validation/test metrics are undefined"
        for c, n in enumerate(counts)
        if 0 < n < 3
    ]
    if len(counts) and counts.min() > 0 and counts.max() >= 10 * counts.min():
        small, big = int(counts.argmin()), int(counts.argmax())
        notes.append(
            f"classes are imbalanced: {class_names[big]!r} has {counts[big]:,} {what}s, "
            f"{class_names[small]!r} {counts[small]:,}; the headline metric is macro F1, "
            "which weighs every class alike (accuracy would reward predicting the largest)"
        )
    return notes


def _root(root: str | None, what: str) -> Path:
    if root is None:
        raise UserError(
            f"Set data.root to a folder with one subfolder of {what} files per class "
            "(or train/, val/, test/ subfolders of class folders)."
        )
    base = Path(str(root)).expanduser()
    if not base.is_dir():
        state = "is not a folder" if base.exists() else "does not exist"
        raise UserError(f"data.root={base} {state}{looked_in(base)}.")
    return base.resolve()


def looked_in(path: Path) -> str:
    """Where a relative path was looked for: a saved run evaluated or resumed from
    another folder reads its data paths relative to that folder."""
    return "" if path.is_absolute() else f" (relative to {Path.cwd()})"


def _split_dirs(base: Path) -> dict[str, Path]:
    """``{"train": ..., "val": ..., "test": ...}`` subfolders present (with aliases)."""
    found: dict[str, Path] = {}
    for entry in _subdirs(base):
        name = SPLIT_ALIASES.get(entry.name.lower(), entry.name.lower())
        if name in SPLIT_DIRS:
            found[name] = entry
    return found if "train" in found else {}


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise UserError(f"Cannot list {folder}: {err.strerror or err}.") from err
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def _class_files(
    base: Path, wanted: set[str], skipped: list[dict[str, str]]
) -> tuple[dict[str, list[tuple[str, int, int]]], list[str]]:
    """Class name -> its files (path, size, mtime_ns), and the empty class folders."""
    classes: dict[str, list[tuple[str, int, int]]] = {}
    empty: list[str] = []
    for folder in _subdirs(base):
        files = _files(folder, wanted, skipped)
        if files:
            classes[folder.name] = files
        else:
            empty.append(str(folder))
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.is_file() and not entry.name.startswith("."):
            skipped.append({"path": entry.path, "reason": "outside any class folder"})
    return classes, empty


def _files(
    folder: Path, wanted: set[str], skipped: list[dict[str, str]]
) -> list[tuple[str, int, int]]:
    """Files under ``folder`` (recursively) with a wanted extension; others recorded."""
    out: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue  # .DS_Store, editor swap files: never data
            if os.path.splitext(name)[1].lower() not in wanted:
                skipped.append({"path": path, "reason": "not a supported file type"})
                continue
            try:
                st = os.stat(path)
            except OSError as err:
                skipped.append({"path": path, "reason": f"cannot stat: {err.strerror}"})
                continue
            out.append((path, st.st_size, st.st_mtime_ns))
    return out


def _raise(err: OSError) -> None:
    raise UserError(f"Cannot list {err.filename}: {err.strerror or err}.")


def _folder(
    base: Path,
    classes: dict[str, list[tuple[str, int, int]]],
    skipped: list[dict[str, str]],
    what: str,
    split_of: dict[str, list[int]] | None = None,
) -> Folder:
    """A :class:`Folder` from class -> files, refusing fewer than two classes."""
    if len(classes) < 2:
        found = f"only the class {next(iter(classes))!r}" if classes else "no class folders"
        raise UserError(
            f"data.root={base} has {found} with {what} files; a classifier needs at least two "
            f"classes: put each class's {what} files in a subfolder named after the class."
        )
    names = tuple(sorted(classes))
    rows = [(*file, label) for label, name in enumerate(names) for file in classes[name]]
    given = None
    if split_of is not None:
        given = np.array([s for n in names for s in split_of[n]], dtype=np.int64)
    return Folder(
        root=base,
        paths=[r[0] for r in rows],
        labels=np.array([r[3] for r in rows], dtype=np.int64),
        class_names=names,
        stats=[(r[1], r[2]) for r in rows],
        given_split=given,
        skipped=skipped,
    )


def _scan_presplit(
    base: Path, dirs: dict[str, Path], wanted: set[str], what: str, skipped: list[dict[str, str]]
) -> Folder:
    """``train/<class>/`` (+ ``val/``, ``test/``): classes come from ``train``."""
    classes: dict[str, list[tuple[str, int, int]]] = {}
    split_of: dict[str, list[int]] = {}
    empty: list[str] = []
    for index, name in enumerate(SPLIT_DIRS):
        if name not in dirs:
            continue
        part, part_empty = _class_files(dirs[name], wanted, skipped)
        empty += part_empty
        unknown = sorted(set(part) - set(classes)) if name != "train" else []
        if unknown:
            raise UserError(
                f"{dirs[name]} has class folders that {dirs['train']} lacks: "
                f"{', '.join(unknown)}; a model can't learn a class it never sees in training."
            )
        for cls, files in part.items():
            classes.setdefault(cls, []).extend(files)
            split_of.setdefault(cls, []).extend([index] * len(files))
    folder = _folder(base, classes, skipped, what, split_of)
    folder.notes += _empty_notes(empty, what)
    return folder


def _empty_notes(empty: list[str], what: str) -> list[str]:
    return [f"class folder {path} has no {what} files: not a class, ignored" for path in empty]


def class_targets(
    labels: np.ndarray, class_names: tuple[str, ...], positive_class: str | None
) -> tuple[Task, Any, tuple[str, ...]]:
    """(task, targets tensor, class names) for class-folder labels.

    Two classes make a binary task (float 0/1 targets, a sigmoid output, precision and
    recall of the positive class): ``positive_class`` names it, by default the second
    folder in sorted order, as ``data=csv`` does. More make a multiclass task.
    """
    import torch

    if len(class_names) != 2:
        if positive_class is not None:
            raise UserError(
                f"data.positive_class is for two classes; this folder has {len(class_names)}."
            )
        return Task.MULTICLASS, torch.from_numpy(labels), class_names
    positive = 1 if positive_class is None else _class_index(class_names, str(positive_class))
    y = (labels == positive).astype(np.float32)
    names = (class_names[1 - positive], class_names[positive])
    return Task.BINARY, torch.from_numpy(y), names


def n_class_outputs(task: Task, names: tuple[str, ...]) -> int:
    """Output units for class targets: one sigmoid for two classes, one per class otherwise."""
    return 1 if info(task).targets is Targets.BINARY else len(names)


def _class_index(class_names: tuple[str, ...], name: str) -> int:
    if name not in class_names:
        raise UserError(
            f"data.positive_class={name!r} is not a class folder; use one of "
            f"{', '.join(class_names)}."
        )
    return class_names.index(name)


def without_rows(idx: SplitIndices, rows: list[int]) -> SplitIndices:
    """``idx`` less the given rows (files found unreadable before training)."""
    if not rows:
        return idx
    drop = np.array(rows, dtype=np.int64)
    return SplitIndices(*(np.setdiff1d(part, drop) for part in (idx.train, idx.val, idx.test)))


def folder_meta(
    folder: Folder,
    idx: SplitIndices,
    notes: list[str],
    skipped: list[dict[str, str]],
    preprocess: dict[str, Any],
    class_names: tuple[str, ...],
    what: str,
) -> dict[str, Any]:
    """``meta`` of a class-folder bundle: what predict needs, what the report says.

    ``preprocess`` (JSON) is written to the run dir as ``preprocess.json``; ``skipped``
    (path, reason) and ``notes`` are printed and go into report.md and metrics.json.
    """
    used = np.concatenate([idx.train, idx.val, idx.test])
    counts = np.bincount(folder.labels[used], minlength=len(folder.class_names))
    return {
        "preprocess": {**preprocess, "class_names": list(class_names)},
        "skipped": skipped,
        "notes": [*notes, *rare_class_notes(folder.labels[used], folder.class_names, what)],
        "source": {
            "root": str(folder.root),
            "files": len(folder),
            "class_counts": dict(zip(folder.class_names, map(int, counts), strict=True)),
            "split_sizes": [len(idx.train), len(idx.val), len(idx.test)],
        },
    }
