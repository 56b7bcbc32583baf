"""Streamed data through DataLoader: the same batches, runs, resumes and folds as in memory.

The streamed path must not be a second-class citizen: the epoch order comes from the
trainer's generator (so a resumed run continues exactly), DDP shards and k-fold index it
like tensors, batch augmentation still runs on the device, and a clean folder gives bit
for bit the same history streamed, cached or in memory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dlrun import runner
from dlrun.data import stream
from dlrun.data.batches import Shard, iterate
from dlrun.data.image_folder import load_image_folder
from dlrun.data.stream import StreamedSplit, loader_settings
from dlrun.errors import UserError
from tests.conftest import SHRINK, read_history, run_cli, run_in_process
from tests.owndata import truncate, write_images
from tests.test_resume import Crash, CrashAt, assert_same_run

IMAGE_RUN = [
    "data=image_folder", "data.size=12", "trainer.batch_size=8", "trainer.epochs=3",
    "regularization=augment", "regularization.augmentation.crop_padding=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 14 small images in four formats and three sizes."""
    root = tmp_path_factory.mktemp("own") / "shapes"
    return write_images(
        root, {"a": 14, "b": 14, "c": 14}, formats=("png", "jpg", "bmp", "gif"),
        sizes=((12, 12), (16, 10), (9, 14)),
    )  # fmt: skip


def batches(split: Any, shard: Shard | None = None, seed: int = 3) -> list[Any]:
    generator = torch.Generator().manual_seed(seed)
    return list(iterate(split, 5, shuffle=True, generator=generator, shard=shard))


def assert_same_batches(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y)


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_equal_in_memory_batches(folder: Path, workers: int) -> None:
    memory = load_image_folder(0, root=str(folder), size=12, stream=False, num_workers=0)
    streamed = load_image_folder(0, root=str(folder), size=12, stream=True, num_workers=workers)
    assert isinstance(streamed.train, StreamedSplit)
    assert streamed.meta["preprocess"] == memory.meta["preprocess"]
    for name in ("train", "val", "test"):
        assert_same_batches(batches(getattr(memory, name)), batches(getattr(streamed, name)))
    for rank in (0, 1):  # each DDP rank reads its own shard, the same rows as in memory
        shard = Shard(rank, 2)
        assert_same_batches(batches(memory.train, shard), batches(streamed.train, shard))


def test_the_cache_gives_the_same_batches_and_is_reused(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = load_image_folder(0, root=str(folder), size=12, stream=False, num_workers=0)
    first = load_image_folder(
        0, root=str(folder), size=12, cache=True, cache_dir=str(tmp_path), num_workers=0
    )
    assert any("into the cache" in note for note in first.meta["notes"])
    assert torch.equal(first.train.x, memory.train.x)

    def no_decoding(*args: Any) -> None:
        raise AssertionError("a cached folder was decoded again")

    monkeypatch.setattr("dlrun.data.imagefile.decode", no_decoding)
    again = load_image_folder(
        0, root=str(folder), size=12, cache=True, cache_dir=str(tmp_path), stream=True,
        num_workers=0,
    )  # fmt: skip
    assert any("read from the cache" in note for note in again.meta["notes"])
    assert_same_batches(batches(memory.train), batches(again.train))


def test_the_cache_is_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"a": 5, "b": 5})
    cache = tmp_path / "cache"

    def load() -> list[str]:
        bundle = load_image_folder(0, root=str(root), size=8, cache=True, cache_dir=str(cache))
        return bundle.meta["notes"]

    assert any("into the cache" in n for n in load())
    assert any("read from the cache" in n for n in load())
    os.utime(root / "a" / "001.png", ns=(1, 1))  # same bytes, new modification time
    assert any("into the cache" in n for n in load())
    write_images(tmp_path / "more", {"b": 1}, seed=4)
    (tmp_path / "more" / "b" / "000.png").rename(root / "b" / "new.png")
    assert any("into the cache" in n for n in load())
    assert len(list((cache / "images").glob("*.npy"))) == 1  # the stale cache is gone


def test_an_unwritable_cache_dir_is_one_clear_error(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"a": 4, "b": 4})
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"Cannot write the image cache .* data\.cache_dir"):
        load_image_folder(0, root=str(root), cache=True, cache_dir=str(tmp_path / "file"))


