"""Run and sweep dirs: nothing a user had is touched, refusals leave nothing, a sweep run
again resumes, and a completed run can train further."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlrun import leaderboard, sweepdir
from dlrun.rundir import read_status
from tests.conftest import SHRINK, run_cli

IRIS = ["model=mlp", "data=iris", "trainer.progress=none"]

KILL_SEED_1_AFTER_EPOCH_1 = """
import os, signal, sys
from dlrun.engine import callbacks
original = callbacks.Checkpointer.on_checkpoint
def on_checkpoint(self, trainer, state, row):
    original(self, trainer, state, row)
    if trainer.seed == 1 and state.epoch == 1:
        os.kill(os.getpid(), signal.SIGKILL)
callbacks.Checkpointer.on_checkpoint = on_checkpoint
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
main()
"""


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (hidden ones included)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _untouched(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification times: a file rewritten with the same bytes shows too."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


def _dlrun_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dlrun")]


# ------------------------------------------------------------------- single runs
def test_a_folder_with_the_users_files_is_refused_and_left_alone(workdir: Path) -> None:
    target = workdir / "mine"
    target.mkdir()
    (target / "report.md").write_text("my notes")
    result = run_cli(f"hydra.run.dir={target}", *SHRINK, cwd=workdir)
    assert result.returncode == 2
    assert _dlrun_lines(result.stderr) == [
        f"dlrun: error: hydra.run.dir={target} is not empty (report.md); "
        "choose a new or empty folder (nothing was written)"
    ]
    assert _files(target) == {"report.md": b"my notes"}


def test_a_refused_run_keeps_the_users_empty_folder_and_removes_a_new_one(
    workdir: Path,
) -> None:
    empty = workdir / "empty"
    empty.mkdir()
    refused = run_cli("model=lenet", "data=iris", f"hydra.run.dir={empty}", cwd=workdir)
    assert refused.returncode == 2 and "cannot take data=iris" in refused.stderr
    assert empty.is_dir() and list(empty.iterdir()) == []  # used, emptied, not deleted
    new = workdir / "a" / "b"
    refused = run_cli("model=lenet", "data=iris", f"hydra.run.dir={new}", cwd=workdir)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["empty"]  # a/ and a/b/ are gone


def test_a_missing_dataset_leaves_no_run_dir(workdir: Path) -> None:
    result = run_cli("data=csv", "data.path=missing.csv", "data.target=y", "model=mlp", cwd=workdir)
    assert result.returncode == 2
    assert _dlrun_lines(result.stderr) == [
        "dlrun: error: CSV file not found: missing.csv (set data.path to an existing file)."
    ]
    assert not (workdir / "outputs").exists()


# ------------------------------------------------------------------ sweeps again
def test_a_sweep_run_again_in_its_dir_skips_resumes_and_retries(workdir: Path) -> None:
    # the same overrides in both sweeps (run_cli adds NO_PLOTS unless eval.plots is given)
    args = [*IRIS, "trainer.epochs=2", "hydra.sweep.dir=sw", "eval.plots=false"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SEED_1_AFTER_EPOCH_1, "-m", *args, "seed=0,1"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9  # the whole sweep died with job 1 after its epoch 1
    sweep = workdir / "sw"
    done, interrupted, new = (sweep / f"{n}_mlp_iris" for n in range(3))
    finished = _untouched(done)
    assert read_status(interrupted)["status"] == "running"  # as kill -9 left it

    again = run_cli("-m", *args, "seed=0,1,2", cwd=workdir)  # one more seed at the end
    assert again.returncode == 0, again.stderr
    assert (
        "sweep resumed in sw: 1 completed job skipped, 1 resumed from its last.pt, 1 new"
        in again.stdout
    )
    assert "0_mlp_iris: completed earlier, skipped (best val_loss" in again.stdout
    assert f"resuming {interrupted.resolve()} after epoch 1" in again.stdout
    assert _untouched(done) == finished  # not one file of the finished job was written
    assert len((interrupted / "history.csv").read_text().splitlines()) == 3
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert sorted((r["job"], r["status"]) for r in rows) == [
        ("0_mlp_iris", "completed"), ("1_mlp_iris", "completed"), ("2_mlp_iris", "completed"),
    ]  # fmt: skip

    status = read_status(new)
    (new / "status.json").write_text(json.dumps({**status, "status": "failed", "reason": "boom"}))
    third = run_cli("-m", *args, "seed=0,1,2", cwd=workdir)
    assert third.returncode == 0, third.stderr
    assert "2 completed jobs skipped, 1 re-run (earlier files kept in attempts/)" in third.stdout
    earlier = new / "attempts" / "1"
    assert read_status(earlier)["reason"] == "boom"
    assert (earlier / ".hydra" / "overrides.yaml").is_file() and (earlier / "report.md").is_file()
    assert read_status(new)["status"] == "completed" and (new / "metrics.json").is_file()

    finished = _untouched(sweep)
    other = run_cli("-m", *args, "seed=0,5", cwd=workdir)  # job 1 would be another job
    assert other.returncode == 2
    (line,) = _dlrun_lines(other.stderr)
    assert "1_mlp_iris holds a job with other overrides (only there: seed=1; " in line
    assert _untouched(sweep) == finished


def test_a_sweep_refused_for_every_job_leaves_nothing(workdir: Path) -> None:
    result = run_cli("-m", "model=lenet", "data=iris", "seed=0,1", cwd=workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert _dlrun_lines(result.stderr)[-1] == (
        "dlrun: error: model=lenet cannot take data=iris: it accepts image data, and iris "
        "is tabular data (every job was refused; the sweep left nothing)"
    )
    assert not (workdir / "outputs").exists()


def test_a_sweep_dir_with_other_files_is_refused(workdir: Path) -> None:
    (workdir / "notes").mkdir()
    (workdir / "notes" / "todo.txt").write_text("mine")
    result = run_cli("-m", *IRIS, "seed=0,1", "hydra.sweep.dir=notes", cwd=workdir)
    assert result.returncode == 2
    assert _dlrun_lines(result.stderr) == [
        "dlrun: error: hydra.sweep.dir=notes holds files that are not a dlrun sweep "
        "(todo.txt); choose a new or empty folder"
    ]
    assert _files(workdir / "notes") == {"todo.txt": b"mine"}


def _job_dir(root: Path, overrides: list[str], status: dict | None) -> Path:
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is not None:
        (root / "status.json").write_text(json.dumps(status))
    return root


def test_job_dir_plans(tmp_path: Path) -> None:
    jobs = ["seed=0"]
    assert sweepdir.judge(tmp_path / "none", jobs).kind == "new"
    done = _job_dir(tmp_path / "done", jobs, {"status": "completed"})
    assert sweepdir.judge(done, jobs).kind == "skip"
    with pytest.raises(sweepdir.JobDirRefused, match="other overrides"):
        sweepdir.judge(done, ["seed=1"])
    alive = _job_dir(
        tmp_path / "alive", jobs, {"status": "running", "pid": os.getpid(), **_here_now()}
    )
    with pytest.raises(sweepdir.JobDirRefused, match="still running"):
        sweepdir.judge(alive, jobs)
    no_checkpoint = _job_dir(tmp_path / "early", jobs, {"status": "interrupted"})
    assert sweepdir.judge(no_checkpoint, jobs).kind == "retry"
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "x").write_text("")
    with pytest.raises(sweepdir.JobDirRefused, match="not a dlrun job"):
        sweepdir.judge(tmp_path / "stranger", jobs)


def _here_now() -> dict[str, str]:
    from dlrun.rundir import process_identity

    identity = process_identity()
    return {"hostname": identity["hostname"], "started_at": identity["started_at"]}


def test_the_leaderboard_reports_a_killed_job_as_interrupted(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job = _job_dir(
        tmp_path / "0_mlp_iris", ["seed=0"], {"status": "running", "pid": gone.pid, **_here_now()}
    )
    row = leaderboard.read_job(job)
    assert row is not None and row.status == "interrupted"
    assert f"pid {gone.pid}" in row.reason and "gone" in row.reason


# ------------------------------------------------------------ more epochs later
def test_a_completed_run_trains_further_and_keeps_its_first_results(workdir: Path) -> None:
    run_dir = workdir / "run"
    first = run_cli(*IRIS, "trainer.epochs=2", f"hydra.run.dir={run_dir}", cwd=workdir)
    assert first.returncode == 0, first.stderr
    results = _untouched(run_dir)

    same = run_cli(f"resume={run_dir}", cwd=workdir)
    assert same.returncode == 2
    assert _dlrun_lines(same.stderr) == [
        f"dlrun: error: resume={run_dir}: that run already completed (2 of 2 epochs "
        "trained); to train it further, give more epochs, e.g. trainer.epochs=4"
    ]
    refused = run_cli(f"resume={run_dir}", "trainer.epochs=4", "model=lenet", cwd=workdir)
    assert refused.returncode == 2 and "cannot take data=iris" in refused.stderr
    assert _untouched(run_dir) == results  # the refused attempt left the run as it was

    more = run_cli(f"resume={run_dir}", "trainer.epochs=4", cwd=workdir)
    assert more.returncode == 0, more.stderr
    assert "its results so far are kept in previous/epoch_2/" in more.stdout
    previous = run_dir / "previous" / "epoch_2"
    assert (previous / "metrics.json").read_bytes() == results["metrics.json"][0]
    assert (previous / "report.md").read_bytes() == results["report.md"][0]
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["epochs"] == 4
    assert "epochs=4" in (run_dir / "report.md").read_text()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 5
    assert read_status(run_dir)["status"] == "completed" and read_status(run_dir)["epoch"] == 4


def test_the_heartbeat_records_only_checkpointed_epochs(tmp_path: Path) -> None:
    """Checkpointer, then StatusHeartbeat, in the checkpoint phase: status.json's epoch
    is always one that last.pt holds (early stopping's place in the list no longer
    matters: every on_epoch_end runs before any on_checkpoint)."""
    from rich.console import Console

    from dlrun.engine.callbacks import Checkpointer, StatusHeartbeat
    from dlrun.runner import make_callbacks
    from tests.conftest import compose_cfg

    cfg = compose_cfg("regularization=early_stopping")
    callbacks = make_callbacks(cfg, tmp_path, Console(quiet=True), "val_loss", main=True)
    kinds = [type(cb) for cb in callbacks]
    assert kinds.index(Checkpointer) < kinds.index(StatusHeartbeat)
    assert "on_checkpoint" in vars(StatusHeartbeat) and "on_epoch_end" not in vars(StatusHeartbeat)


def test_an_early_stop_survives_a_resume_and_more_epochs_reopen_it() -> None:
    from dlrun.engine.callbacks import EarlyStopping
    from dlrun.engine.resume import resume_early_stopping
    from dlrun.engine.trainer import FitState
    from dlrun.monitor import Monitor

    reason = "early stopping: val_loss did not improve for 3 epochs"

    def stopped_state() -> FitState:  # as last.pt holds it
        return FitState(
            epoch=7, best_value=0.25, best_epoch=4, should_stop=True, stop_reason=reason
        )

    state = stopped_state()
    assert resume_early_stopping([EarlyStopping(None, patience=3)], state, continuing=False) == ""
    assert state.should_stop and state.stop_reason == reason

    follower, state = EarlyStopping(None, patience=3), stopped_state()
    note = resume_early_stopping([follower], state, continuing=True)
    assert not state.should_stop and state.stop_reason == "" and follower.since == 7
    assert note == (
        "early stopping had stopped this run after epoch 7; it trains on with a fresh "
        "patience of 3 epochs (best so far 0.25)"
    )
    own = EarlyStopping(Monitor("val_loss"), patience=3)
    own.load_state_dict({"best": {"val_loss": 0.25}, "wait": 3})
    resume_early_stopping([own], stopped_state(), continuing=True)
    assert own.wait == 0 and own.best == {"val_loss": 0.25}
    running = FitState(epoch=2)
    assert resume_early_stopping([EarlyStopping(None, patience=3)], running, True) == ""


def test_a_restarted_follower_counts_patience_from_the_resumed_epoch() -> None:
    from types import SimpleNamespace

    from dlrun.engine.callbacks import EarlyStopping
    from dlrun.engine.trainer import FitState

    stopper = EarlyStopping(None, patience=2)
    stopper.restart(7)
    trainer = SimpleNamespace(monitor=SimpleNamespace(name="val_loss"))
    state = FitState(epoch=8, best_epoch=4)
    stopper.on_epoch_end(trainer, state, {})  # type: ignore[arg-type]
    assert not state.should_stop and stopper.wait == 1
    state.epoch = 9
    stopper.on_epoch_end(trainer, state, {})  # type: ignore[arg-type]
    assert state.should_stop and stopper.wait == 2
    assert stopper.state_dict() == {"since": 7}


def test_more_epochs_lengthen_a_one_cycle_schedule_on_resume() -> None:
    import torch

    from dlrun.engine.resume import schedule_length_kept

    def one_cycle(total: int) -> torch.optim.lr_scheduler.OneCycleLR:
        opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)

    finished = one_cycle(8)
    for _ in range(8):
        finished.optimizer.step()
        finished.step()
    longer = one_cycle(16)
    with schedule_length_kept(longer):
        longer.load_state_dict(finished.state_dict())
    assert longer.total_steps == 16 and longer.last_epoch == 8
    longer.optimizer.step()
    longer.step()  # the 9th step: past the old length, inside the new one
    assert longer.get_last_lr()[0] > finished.get_last_lr()[0]


def test_run_files_are_read_leniently_in_one_place(tmp_path: Path) -> None:
    """A half-written, foreign or missing metrics.json reads as nothing, never a traceback:
    the leaderboard, compare's neighbours, the trackers and the server share this reader."""
    from dlrun.rundir import read_json_dict, read_json_object

    cases = {"half": '{"train": {"epochs', "list": "[1, 2]", "ok": '{"train": {"epochs": 3}}'}
    for name, text in cases.items():
        (tmp_path / f"{name}.json").write_text(text)
    assert read_json_dict(tmp_path / "half.json") == {} == read_json_dict(tmp_path / "list.json")
    assert read_json_dict(tmp_path / "missing.json") == {}
    assert read_json_object(tmp_path / "list.json") is None
    assert read_json_dict(tmp_path / "ok.json") == {"train": {"epochs": 3}}
    (tmp_path / "folder.json").mkdir()
    assert read_json_dict(tmp_path / "folder.json") == {}
