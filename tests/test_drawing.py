"""Pictures drawn on two cores (dlrun.evaluation.drawing): every job runs exactly once,
in two processes where fork is possible, and a failure anywhere fails the caller."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from dlrun.evaluation import drawing

needs_fork = pytest.mark.skipif(not drawing.can_fork(), reason="needs Linux and 2+ cores")


def _writer(path: Path):
    def job() -> None:
        path.write_text(str(os.getpid()))

    return job


def _failing(message: str):
    def job() -> None:
        raise ValueError(message)

    return job


def test_every_job_runs_once_and_the_shares_are_balanced_by_cost(tmp_path: Path) -> None:
    costs = [4.0, 3.0, 1.0, 1.0, 1.0]
    paths = [tmp_path / f"{i}.txt" for i in range(len(costs))]
    drawing.draw([(c, _writer(p)) for c, p in zip(costs, paths, strict=True)])
    pids = [int(p.read_text()) for p in paths]
    if drawing.can_fork():
        # longest first to the lighter side: here 4+1 and 3+1+1
        assert pids[0] == os.getpid() and pids[1] != os.getpid()
        assert pids[2] == pids[4] == pids[1] and pids[3] == pids[0]
    else:
        assert set(pids) == {os.getpid()}


@needs_fork
def test_a_failure_in_the_child_fails_the_caller_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ValueError: no such colour map"):
        drawing.draw([(1.0, _writer(tmp_path / "a.txt")), (1.0, _failing("no such colour map"))])
    assert (tmp_path / "a.txt").read_text() == str(os.getpid())


@needs_fork
def test_a_failure_here_is_raised_as_itself_and_the_child_is_reaped(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="here"):
        drawing.draw([(2.0, _failing("here")), (1.0, _writer(tmp_path / "b.txt"))])
    assert (tmp_path / "b.txt").is_file()  # the child finished its share
    # and was waited for: no child of ours has ended unreaped (a zombie); no child at all
    # raises ChildProcessError
    with contextlib.suppress(ChildProcessError):
        assert os.waitpid(-1, os.WNOHANG) == (0, 0)


@needs_fork
def test_the_child_leaves_without_the_parents_exit_handlers(tmp_path: Path) -> None:
    """A job's process leaves with os._exit: the run's own handlers (status.json on
    SIGTERM, atexit, buffered output) stay the parent's."""
    seen = tmp_path / "handler.txt"
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.write_text("parent's handler"))

    def terminate_self() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        with pytest.raises(RuntimeError, match="exit code -15"):
            drawing.draw([(1.0, _writer(tmp_path / "c.txt")), (1.0, terminate_self)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not seen.exists()


def test_without_fork_everything_runs_here(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(drawing, "can_fork", lambda: False)
    paths = [tmp_path / f"{i}.txt" for i in range(3)]
    assert drawing.start([_writer(paths[0])]) is None
    drawing.draw([(1.0, _writer(p)) for p in paths[1:]])
    assert {int(p.read_text()) for p in paths} == {os.getpid()}


@needs_fork
def test_torch_runs_on_the_cores_the_drawing_children_leave(monkeypatch) -> None:
    """One core per child; the user's thread count where cores remain, and back after."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    try:
        torch.set_num_threads(3)
        first = drawing.start([lambda: None])
        assert torch.get_num_threads() == 3  # 3 free cores: the 3 threads asked for
        second = drawing.start([lambda: None])
        assert torch.get_num_threads() == 2
        first.wait()
        assert torch.get_num_threads() == 3
        second.wait()
        assert torch.get_num_threads() == 3
        torch.set_num_threads(4)
        pending = drawing.start([lambda: None])
        assert torch.get_num_threads() == 3
        pending.wait()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
