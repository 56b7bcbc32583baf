"""Checkpoints: atomic writes, hard-linked copies, loads that never run code.

Written against the mutants mutmut made of ``dlrun.engine.checkpoint`` (``make mutation
MODULE=checkpoint``); docs/testing.md names the few that no test can kill.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dlrun.engine import checkpoint
from dlrun.engine.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from dlrun.errors import UserError


class Payload:
    """Not a tensor or a plain container: a safe load must refuse to rebuild it."""


def test_save_creates_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "last.pt"
    save_checkpoint({"model": {"w": torch.arange(3.0)}, "epoch": 4}, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["model"]["w"], torch.arange(3.0))


def test_save_writes_a_hidden_temp_file_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    """The temp file lies in the target's folder (a rename there is atomic) and is hidden."""
    seen: list[list[str]] = []
    real_save = torch.save

    def spying_save(obj, fh) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_save(obj, fh)

    monkeypatch.setattr(checkpoint.torch, "save", spying_save)
    save_checkpoint({"model": {}}, tmp_path / "last.pt")
    (names,) = seen
    assert len(names) == 1 and names[0].startswith(".last.pt.")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_save_keeps_the_old_checkpoint_and_its_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "epoch": 1}, path)

    def full_disk(obj, fh) -> None:
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left") as raised:
        save_checkpoint({"model": {}, "epoch": 2}, path)
    assert raised.value.errno == 28  # the disk's error, not one from cleaning up
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_ctrl_c_just_after_the_rename_stays_a_ctrl_c(tmp_path: Path, monkeypatch) -> None:
    """The temp file is gone by then: cleaning up must not turn it into another error."""
    real_replace = os.replace

    def replace_then_interrupt(src, dst) -> None:
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {}, "epoch": 7}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 7


def test_copy_is_a_hard_link_made_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint({"model": {}, "epoch": 1}, last)
    links: list[Path] = []
    real_link = os.link

    def spying_link(src, dst) -> None:
        links.append(Path(dst))
        real_link(src, dst)

    monkeypatch.setattr(checkpoint.os, "link", spying_link)
    copy_checkpoint(last, best)
    (temp,) = links
    assert temp.parent == tmp_path and temp.name.startswith(".best.pt.")
    assert best.stat().st_ino == last.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_copy_falls_back_to_copying_without_hard_links(tmp_path: Path, monkeypatch) -> None:
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint({"model": {}, "epoch": 3}, last)

    def no_links(src, dst) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(checkpoint.os, "link", no_links)
    copy_checkpoint(last, best)
    assert best.stat().st_ino != last.stat().st_ino
    assert best.read_bytes() == last.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_a_failed_copy_leaves_no_temp_file_and_names_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pt"
    with pytest.raises(FileNotFoundError) as raised:
        copy_checkpoint(missing, tmp_path / "best.pt")
    assert raised.value.filename == str(missing)  # not the temp file's name
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    last = tmp_path / "last.pt"
    save_checkpoint({"model": {}}, last)

    def read_only(src, dst) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(checkpoint.os, "replace", read_only)
    with pytest.raises(PermissionError, match="Read-only"):
        copy_checkpoint(last, tmp_path / "best.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_maps_tensors_where_asked(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path, map_location="meta")["model"]["w"].device.type == "meta"
    assert load_checkpoint(path)["model"]["w"].device.type == "cpu"


def test_load_never_unpickles_objects(tmp_path: Path, monkeypatch) -> None:
    """Even where the environment makes torch.load unsafe by default."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(UserError, match=r"\(UnpicklingError\); it was not loaded$"):
        load_checkpoint(path)


def test_load_names_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as raised:
        load_checkpoint(path)
    assert str(raised.value) == (
        f"checkpoint {path} is corrupt or not a dlrun checkpoint (UnpicklingError); "
        "it was not loaded"
    )


@pytest.mark.parametrize("state", [{"epoch": 1}, [torch.ones(1)]])
def test_load_refuses_files_without_model_weights(tmp_path: Path, state: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"is not a dlrun checkpoint \(no model weights\)"):
        load_checkpoint(path)


def test_load_model_weights_loads_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved, fresh = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    load_model_weights(fresh, {"model": saved.state_dict()}, tmp_path / "ck.pt")
    assert torch.equal(fresh.weight, saved.weight) and torch.equal(fresh.bias, saved.bias)


def test_load_model_weights_names_a_mismatch_in_one_line(tmp_path: Path) -> None:
    state = {"model": torch.nn.Linear(4, 2).state_dict()}
    with pytest.raises(UserError) as raised:
        load_model_weights(torch.nn.Linear(3, 2), state, tmp_path / "ck.pt")
    assert str(raised.value) == (
        f"checkpoint {tmp_path / 'ck.pt'} does not fit this model "
        "(Error(s) in loading state_dict for Linear:); "
        "was it saved by a run with another model config?"
    )
