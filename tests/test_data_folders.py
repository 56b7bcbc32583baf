"""data=image_folder and data=text_folder on folders the tests write: every bad case.

Each bad case of the issue ends in one clear error or a documented handling that names
the file (``meta["skipped"]``, printed and reported), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.data.folders import class_split
from dlrun.data.image_folder import load_image_folder
from dlrun.data.spec import DataKind, Task
from dlrun.data.text_folder import encode_text, load_text_folder
from dlrun.errors import UserError
from tests.conftest import run_in_process
from tests.owndata import FORMATS, truncate, write_images, write_texts

MEMORY = {"stream": False, "num_workers": 0}


def test_every_format_mixed_sizes_and_classes_in_sorted_order(tmp_path: Path) -> None:
    root = write_images(
        tmp_path / "pets",
        {"dog": 12, "cat": 12, "fox": 12},
        formats=FORMATS,
        sizes=[(12, 12), (20, 9), (7, 15)],
    )
    bundle = load_image_folder(0, root=str(root), size=10, **MEMORY)
    assert bundle.spec.kind is DataKind.IMAGE and bundle.spec.task is Task.MULTICLASS
    assert bundle.spec.class_names == ("cat", "dog", "fox")
    assert bundle.spec.input_shape == (3, 10, 10)
    assert bundle.train.x.shape[1:] == (3, 10, 10) and bundle.train.x.dtype == torch.float32
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 36
    assert bundle.meta["skipped"] == []
    # standardised with training statistics, per channel
    mean = bundle.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4)
    pre = bundle.meta["preprocess"]
    assert pre["size"] == [10, 10] and pre["channels"] == 3 and pre["scale"] == 255.0
    assert len(pre["mean"]) == len(pre["std"]) == 3
    json.dumps(bundle.meta)  # everything a run saves of it is JSON


def test_grayscale_folders_give_one_channel_and_channels_can_be_forced(tmp_path: Path) -> None:
    root = write_images(tmp_path / "g", {"a": 6, "b": 6}, mode="L", formats=("png", "bmp"))
    gray = load_image_folder(0, root=str(root), size=8, **MEMORY)
    assert gray.spec.input_shape == (1, 8, 8)
    forced = load_image_folder(0, root=str(root), size=8, channels=3, **MEMORY)
    assert forced.spec.input_shape == (3, 8, 8)
    # a grayscale file read as RGB has three equal channels
    assert torch.equal(forced.train.x[:, 0], forced.train.x[:, 1])


def test_one_colour_image_makes_the_folder_rgb(tmp_path: Path) -> None:
    root = write_images(tmp_path / "g", {"a": 5, "b": 5}, mode="L")
    write_images(tmp_path / "c", {"a": 1}, seed=1)
    (tmp_path / "c" / "a" / "000.png").rename(root / "a" / "colour.png")
    bundle = load_image_folder(0, root=str(root), size=8, **MEMORY)
    assert bundle.spec.input_shape[0] == 3


def test_crop_keeps_the_aspect_instead_of_stretching(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):  # wide images: black left and right thirds, white middle
            pixels = np.zeros((30, 90), dtype=np.uint8)
            pixels[:, 30:60] = 255
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")

    def brightness(crop: bool) -> float:
        bundle = load_image_folder(0, root=str(tmp_path), size=6, crop=crop, **MEMORY)
        pre = bundle.meta["preprocess"]
        assert pre["crop"] is crop and pre["channels"] == 1
        return float((bundle.train.x * pre["std"][0] + pre["mean"][0]).mean())

    assert brightness(crop=True) > 0.9  # the centred square is the white third
    assert brightness(crop=False) < 0.5  # squeezed: the black thirds stay


def test_bad_files_are_skipped_and_named_with_their_reason(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"a": 10, "b": 10})
    truncate(root / "a" / "003.png")
    (root / "b" / "garbage.jpg").write_bytes(b"not an image at all")
    (root / "b" / "notes.txt").write_text("hello")
    (root / "empty").mkdir()
    (root / ".DS_Store").write_bytes(b"\0")
    bundle = load_image_folder(0, root=str(root), size=8, **MEMORY)
    skipped = {Path(s["path"]).name: s["reason"] for s in bundle.meta["skipped"]}
    assert "truncated" in skipped["003.png"] or "unreadable" in skipped["003.png"]
    assert skipped["garbage.jpg"] == "not an image Pillow can read"
    assert skipped["notes.txt"] == "not a supported file type"
    assert ".DS_Store" not in skipped  # hidden files are never data
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 19
    assert bundle.spec.class_names == ("a", "b")  # the empty folder is not a class
    assert any("empty" in note and "ignored" in note for note in bundle.meta["notes"])


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"only": 5}, "only the class 'only'"),
        ({}, "no class folders"),
    ],
)
def test_fewer_than_two_classes_is_one_clear_error(
    tmp_path: Path, counts: dict[str, int], message: str
) -> None:
    root = write_images(tmp_path / "f", counts)
    root.mkdir(exist_ok=True)
    (root / "empty").mkdir()
    with pytest.raises(UserError, match=message):
        load_image_folder(0, root=str(root), **MEMORY)


def test_missing_or_unset_root_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=r"Set data\.root"):
        load_image_folder(0, root=None)
    with pytest.raises(UserError, match=r"does not exist\.$"):
        load_image_folder(0, root=str(tmp_path / "nope"))
    monkeypatch.chdir(tmp_path)  # a saved run evaluated from another folder: say which
    with pytest.raises(UserError, match=f"nope does not exist \\(relative to {tmp_path}\\)"):
        load_image_folder(0, root="nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        load_image_folder(0, root=str(tmp_path / "file"))


def test_a_folder_of_unreadable_images_is_one_clear_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"broken")
    with pytest.raises(UserError, match="No readable training images"):
        load_image_folder(0, root=str(tmp_path), **MEMORY)


def test_heavy_imbalance_keeps_the_rare_class_in_every_split(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"common": 60, "rare": 3})
    bundle = load_image_folder(0, root=str(root), size=8, **MEMORY)
    for split in (bundle.train, bundle.val, bundle.test):
        assert int((split.y == 1).sum()) == 1  # binary: 'rare' is the positive class
    assert bundle.spec.task is Task.BINARY
    assert any("imbalanced" in note for note in bundle.meta["notes"])
    assert bundle.meta["source"]["class_counts"] == {"common": 60, "rare": 3}


def test_a_class_of_one_image_trains_and_is_noted(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"a": 10, "b": 10, "c": 1})
    bundle = load_image_folder(0, root=str(root), size=8, **MEMORY)
    assert int((bundle.train.y == 2).sum()) == 1
    assert any("'c' has only 1" in note for note in bundle.meta["notes"])


def test_two_classes_are_binary_with_a_chosen_positive_class(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"cat": 6, "dog": 8})
    default = load_image_folder(0, root=str(root), size=8, **MEMORY)
    assert default.spec.class_names == ("cat", "dog") and default.spec.n_outputs == 1
    chosen = load_image_folder(0, root=str(root), size=8, positive_class="cat", **MEMORY)
    assert chosen.spec.class_names == ("dog", "cat")
    total = sum(int(s.y.sum()) for s in (chosen.train, chosen.val, chosen.test))
    assert total == 6
    with pytest.raises(UserError, match="not a class folder"):
        load_image_folder(0, root=str(root), positive_class="cow", **MEMORY)


def test_presplit_folders_are_used_as_given(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 8, "b": 8})
    write_images(tmp_path / "validation", {"a": 2, "b": 2}, seed=1)
    write_images(tmp_path / "test", {"a": 3, "b": 3}, seed=2)
    bundle = load_image_folder(0, root=str(tmp_path), size=8, **MEMORY)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (16, 4, 6)


def test_a_missing_test_folder_is_carved_from_train(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 10, "b": 10})
    write_images(tmp_path / "val", {"a": 2, "b": 2}, seed=1)
    bundle = load_image_folder(0, root=str(tmp_path), size=8, test_fraction=0.2, **MEMORY)
    assert len(bundle.val) == 4 and len(bundle.test) == 4 and len(bundle.train) == 16
    assert any("test carved from" in note for note in bundle.meta["notes"])


def test_a_class_only_in_test_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 4, "b": 4})
    write_images(tmp_path / "test", {"a": 1, "zebra": 1})
    with pytest.raises(UserError, match="zebra"):
        load_image_folder(0, root=str(tmp_path), **MEMORY)


def test_class_split_is_stratified_seeded_and_never_refuses_a_tiny_class() -> None:
    labels = np.array([0] * 40 + [1] * 3 + [2] * 2 + [3])
    a, b = class_split(labels, 5, 0.15, 0.15), class_split(labels, 5, 0.15, 0.15)
    pairs = zip(a.__dict__.values(), b.__dict__.values(), strict=True)
    assert all(np.array_equal(x, y) for x, y in pairs)
    every = np.sort(np.concatenate([a.train, a.val, a.test]))
    assert np.array_equal(every, np.arange(len(labels)))
    assert [int((labels[a.test] == c).sum()) for c in range(4)] == [6, 1, 1, 0]
    assert [int((labels[a.val] == c).sum()) for c in range(4)] == [6, 1, 0, 0]
    assert int((labels[a.train] == 3).sum()) == 1


# ------------------------------------------------------------------------ text folders
def test_text_folder_builds_its_vocabulary_on_the_training_split(tmp_path: Path) -> None:
    root = write_texts(tmp_path / "t")
    for seed in range(3):  # a word found in one file: in the vocabulary iff it trains
        (root / "food" / f"99{seed}.txt").write_text(f"zzz{seed} bread")
    bundle = load_text_folder(0, root=str(root), **MEMORY)
    streamed = load_text_folder(0, root=str(root), stream=True, num_workers=0)
    assert streamed.spec == bundle.spec
    spec = bundle.spec
    assert spec.kind is DataKind.TOKENS and spec.class_names == ("food", "sport", "tech")
    assert spec.vocab[:2] == ("<pad>", "<unk>") and spec.vocab_size == len(spec.vocab)
    rows = bundle.meta["source"]["split_sizes"]
    assert rows == [len(bundle.train), len(bundle.val), len(bundle.test)]
    for seed in range(3):
        split = next(
            name
            for name in ("train", "val", "test")
            for row in getattr(streamed, name).rows
            if streamed.train.source.paths[row].endswith(f"99{seed}.txt")
        )
        assert (f"zzz{seed}" in spec.vocab) == (split == "train"), split
    pre = bundle.meta["preprocess"]
    ids, length = encode_text("bread and UNSEENWORD", pre)
    assert length == 3 and ids[2] == 1 and ids[0] == spec.vocab.index("bread")
    assert bundle.train.lengths is not None and int(bundle.train.lengths.max()) <= pre["max_length"]


def test_text_folder_cuts_documents_and_chars_work(tmp_path: Path) -> None:
    root = write_texts(tmp_path / "t")
    words = load_text_folder(0, root=str(root), max_length=5, **MEMORY)
    assert words.spec.input_shape == (5,)
    assert any("longer than 5 tokens" in n for n in words.meta["notes"])
    chars = load_text_folder(0, root=str(root), tokens="char", **MEMORY)
    assert all(len(token) == 1 for token in chars.spec.vocab[2:])
    assert chars.spec.input_shape[0] > words.spec.input_shape[0]


def test_text_folder_skips_binary_and_empty_files_and_notes_bad_utf8(tmp_path: Path) -> None:
    root = write_texts(tmp_path / "t")
    (root / "tech" / "binary.txt").write_bytes(b"\x00\x01\x02data")
    (root / "food" / "blank.txt").write_text("  \n ")
    (root / "sport" / "latin1.txt").write_bytes("caf\xe9 goal".encode("latin-1"))
    (root / "sport" / "image.png").write_bytes(b"\x89PNG")
    bundle = load_text_folder(0, root=str(root), **MEMORY)
    skipped = {Path(s["path"]).name: s["reason"] for s in bundle.meta["skipped"]}
    assert skipped == {
        "binary.txt": "not a text file (it contains NUL bytes)",
        "blank.txt": "empty: no tokens",
        "image.png": "not a supported file type",
    }
    assert any("latin1.txt" in n and "UTF-8" in n for n in bundle.meta["notes"])


def test_text_folder_single_class_is_refused(tmp_path: Path) -> None:
    root = write_texts(tmp_path / "t")
    for other in ("sport", "tech"):
        for file in (root / other).iterdir():
            file.unlink()
    with pytest.raises(UserError, match="only the class 'food'"):
        load_text_folder(0, root=str(root), **MEMORY)


@pytest.mark.parametrize(
    "model",
    [
        ["model=cnn1d"],
        ["model=gru", "model.hidden_size=16"],
        ["model=gpt", "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.pool=mean",
         "model.block_size=32", "data.max_length=32"],
    ],
    ids=["cnn1d", "gru", "gpt"],
)  # fmt: skip
def test_text_classifiers_train_on_a_text_folder(tmp_path: Path, model: list[str]) -> None:
    root = write_texts(tmp_path / "t")
    metrics = run_in_process(
        tmp_path / "run", "data=text_folder", f"data.root={root}", "trainer.epochs=1", *model
    )
    assert metrics["task"] == "multiclass" and metrics["n_test"] > 0
    saved = json.loads((tmp_path / "run" / "preprocess.json").read_text())
    assert saved["type"] == "text" and saved["vocab"][:2] == ["<pad>", "<unk>"]