def test_a_file_found_broken_while_streaming_is_replaced_by_its_class_and_named(
    tmp_path: Path,
) -> None:
    root = write_images(tmp_path / "f", {"a": 8, "b": 8})
    broken = truncate(root / "b" / "005.png", 0.3)
    bundle = load_image_folder(0, root=str(root), size=8, stream=True, num_workers=0)
    assert bundle.meta["skipped"] == []  # not known before it is read
    split = next(s for s in (bundle.train, bundle.val, bundle.test) if len(s) > 1 and any(
        s.source.paths[r] == str(broken) for r in s.rows))  # fmt: skip
    for _ in range(2):  # two epochs: named once
        (batch,) = iterate(split, len(split))
    assert [s["path"] for s in bundle.meta["skipped"]] == [str(broken)]
    assert bundle.meta["skipped"][0]["found"] == "while streaming"
    (bad_row, new_row), = split._replaced.items()  # fmt: skip
    paths = split.source.paths
    assert Path(paths[bad_row]).parent.name == Path(paths[new_row]).parent.name == "b"
    where = {int(r): i for i, r in enumerate(split.rows)}
    assert torch.equal(batch.x[where[bad_row]], batch.x[where[new_row]])  # its stand-in
    assert len(batch) == len(split) and torch.equal(batch.y, split.y)


def test_a_streamed_run_equals_the_in_memory_run(folder: Path, tmp_path: Path) -> None:
    memory = run_in_process(
        tmp_path / "mem", *IMAGE_RUN, f"data.root={folder}", "data.stream=false"
    )
    streamed = run_in_process(
        tmp_path / "str", *IMAGE_RUN, f"data.root={folder}", "data.stream=true",
        "data.num_workers=1",
    )  # fmt: skip
    history = [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "mem")
    ]
    assert history == [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / "str")
    ]
    assert memory["test"] == streamed["test"]
    saved = json.loads((tmp_path / "str" / "preprocess.json").read_text())
    assert saved == json.loads((tmp_path / "mem" / "preprocess.json").read_text())


@pytest.mark.parametrize("crash", [("during", 2), ("after", 1)])
def test_resume_on_streamed_data_is_exact(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: tuple[str, int]
) -> None:
    args = [*IMAGE_RUN, f"data.root={folder}", "data.stream=true", "data.num_workers=1"]
    whole = run_in_process(tmp_path / "whole", *args)
    make_callbacks = runner.make_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(runner, "make_callbacks", lambda *a: [*make_callbacks(*a), CrashAt(*crash)])
        with pytest.raises(Crash):
            run_in_process(tmp_path / "cut", *args)
    resumed = run_in_process(tmp_path / "cut", *args, f"resume={tmp_path / 'cut'}")
    assert_same_run(tmp_path / "whole", tmp_path / "cut", whole, resumed)


