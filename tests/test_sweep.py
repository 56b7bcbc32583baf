"""Multirun sweeps end with a leaderboard; failures are rows, not crashes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli


def _sweep_dir(workdir: Path) -> Path:
    (sweep,) = (workdir / "outputs" / "multirun").iterdir()
    return sweep


def test_sweep_ranks_jobs_and_reports_failures(workdir: Path) -> None:
    result = run_cli(
        "-m",
        "model=mlp,lenet",
        "data=iris",
        "seed=0,1",
        "trainer.epochs=2",
        "trainer.progress=none",
        cwd=workdir,
    )
    assert result.returncode != 0  # two jobs failed: lenet can't take tabular data
    assert "2 of 4 jobs failed" in result.stderr
    assert "Traceback" not in result.stderr
    sweep = _sweep_dir(workdir)
    with (sweep / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"]
    assert {"model", "seed", "test_accuracy", "best_val_loss", "params"} <= set(rows[0])
    assert "cannot take data=iris" in rows[-1]["reason"]
    best = [float(r["best_val_loss"]) for r in rows[:2]]  # trainer.monitor=auto: val_loss
    assert best == sorted(best)  # lower first
    md = (sweep / "leaderboard.md").read_text()
    assert "Mean ± std over seeds" in md and "| mlp | 2 |" in md


def test_leaderboard_rebuilds_an_interrupted_sweep(workdir: Path) -> None:
    result = run_cli("-m", "model=mlp", "data=iris,wine", "trainer.epochs=1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    sweep = _sweep_dir(workdir)
    (sweep / "leaderboard.csv").unlink()
    job = next(p for p in sweep.iterdir() if p.name.startswith("1_"))
    (job / "metrics.json").unlink()
    (job / "status.json").write_text('{"status": "running", "reason": ""}')
    rebuilt = subprocess.run(
        [sys.executable, "-m", "dlrun.leaderboard", str(sweep)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert sorted(r["status"] for r in rows) == ["completed", "running"]


def test_a_bad_value_for_every_job_stops_the_sweep_before_it_starts(workdir: Path) -> None:
    result = run_cli("-m", "trainer.epochs=0", "seed=0,1", cwd=workdir)
    assert result.returncode != 0
    assert "trainer.epochs" in result.stderr and "not started" in result.stderr
    assert not (workdir / "outputs").exists()


def test_a_monitor_no_job_records_refuses_every_job_and_leaves_nothing(workdir: Path) -> None:
    """The monitor needs the task (known once a job's data is chosen): each job refuses."""
    result = run_cli("-m", "trainer.monitor=val_f1", "seed=0,1", cwd=workdir)
    assert result.returncode != 0
    assert "trainer.monitor=val_f1" in result.stderr and "every job was refused" in result.stderr
    assert not (workdir / "outputs").exists()


def test_joblib_jobs_share_the_cores(workdir: Path) -> None:
    import json
    import os

    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=mlp",
        "data=iris",
        "seed=0,1",
        "trainer.epochs=1",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    sweep = _sweep_dir(workdir)
    expected = max(1, (os.cpu_count() or 1) // 2)
    for job in ("0_mlp_iris", "1_mlp_iris"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["train"]["threads"] == expected
    assert (sweep / "leaderboard.csv").is_file()
