"""When the machine says no: a full disk, a read-only folder, kill -9, Ctrl-C at any moment.
Each ends with one line that names the cause and what to do, and a status.json that
tells the truth (including whether the run's process is still alive)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dlrun import rundir
from dlrun.engine.callbacks import StatusHeartbeat
from dlrun.engine.checkpoint import load_checkpoint
from tests.conftest import run_cli

IRIS = ["model=mlp", "data=iris", "trainer.progress=none"]
LONG = ["model=mlp", "data=digits_flat", "trainer.epochs=100000", "trainer.progress=none"]

# torch.save gets a file whose writes fail once the third checkpoint is being written.
FULL_DISK_AT_THIRD_CHECKPOINT = """
import errno, sys, torch
real_save, saves = torch.save, []
class Full:
    def __init__(self, fh):
        self.fh, self.written = fh, 0
    def write(self, data):
        self.written += len(data)
        if self.written > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)
    def flush(self):
        self.fh.flush()
def save(obj, f, *args, **kwargs):
    if "reference" in str(f):  # the run's reference.pt (dlrun.data.contract), not a checkpoint
        return real_save(obj, f, *args, **kwargs)
    saves.append(f)
    return real_save(obj, Full(f) if len(saves) == 3 else f, *args, **kwargs)
torch.save = save
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""