def test_kfold_on_streamed_data_equals_kfold_in_memory(folder: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from dlrun.crossval import cross_validate
    from tests.conftest import compose_cfg

    results = []
    for mode in ("false", "true"):
        cfg = compose_cfg(
            "trainer.progress=none", *IMAGE_RUN, "trainer.epochs=1", f"data.root={folder}",
            f"data.stream={mode}", "data.num_workers=0", "eval.protocol=kfold", "eval.folds=2",
        )  # fmt: skip
        run_dir = tmp_path / mode
        run_dir.mkdir()
        results.append(cross_validate(cfg, run_dir, Console(quiet=True)))
    assert results[0]["cv"] == results[1]["cv"] and results[0]["test"] == results[1]["test"]


def test_skipped_files_reach_the_log_report_and_metrics(tmp_path: Path) -> None:
    root = write_images(tmp_path / "f", {"a": 8, "b": 8})
    (root / "a" / "readme.md").write_text("about")
    truncate(root / "b" / "002.png", 0.3)
    run = tmp_path / "run"
    done = run_cli(
        "data=image_folder", f"data.root={root}", "data.size=12", "data.stream=true",
        "data.num_workers=0", "trainer.epochs=1", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "readme.md: not a supported file type" in done.stdout
    assert "1 file(s) skipped or replaced while streaming" in done.stdout
    assert "002.png: unreadable image" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    report = (run / "report.md").read_text()
    log = (run / "train.log").read_text()
    assert "readme.md: not a supported file type" in log and "002.png: unreadable" in log
    assert metrics["data"]["n_skipped"] == 2
    for entry in metrics["data"]["skipped"]:
        assert Path(entry["path"]).name in report
    assert "## Data" in report and "replaced by another sample of its class" in report


def test_auto_streams_when_the_tensors_would_not_fit(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "available_memory", lambda: 10_000)
    bundle = load_image_folder(0, root=str(folder), size=12, num_workers=0)
    assert isinstance(bundle.train, StreamedSplit)
    assert any(
        "streamed through a DataLoader (data.stream=auto)" in n for n in bundle.meta["notes"]
    )
    monkeypatch.setattr(stream, "available_memory", lambda: 1 << 40)
    assert not isinstance(load_image_folder(0, root=str(folder), size=12).train, StreamedSplit)


def test_workers_persist_across_epochs_and_leave_the_global_rng_alone(folder: Path) -> None:
    bundle = load_image_folder(0, root=str(folder), size=12, stream=True, num_workers=1)
    before = torch.get_rng_state()
    batches(bundle.train)
    loader = bundle.train._loader
    assert loader.persistent_workers and loader.prefetch_factor == 2
    batches(bundle.train, seed=4)
    assert bundle.train._loader is loader  # one loader, its workers kept
    assert torch.equal(torch.get_rng_state(), before)


def test_pinned_memory_only_for_cuda(folder: Path) -> None:
    bundle = load_image_folder(0, root=str(folder), size=12, stream=True, num_workers=0)
    assert not bundle.to("cpu").train.settings.pin_memory
    assert bundle.to(torch.device("cuda")).train.settings.pin_memory  # nothing is read yet


def test_loader_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert loader_settings("auto", 2).num_workers == 4
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert loader_settings("auto", 2).num_workers == 1
    monkeypatch.setattr(multiprocessing.current_process(), "_config", {"daemon": True})
    assert loader_settings(3, 2).num_workers == 0  # a pool worker can't have children


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork workers on Linux only")
def test_a_sweep_runs_on_streamed_data(folder: Path, tmp_path: Path) -> None:
    done = run_cli(
        "-m", "data=image_folder", f"data.root={folder}", "data.size=12", "data.stream=true",
        "data.num_workers=1", "optimizer.lr=0.01,0.001", *SHRINK,
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    board = (tmp_path / "sweep" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 3 and all("completed" in row for row in board[1:])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.stream=maybe", "data.stream='maybe' is invalid: use auto, true, false"),
        ("data.num_workers=-1", "data.num_workers=-1 is invalid"),
        ("data.channels=2", "data.channels=2 is invalid: use auto, 1, 3"),
    ],
)
def test_bad_data_options_are_refused_before_anything_runs(
    tmp_path: Path, override: str, message: str
) -> None:
    done = run_cli("data=image_folder", f"data.root={tmp_path}", override, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.distributed
def test_two_processes_on_streamed_data_equal_two_in_memory(folder: Path, tmp_path: Path) -> None:
    runs = {}
    for mode in ("false", "true"):
        done = run_cli(
            *IMAGE_RUN, "trainer.epochs=2", f"data.root={folder}", f"data.stream={mode}",
            "data.num_workers=1", "trainer.devices=2", f"hydra.run.dir={tmp_path / mode}",
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs[mode] = [
            {k: v for k, v in r.items() if k != "seconds"} for r in read_history(tmp_path / mode)
        ]
    assert runs["false"] == runs["true"]


def test_streamed_targets_are_in_memory_and_subsets_share_the_source(folder: Path) -> None:
    bundle = load_image_folder(0, root=str(folder), size=12, stream=True, num_workers=0)
    pool = bundle.train.concat(bundle.val)
    assert len(pool) == len(bundle.train) + len(bundle.val)
    part = pool.subset(torch.tensor([0, 2, 4]))
    assert part.source is bundle.train.source
    assert np.array_equal(part.rows, pool.rows[[0, 2, 4]])
    assert torch.equal(part.y, pool.y[[0, 2, 4]])
    assert len(pool.head(3)) == 3 and pool.head(3).y.device.type == "cpu"