def _dlrun_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dlrun")]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _start(*args: str, cwd: Path, program: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *(program or ["-m", "dlrun.cli"]), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# ----------------------------------------------------------------- a full disk
def test_a_full_disk_while_checkpointing_is_one_line_and_resumable(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    failed = subprocess.run(
        [sys.executable, "-c", FULL_DISK_AT_THIRD_CHECKPOINT, *IRIS, "trainer.epochs=4",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode == 1
    line = (
        "no space left on device writing checkpoints/last.pt; "
        f"free space and resume with dlrun resume={run_dir}"
    )
    assert _dlrun_lines(failed.stderr) == [f"dlrun: error: {line}"]
    assert "Traceback" not in failed.stderr
    status = rundir.read_status(run_dir)
    assert status is not None and (status["status"], status["reason"]) == ("failed", line)
    assert status["epoch"] == 2 == load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] != []  # no temp files left
    assert all(not p.name.startswith(".") for p in (run_dir / "checkpoints").iterdir())

    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "after epoch 2" in resumed.stdout
    assert len((run_dir / "history.csv").read_text().splitlines()) == 5


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems (needs root with CAP_SYS_ADMIN, else skip)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_really_full_disk_says_so_and_keeps_the_last_good_epoch(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    disk = tmpfs("8m")
    run_dir = disk / "run"
    proc = _start(*LONG, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        _wait_for(run_dir / "checkpoints" / "last.pt", proc)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with (disk / "filler").open("wb") as fh:  # leave room for small files, not last.pt
            fh.write(b"\0" * max(0, free - 64 * 1024))
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert _dlrun_lines(err) == [
        "dlrun: error: no space left on device writing checkpoints/last.pt; "
        f"free space and resume with dlrun resume={run_dir}"
    ]
    status = rundir.read_status(run_dir)
    assert status is not None and status["status"] == "failed"
    assert status["epoch"] == load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]


# ------------------------------------------------------------- read-only folders
@pytest.fixture
def lockable(tmp_path: Path, tmpfs: Callable[[str], Path]) -> Iterator[tuple[Path, Callable]]:
    """A writable folder and a function that makes it read-only: ``chmod`` for a normal
    user; for root, whom permissions do not stop, a tmpfs remounted read-only."""
    if os.geteuid() != 0:
        folder = tmp_path / "lockable"
        folder.mkdir()
        yield folder, lambda: [p.chmod(0o555) for p in [folder, *folder.rglob("*")] if p.is_dir()]
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        return
    folder = tmpfs("64m")
    yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_a_folder_turned_read_only_mid_run_is_one_line(
    lockable: tuple[Path, Callable], tmp_path: Path
) -> None:
    folder, lock = lockable
    run_dir = folder / "run"
    proc = _start(*LONG, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        _wait_for(run_dir / "checkpoints" / "last.pt", proc)
        lock()
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err
    (line,) = _dlrun_lines(err)
    cause = "read-only file system" if os.geteuid() == 0 else "permission denied"
    assert line.startswith(f"dlrun: error: {cause} writing ")
    assert line.endswith(f"; make {run_dir} writable and resume with dlrun resume={run_dir}")
    # status.json could not be written either; its dead process says what happened
    assert rundir.run_status(run_dir)["status"] in ("interrupted", "failed")


def test_an_unwritable_output_folder_is_one_line(lockable: tuple[Path, Callable]) -> None:
    folder, lock = lockable
    lock()
    cause = "read-only file system" if os.geteuid() == 0 else "permission denied"
    for args in (
        [*IRIS, f"paths.outputs={folder}/out"],
        [*IRIS, f"hydra.run.dir={folder}/run"],
        ["-m", *IRIS, "seed=0,1", f"hydra.sweep.dir={folder}/sweep"],
    ):
        result = run_cli(*args, cwd=folder.parent)
        assert result.returncode == 1, args
        (line,) = _dlrun_lines(result.stderr)
        assert line.startswith(f"dlrun: error: {cause} writing {folder}/"), line
        assert line.endswith("choose a writable folder (paths.outputs=<dir>, or hydra.run.dir= "
                             "/ hydra.sweep.dir=)")  # fmt: skip


def test_predicting_from_a_read_only_run_dir_is_one_line(
    lockable: tuple[Path, Callable], tmp_path: Path
) -> None:
    import numpy as np

    from tests.conftest import SHRINK, run_tool, train_run

    folder, lock = lockable
    train_run(folder / "run", *IRIS, *SHRINK)
    np.save(tmp_path / "x.npy", np.array([[5.1, 3.5, 1.4, 0.2]]))
    lock()  # a run dir on a read-only share: its predict/ folder can't be made
    args = (f"run={folder / 'run'}", f"input={tmp_path / 'x.npy'}")
    result = run_tool("dlrun.predict_cli", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    cause = "read-only file system" if os.geteuid() == 0 else "permission denied"
    assert line.startswith(f"dlrun-predict: error: {cause} writing {folder}/run/predict")
    assert line.endswith("; choose a writable folder (out=<dir>)")
    assert run_tool("dlrun.predict_cli", *args, f"out={tmp_path / 'p'}").returncode == 0


READ_ONLY_AT_SECOND_HISTORY = """
import errno, pathlib, sys
real_open, writes = pathlib.Path.open, []
def open_(self, mode="r", *args, **kwargs):
    if self.name == "history.csv.tmp":
        writes.append(self)
        if len(writes) == 2:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
    return real_open(self, mode, *args, **kwargs)
pathlib.Path.open = open_
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""


def test_a_read_only_folder_while_writing_history_is_one_line(tmp_path: Path) -> None:
    """The same story without root or mounts: the second history.csv write is refused."""
    run_dir = tmp_path / "run"
    failed = subprocess.run(
        [sys.executable, "-c", READ_ONLY_AT_SECOND_HISTORY, *IRIS, "trainer.epochs=3",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert _dlrun_lines(failed.stderr) == [
        f"dlrun: error: read-only file system writing history.csv; make {run_dir} writable "
        f"and resume with dlrun resume={run_dir}"
    ]
    status = rundir.read_status(run_dir)
    assert status is not None and (status["status"], status["epoch"]) == ("failed", 1)


def test_claiming_a_run_dir_in_an_unwritable_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where neither chmod nor mount can make a folder read-only (root in CI)."""

    def refuse(path: str, *args: object) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(SystemExit) as stop:
        rundir.claim_unique_dir(str(tmp_path / "outputs" / "runs" / "x"))
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        f"dlrun: error: permission denied writing {tmp_path}/outputs; choose a writable "
        "folder (paths.outputs=<dir>, or hydra.run.dir= / hydra.sweep.dir=)\n"
    )


# --------------------------------------------------- alive, dead, heartbeat
def test_a_run_says_who_runs_it_and_when_it_last_beat(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli(*IRIS, "trainer.epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    status = rundir.read_status(run_dir)
    assert status is not None
    assert list(status) == [
        "status", "reason", "epoch", "pid", "hostname", "started_at", "heartbeat",
        "wall_seconds",
    ]  # fmt: skip
    assert status["hostname"] == socket.gethostname() and isinstance(status["pid"], int)
    assert status["started_at"] <= status["heartbeat"]


def test_the_heartbeat_beats_every_epoch_and_between_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    identity = {"pid": 1, "hostname": "h", "started_at": "2026-01-01T00:00:00+00:00"}
    beat = StatusHeartbeat(tmp_path, identity, every_s=30)
    state = type("State", (), {"epoch": 0})()
    beat.on_fit_start(None, state)  # type: ignore[arg-type]
    first = rundir.read_status(tmp_path)
    assert first is not None and first["status"] == "running" and first["pid"] == 1
    (tmp_path / "status.json").unlink()
    clock[0] += 29
    beat.on_batch_end(None, state, 0, None)  # type: ignore[arg-type]
    assert not (tmp_path / "status.json").exists()  # too soon: no write
    clock[0] += 2
    beat.on_batch_end(None, state, 1, None)  # type: ignore[arg-type]
    assert rundir.read_status(tmp_path)["epoch"] == 0
    state.epoch = 1
    beat.on_checkpoint(None, state, {})  # type: ignore[arg-type]
    assert rundir.read_status(tmp_path)["epoch"] == 1


def _status(run_dir: Path, **fields: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"status": "running", **fields}))
    return run_dir


def test_a_dead_process_is_told_from_a_live_one(tmp_path: Path) -> None:
    here, now = socket.gethostname(), rundir.now_iso()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = _status(tmp_path / "a", pid=os.getpid(), hostname=here, started_at=now)
    dead = _status(tmp_path / "b", pid=gone.pid, hostname=here, started_at=now)
    reused = _status(  # our pid, but recorded before this process existed: reused
        tmp_path / "c", pid=os.getpid(), hostname=here, started_at="2000-01-01T00:00:00+00:00"
    )
    far = _status(tmp_path / "d", pid=1, hostname="elsewhere", heartbeat=now)
    stale = _status(
        tmp_path / "e", pid=1, hostname="elsewhere", heartbeat="2000-01-01T00:00:00+00:00"
    )
    assert [rundir.run_is_alive(d) for d in (alive, dead, reused, far, stale)] == [
        True, False, False, True, False,
    ]  # fmt: skip
    assert rundir.run_status(alive)["status"] == "running"
    assert rundir.run_status(dead)["status"] == "interrupted"
    assert f"pid {gone.pid} on {here}" in rundir.run_status(dead)["reason"]


def test_resume_refuses_a_run_that_is_still_alive(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(*LONG, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        _wait_for(run_dir / "checkpoints" / "last.pt", proc)
        second = run_cli(f"resume={run_dir}", cwd=tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert second.returncode == 2
    (line,) = _dlrun_lines(second.stderr)
    assert line.startswith(
        f"dlrun: error: resume={run_dir}: that run is still running (pid {proc.pid} on "
    )
    assert rundir.read_status(run_dir)["status"] == "interrupted"  # by the SIGTERM


# ------------------------------------------------------------------- Ctrl-C
# Blocks in the import of one module (a moment of start-up, training or evaluation) after
# leaving a marker file, so the test can send a real SIGINT exactly then.
STOP_AT_IMPORT = """
import importlib.abc, os, sys, time
MODULE, MARK = os.environ["STOP_AT"], os.environ["MARK"]
class StopHere(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            open(MARK, "w").close()
            time.sleep(120)
        return None
sys.meta_path.insert(0, StopHere())
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""


def _sigint_as_in_a_terminal() -> None:
    """Ctrl-C's default disposition in the child, as in a terminal: a shell starts
    background jobs (``make test &``) with SIGINT ignored, every child inherits that, and
    Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Imported on the main thread once training is over (the evaluation's own imports are
# done in a thread while it trains: dlrun.evaluation.prefetch).
AFTER_TRAINING = "dlrun.diagnostics.plots"
INT, TERM = signal.SIGINT, signal.SIGTERM


@pytest.mark.parametrize(
    ("moment", "stop_at", "sent", "says"),
    [
        ("importing Hydra", "hydra", INT, "interrupted (Ctrl-C) while starting; nothing"),
        ("importing torch", "torch", INT, "interrupted (Ctrl-C) while starting; nothing"),
        ("training", None, INT, "stopped by SIGINT during epoch"),
        ("evaluating", AFTER_TRAINING, INT, "interrupted (Ctrl-C) after epoch 1; resume"),
        ("importing torch", "torch", TERM, "interrupted (SIGTERM) while starting; nothing"),
        ("evaluating", AFTER_TRAINING, TERM, "interrupted (SIGTERM) after epoch 1; resume"),
    ],
)
def test_ctrl_c_or_sigterm_at_any_moment_is_one_line_and_exit_130(
    moment: str, stop_at: str | None, sent: signal.Signals, says: str, tmp_path: Path
) -> None:
    run_dir, mark = tmp_path / "run", tmp_path / "mark"
    epochs = "trainer.epochs=1" if stop_at else "trainer.epochs=100000"
    args = ["model=mlp", "data=digits_flat", "trainer.progress=none", epochs]
    program = ["-c", STOP_AT_IMPORT] if stop_at else None
    env = {**os.environ, "STOP_AT": stop_at or "-", "MARK": str(mark)}
    proc = subprocess.Popen(
        [sys.executable, *(program or ["-m", "dlrun.cli"]), *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_sigint_as_in_a_terminal,
    )  # fmt: skip
    try:
        _wait_for(mark if stop_at else run_dir / "checkpoints" / "last.pt", proc)
        proc.send_signal(sent)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err + out and "HYDRA_FULL_ERROR" not in err
    (line,) = [text for text in err.splitlines() if text.strip()]  # nothing else
    assert line.startswith("dlrun: ") and says in line, line
    if stop_at == "hydra":
        assert not run_dir.exists()  # Hydra had not even made the run dir
    else:
        assert rundir.read_status(run_dir)["status"] == "interrupted"
